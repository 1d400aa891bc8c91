"""Heat dissipation on the pixel grid (docs/maths.md; Rissanen, Heinonen & Solin 2023).

The forward process blurs an image by running the heat equation du/dt = Laplacian(u) on
the rectangle [0, H] x [0, W] (pixel units) with Neumann (zero-flux) boundaries. Its
eigenfunctions are the cosines of the orthonormal DCT-II, so with c = DCT(u_0)

    u(t) = IDCT( c * exp(-Lambda t) ),   Lambda_nm = pi^2 (n^2 / H^2 + m^2 / W^2).

Lambda_00 = 0: the mean of every channel is kept. Running the heat equation for time t
is a Gaussian blur of standard deviation sigma_B = sqrt(2 t) pixels (the heat kernel is
N(0, 2 t)), so level k uses t_k = sigma_B,k^2 / 2 with sigma_B log-spaced from
blur_sigma_min to blur_sigma_max over k = 1..K, and level 0 is the data (no blur).

The DCT is computed as two matrix products with the orthonormal DCT-II matrix (exact,
differentiable, on any device); tests compare it with scipy.fft.dctn(norm="ortho").
"""
from __future__ import annotations

import math

import torch


def dct_matrix(n: int, dtype=torch.float64) -> torch.Tensor:
    """Orthonormal DCT-II matrix: C[k, i] = s_k cos(pi (i + 1/2) k / n), s_0 = sqrt(1/n), s_k = sqrt(2/n)."""
    i = torch.arange(n, dtype=dtype)
    k = torch.arange(n, dtype=dtype)[:, None]
    c = torch.cos(math.pi * (i + 0.5) * k / n) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c


def dct2(u: torch.Tensor, c_h: torch.Tensor, c_w: torch.Tensor) -> torch.Tensor:
    """2-D orthonormal DCT-II over the last two axes: C_H u C_W^T."""
    return c_h.to(u) @ u @ c_w.to(u).T


def idct2(c: torch.Tensor, c_h: torch.Tensor, c_w: torch.Tensor) -> torch.Tensor:
    """Inverse of dct2 (the matrices are orthogonal): C_H^T c C_W."""
    return c_h.to(c).T @ c @ c_w.to(c)


def heat_eigenvalues(h: int, w: int, dtype=torch.float64) -> torch.Tensor:
    """Lambda_nm = pi^2 (n^2 / H^2 + m^2 / W^2): minus the Neumann Laplacian's eigenvalues, (H, W)."""
    n = torch.arange(h, dtype=dtype)[:, None]
    m = torch.arange(w, dtype=dtype)[None, :]
    return math.pi ** 2 * (n ** 2 / h ** 2 + m ** 2 / w ** 2)


def blur_sigmas(K: int, blur_sigma_min: float, blur_sigma_max: float) -> torch.Tensor:
    """sigma_B for levels 0..K: 0 at level 0, then log-spaced from min to max (K values)."""
    if K < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    if not 0 < blur_sigma_min <= blur_sigma_max:
        raise ValueError(f"need 0 < blur_sigma_min <= blur_sigma_max, got {blur_sigma_min}, {blur_sigma_max}")
    logs = torch.linspace(math.log(blur_sigma_min), math.log(blur_sigma_max), K, dtype=torch.float64)
    return torch.cat([torch.zeros(1, dtype=torch.float64), logs.exp()])


class HeatDissipation:
    """u_k = T(k) u_0 with T(k) = IDCT diag(exp(-Lambda t_k)) DCT, t_k = sigma_B,k^2 / 2.

    Same interface as the matrix maps of linear.py: ``apply(u, k)`` for u (B, C, H, W)
    and per-sample levels k (B,) (or one int), ``describe()`` for the checkpoint.
    """

    name = "heat"

    def __init__(self, shape, K: int, blur_sigma_min: float = 0.5, blur_sigma_max: float = 20.0):
        self.shape = tuple(int(s) for s in shape)
        self.K = int(K)
        self.blur_sigma_min, self.blur_sigma_max = float(blur_sigma_min), float(blur_sigma_max)
        _, h, w = self.shape
        self.sigmas = blur_sigmas(self.K, self.blur_sigma_min, self.blur_sigma_max)
        self.times = self.sigmas ** 2 / 2                      # t_k = sigma_B^2 / 2
        self.c_h, self.c_w = dct_matrix(h), dct_matrix(w)
        self.eigenvalues = heat_eigenvalues(h, w)
        # Multipliers exp(-Lambda t_k) for every level: (K + 1, H, W).
        self.multipliers = torch.exp(-self.eigenvalues[None] * self.times[:, None, None])

    def describe(self) -> dict:
        return {"name": self.name, "K": self.K, "shape": list(self.shape),
                "blur_sigma_min": self.blur_sigma_min, "blur_sigma_max": self.blur_sigma_max}

    def apply(self, u: torch.Tensor, k) -> torch.Tensor:
        """Blur each u[i] to level k[i]: IDCT(DCT(u) * exp(-Lambda t_k)). Never modifies u."""
        k = _levels(k, u.shape[0], self.K, u.device)
        mult = self.multipliers.to(u)[k][:, None]             # (B, 1, H, W)
        return idct2(dct2(u, self.c_h, self.c_w) * mult, self.c_h, self.c_w)

    def invertible_levels(self) -> torch.Tensor:
        # exp(-Lambda t) > 0, so T(k) is invertible in exact arithmetic, but the inverse
        # amplifies mode (n, m) by exp(Lambda t): ill-posed; no inverse is offered.
        return torch.zeros(self.K + 1, dtype=torch.bool)


def _levels(k, batch: int, K: int, device) -> torch.Tensor:
    """Levels as a (B,) long tensor in 0..K (one int is broadcast)."""
    k = torch.as_tensor(k, device=device).long()
    if k.ndim == 0:
        k = k.expand(batch)
    if k.shape != (batch,):
        raise ValueError(f"levels must have shape ({batch},), got {tuple(k.shape)}")
    if len(k) and (int(k.min()) < 0 or int(k.max()) > K):
        raise ValueError(f"levels must lie in 0..{K}")
    return k
