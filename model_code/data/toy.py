"""The two-atom toy problem (seed 003): N pseudo-atoms on the periodic unit interval.

A configuration is x in [0, 1)^N (one coordinate per atom; N = 2 in the seed). The
atoms are indistinguishable, so the data law is the permutation-symmetrised wrapped
Gaussian

    x = wrap(mu_pi + sigma_d z),   z ~ N(0, I_N),   pi uniform over the N! orderings,

with mu = (0.25, 0.75) and wrap(y) = y - floor(y). With pi fixed to the identity
(``symmetrize=False``) it is the seed's single labelled configuration; the analytic
score (toy_score.py) and the permutation-equivariant network assume the symmetric law.

Tensors are (B, N): the batch axis, then one entry per atom. Every random draw takes
an explicit torch.Generator; nothing here is drawn once and reused (the published code
froze its noisy training pairs for all epochs).
"""
from __future__ import annotations

import itertools
import math

import torch


def wrap(x: torch.Tensor) -> torch.Tensor:
    """Map onto the unit circle: wrap(y) = y - floor(y) in [0, 1)."""
    return torch.remainder(x, 1.0)


def torus_delta(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Shortest signed displacement a - b on the unit circle, in [-1/2, 1/2)."""
    return torch.remainder(a - b + 0.5, 1.0) - 0.5


def permuted_means(mu, dtype=torch.float64, device=None) -> torch.Tensor:
    """All N! orderings of the atom positions mu: shape (N!, N); row 0 is mu itself."""
    mu = [float(m) for m in mu]
    return torch.tensor(list(itertools.permutations(mu)), dtype=dtype, device=device)


class TwoAtomData:
    """Sampler of the (symmetrised) wrapped-Gaussian atom configurations."""

    def __init__(self, mu=(0.25, 0.75), sigma_d: float = 0.05, symmetrize: bool = True):
        if not sigma_d > 0:
            raise ValueError(f"sigma_d must be positive, got {sigma_d}")
        if len(mu) < 1:
            raise ValueError("mu needs at least one atom position")
        self.mu = [float(m) % 1.0 for m in mu]
        self.sigma_d = float(sigma_d)
        self.symmetrize = bool(symmetrize)
        self.n_atoms = len(self.mu)

    def modes(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """The centres of the mixture components: (N!, N), or (1, N) without symmetrisation."""
        means = permuted_means(self.mu, dtype, device)
        return means if self.symmetrize else means[:1]

    def sample(self, n: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
        """n fresh configurations (n, N): pick a component, add sigma_d z, wrap."""
        device = generator.device
        modes = self.modes(torch.float64, device)
        k = torch.randint(len(modes), (n,), generator=generator, device=device)
        z = torch.randn(n, self.n_atoms, generator=generator, dtype=torch.float64, device=device)
        return wrap(modes[k] + self.sigma_d * z).to(dtype)


# --------------------------------------------------------------------------- sample statistics

def nearest_mode(x: torch.Tensor, modes: torch.Tensor):
    """For each configuration, the index of the nearest mode on the torus and the distance.

    r = min_k |torus_delta(x, m_k)|; near a mode, sigma_d-Gaussian data make r Rayleigh
    distributed (scale sigma_d for N = 2: the norm of a 2-D isotropic Gaussian).
    """
    d = torus_delta(x[:, None, :].double(), modes[None].to(x.device).double())   # (B, K, N)
    r = d.norm(dim=-1)                                                              # (B, K)
    r_min, idx = r.min(dim=1)
    return idx, r_min


def mode_balance(x: torch.Tensor, modes: torch.Tensor) -> tuple[float, float]:
    """Fraction of samples nearest to mode 0 (mu in its own order) and its Monte-Carlo error.

    For the symmetric law with two modes the exact value is 1/2; the binomial standard
    error is sqrt(f (1 - f) / n).
    """
    idx, _ = nearest_mode(x, modes)
    f = float((idx == 0).double().mean())
    return f, math.sqrt(max(f * (1 - f), 1e-12) / max(len(x), 1))
