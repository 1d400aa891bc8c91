"""Linear-transform forward processes u_k = T(k) u_0 (+ noise) (docs/maths.md).

``FUNCTION_MAP`` (the seed's ``Function_map``) maps the config's ``model.forward`` to a
factory ``factory(shape, K, seed, **options) -> map``. Every map has T(0) = I (level 0
is the data), ``apply(u, k)`` for u (B, C, H, W) and per-sample levels k (B,), and
``describe()`` (what the checkpoint records to rebuild it: name, K, shape, seed).

Most maps are one short function of the level,

    fn(k, K, D, generator, previous) -> a float s (T(k) = s I) or a (D, D) matrix,

wrapped by ``per_level``: the factory calls fn for k = 1..K in order, with one
torch.Generator seeded from ``seed`` (so T is the same on every run and on resume) and
``previous`` = T(k-1) (for products). Matrices act on the flattened field (D = C H W),
are built once, in float64, and applied level by level to all samples at that level (no
per-sample loops). Adding a map is one function and one registry line:

    def cubic(k, K, D, generator, previous):
        return (1 - k / K) ** 3                         # T(k) = (1 - k/K)^3 I
    FUNCTION_MAP["cubic"] = per_level(cubic, invertible="below_K")

Why the naive random product blows up: T(k) = R_k ... R_1 with R_i i.i.d. 0/1 matrices
has E[R] = J / 2 (J = all ones), whose top eigenvalue is D / 2; the product's norm grows
like (D / 2)^k (for D = 784, float32 overflows after ~13 levels and the loss is NaN).
Gaussian N(0, 1) factors grow like sqrt(D)^k for the same reason. ``random_product``
therefore multiplies Haar-random *orthogonal* factors: every T(k) is orthogonal, its
norm is exactly 1 at every level and T(k)^-1 = T(k)^T. (``binary_product_norms``
measures the naive growth; tests/test_linear_maps.py checks it.)
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import torch

from .heat import HeatDissipation, _levels

# Largest (K + 1) * D * D matrix stack a map may build (float32 entries, ~1 GiB).
MAX_MATRIX_ENTRIES = 2 ** 28


class ScalarLevelMap:
    """T(k) = s_k I."""

    def __init__(self, name, shape, K, seed, scales: torch.Tensor, invertible: torch.Tensor):
        self.name, self.shape, self.K, self.seed = name, tuple(shape), int(K), int(seed)
        self.scales = scales.double()                # (K + 1,)
        self._invertible = invertible

    def describe(self) -> dict:
        return {"name": self.name, "K": self.K, "shape": list(self.shape), "seed": self.seed}

    def apply(self, u: torch.Tensor, k) -> torch.Tensor:
        k = _levels(k, u.shape[0], self.K, u.device)
        return u * self.scales.to(u)[k].view(-1, *([1] * (u.ndim - 1)))

    def inverse(self, u: torch.Tensor, k) -> torch.Tensor:
        k = _levels(k, u.shape[0], self.K, u.device)
        if not bool(self._invertible.to(k.device)[k].all()):
            raise ValueError(f"{self.name}: T(k) is not invertible at some requested level")
        return u / self.scales.to(u)[k].view(-1, *([1] * (u.ndim - 1)))

    def invertible_levels(self) -> torch.Tensor:
        return self._invertible.clone()


class MatrixLevelMap:
    """T(k) a (D, D) matrix acting on the flattened field, D = C H W."""

    def __init__(self, name, shape, K, seed, matrices: torch.Tensor, invertible: torch.Tensor,
                 orthogonal: bool = False):
        self.name, self.shape, self.K, self.seed = name, tuple(shape), int(K), int(seed)
        self.matrices = matrices.float()             # (K + 1, D, D), built in float64
        self._invertible = invertible
        self.orthogonal = orthogonal

    def describe(self) -> dict:
        return {"name": self.name, "K": self.K, "shape": list(self.shape), "seed": self.seed}

    def _per_level(self, u: torch.Tensor, k, transform) -> torch.Tensor:
        k = _levels(k, u.shape[0], self.K, u.device)
        flat = u.reshape(u.shape[0], -1)
        out = torch.empty_like(flat)
        for level in torch.unique(k).tolist():       # one product per distinct level
            rows = k == level
            out[rows] = transform(flat[rows], level)
        return out.view_as(u)

    def apply(self, u: torch.Tensor, k) -> torch.Tensor:
        # Row vectors: (T u)^T = u^T T^T. A new tensor is returned; u is never modified.
        return self._per_level(u, k, lambda x, lv: x @ self.matrices[lv].to(x).T)

    def inverse(self, u: torch.Tensor, k) -> torch.Tensor:
        def solve(x, level):
            if not bool(self._invertible[level]):
                raise ValueError(f"{self.name}: T({level}) is not invertible")
            t = self.matrices[level].to(x)
            if self.orthogonal:
                return x @ t                          # T^-1 = T^T
            return torch.linalg.solve(t.double(), x.double().T).T.to(x)
        return self._per_level(u, k, solve)

    def invertible_levels(self) -> torch.Tensor:
        return self._invertible.clone()


def per_level(fn: Callable, invertible: str = "all", orthogonal: bool = False) -> Callable:
    """Factory for a map given by fn(k, K, D, generator, previous) (see the module docstring).

    invertible: "all" (claimed at every level), "below_K" (T(K) = 0) or "none".
    """
    def factory(shape, K: int, seed: int = 0, **_options):
        D = int(math.prod(shape))
        generator = torch.Generator().manual_seed(int(seed))
        values = [1.0]                                # T(0) = I
        for k in range(1, K + 1):
            values.append(fn(k, K, D, generator, values[-1]))
            if k == 1 and torch.is_tensor(values[-1]) and (K + 1) * D * D > MAX_MATRIX_ENTRIES:
                raise ValueError(f"{fn.__name__}: {K + 1} matrices of {D} x {D} are too large; use fewer levels "
                                 f"(model.K) or smaller images")
        claims = {"all": [True] * (K + 1), "below_K": [True] * K + [False], "none": [True] + [False] * K}
        inv = torch.tensor(claims[invertible])
        if all(not torch.is_tensor(v) for v in values):
            return ScalarLevelMap(fn.__name__, shape, K, seed, torch.tensor(values, dtype=torch.float64), inv)
        eye = torch.eye(D, dtype=torch.float64)
        mats = torch.stack([v.double() if torch.is_tensor(v) else v * eye for v in values])
        if not torch.isfinite(mats).all():
            raise ValueError(f"{fn.__name__}: the matrices overflowed")
        return MatrixLevelMap(fn.__name__, shape, K, seed, mats, inv, orthogonal=orthogonal)
    factory.level_function = fn
    return factory


# ------------------------------------------------------------------ the maps, T(k) for k >= 1

def identity(k, K, D, generator, previous):
    """T(k) = I: no information is destroyed; training is pure denoising."""
    return 1.0


def constant_velocity(k, K, D, generator, previous):
    """T(k) = (1 - k/K) I: a particle leaving u_0 with velocity -u_0/K, at the origin at k = K."""
    return 1.0 - k / K


def constant_deceleration(k, K, D, generator, previous):
    """T(k) = (1 - k/K)^2 I: x(t) = u_0 (1 - t/K)^2 starts at u_0 with velocity -2 u_0/K and constant
    acceleration 2 u_0/K^2, and comes to rest (x = 0, x' = 0) at the origin at t = K.

    The seed printed T = (t^2/K^2 - t/K) I = -(t/K)(1 - t/K) I; that is 0 at t = 0 (the data is
    lost at level 0), -1/4 at t = K/2, and arrives at the origin with velocity +u_0/K, not at rest.
    """
    return (1.0 - k / K) ** 2


def fixed_random(k, K, D, generator, previous):
    """T(k) = G_k / sqrt(D), G_k a seeded N(0, 1) matrix per level (invertible almost surely)."""
    return torch.randn(D, D, generator=generator, dtype=torch.float64) / math.sqrt(D)


def haar_orthogonal(D: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-distributed orthogonal matrix: QR of a Gaussian matrix with the signs of R's diagonal fixed."""
    q, r = torch.linalg.qr(torch.randn(D, D, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None, :]


def random_product(k, K, D, generator, previous):
    """T(k) = R_k T(k-1) with R_i seeded Haar-orthogonal: norm 1 at every level (see module docstring)."""
    r = haar_orthogonal(D, generator)
    return r if not torch.is_tensor(previous) else r @ previous


FUNCTION_MAP: Dict[str, Callable] = {
    "heat": lambda shape, K, seed=0, blur_sigma_min=0.5, blur_sigma_max=20.0, **_: HeatDissipation(
        shape, K, blur_sigma_min, blur_sigma_max),
    "identity": per_level(identity),
    "constant_velocity": per_level(constant_velocity, invertible="below_K"),
    "constant_deceleration": per_level(constant_deceleration, invertible="below_K"),
    "fixed_random": per_level(fixed_random),
    "random_product": per_level(random_product, orthogonal=True),
}


def build_map(name: str, shape, K: int, seed: int = 0, **options):
    """The forward map `name` for fields of `shape` (C, H, W) with levels 0..K."""
    if name not in FUNCTION_MAP:
        raise KeyError(f"unknown forward process '{name}' (known: {', '.join(sorted(FUNCTION_MAP))})")
    built = FUNCTION_MAP[name](tuple(int(s) for s in shape), int(K), int(seed), **options)
    built.name = name                                 # the registry key is what checkpoints record
    return built


def binary_product_norms(D: int, K: int, generator: torch.Generator) -> torch.Tensor:
    """Spectral norms of the naive products R_k ... R_1 with i.i.d. 0/1 entries (float64), k = 1..K.

    They grow like (D/2)^k: the reason ``random_product`` uses orthogonal factors.
    """
    norms, prod = [], torch.eye(D, dtype=torch.float64)
    for _ in range(K):
        prod = (torch.rand(D, D, generator=generator, dtype=torch.float64) < 0.5).double() @ prod
        norms.append(torch.linalg.matrix_norm(prod, ord=2))
    return torch.stack(norms)
