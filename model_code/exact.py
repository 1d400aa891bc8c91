"""Gaussian data with an exact denoiser: ground truth for the samplers (docs/maths.md).

Data u ~ N(0, Sigma) on an H x W grid, noise z ~ N(0, C) from the same WhiteNoise or
rbf GaussianRandomField that the samplers use. Sigma is chosen diagonal in C's
eigenbasis. For the rbf kernel on a grid C is a Kronecker product,

    C = (U_y (x) U_x) diag(lam) (U_y (x) U_x)^T,   lam = a (x) b + eps^2,

with K_y = U_y diag(a) U_y^T, K_x = U_x diag(b) U_x^T the 1-D kernel matrices (recomputed
here in float64 with the full basis, nothing dropped). The data spectrum is
d = s^2 lam^p (p = 1: Sigma = s^2 C; p = 2: a smoother field) or spectrum(lam) for a
given function. For white noise C = I (U = identity, lam = 1) and Sigma = s^2 I unless
a spectrum function is given (it then sees lam = 1 and must return a tensor (H, W)).

Because Sigma and C commute, everything is diagonal in the basis U:

    x = u + sigma z  ~  N(0, U diag(d + sigma^2 lam) U^T)
    D(x, sigma) = E[u | x] = U diag(d / (d + sigma^2 lam)) U^T x
    C grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2.

Coefficients of a field x in the basis: X = U_y^T x U_x (per channel); modes are indexed
(i, j) with lam_ij = a_i b_j + eps^2. Small resolutions only (the basis is dense).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .noise import GaussianRandomField, WhiteNoise, as_resolution, kernel_matrix_1d


def _eigh64(mat: torch.Tensor):
    vals, vecs = torch.linalg.eigh(mat.to(torch.float64))
    return vals.clamp(min=0.0), vecs


class GaussianData:
    """u ~ N(0, U diag(d) U^T), diagonal in the eigenbasis of the noise covariance C.

    Args:
        noise: WhiteNoise or GaussianRandomField(kernel="rbf").
        resolution: int or (H, W).
        s: overall scale of the data spectrum.
        p: exponent, d = s^2 lam^p (ignored when `spectrum` is given).
        spectrum: optional function lam (H, W) float64 -> d (H, W).

    Usable as a denoiser by every sampler: ``data(x, sigma)``, ``data.score(x, sigma)``,
    ``data.sigma_data``.
    """

    def __init__(self, noise, resolution, s: float = 1.0, p: float = 1.0,
                 spectrum: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        h, w = as_resolution(resolution)
        self.resolution = (h, w)
        self.channels = noise.channels
        if isinstance(noise, WhiteNoise):
            u_y, u_x = torch.eye(h, dtype=torch.float64), torch.eye(w, dtype=torch.float64)
            lam = torch.ones(h, w, dtype=torch.float64)
        elif isinstance(noise, GaussianRandomField) and noise.kernel == "rbf":
            a, u_y = _eigh64(kernel_matrix_1d(h, noise.length_scale))
            b, u_x = (a, u_y) if w == h else _eigh64(kernel_matrix_1d(w, noise.length_scale))
            lam = a[:, None] * b[None, :] + noise.eps ** 2
        else:
            raise ValueError(f"GaussianData supports WhiteNoise and rbf GaussianRandomField, got {noise!r}")
        if spectrum is not None:
            d = torch.as_tensor(spectrum(lam), dtype=torch.float64).expand(h, w).clone()
        elif isinstance(noise, WhiteNoise):
            d = torch.full((h, w), float(s) ** 2, dtype=torch.float64)
        else:
            d = float(s) ** 2 * lam ** float(p)
        if (d < 0).any():
            raise ValueError("data spectrum must be non-negative")
        self.u_y, self.u_x = u_y, u_x          # (H, H), (W, W) float64, orthonormal columns
        self.lam = lam                          # (H, W) noise eigenvalues
        self.d = d                              # (H, W) data eigenvalues
        # per-point RMS standard deviation of the data: sqrt(trace(Sigma) / (H W))
        self.sigma_data = math.sqrt(float(d.mean()))

    # ----------------------------------------------------------------- basis

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Coefficients U_y^T x U_x of fields (..., H, W) (float64)."""
        return self.u_y.T @ x.to(torch.float64) @ self.u_x

    def reconstruct(self, coef: torch.Tensor) -> torch.Tensor:
        """Fields U_y X U_x^T from coefficients (..., H, W) (float64)."""
        return self.u_y @ coef.to(torch.float64) @ self.u_x.T

    # ----------------------------------------------------------------- statistics

    def spectrum(self) -> torch.Tensor:
        """Data variance of each mode (H, W): the diagonal of Sigma in the basis U."""
        return self.d.clone()

    def covariance(self) -> torch.Tensor:
        """Dense Sigma (HW x HW, row-major points, one channel), float64. Small grids only."""
        u = torch.kron(self.u_y, self.u_x)
        return (u * self.d.flatten()) @ u.T

    def noise_covariance(self) -> torch.Tensor:
        """Dense C (HW x HW) in the same ordering, float64."""
        u = torch.kron(self.u_y, self.u_x)
        return (u * self.lam.flatten()) @ u.T

    def sample(self, n: int, generator: Optional[torch.Generator] = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """n exact data samples (n, channels, H, W)."""
        h, w = self.resolution
        z = torch.randn((int(n), self.channels, h, w), generator=generator, dtype=torch.float64)
        return self.reconstruct(self.d.sqrt() * z).to(dtype)

    # ----------------------------------------------------------------- denoiser

    def _sigma(self, sigma, x: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        if sigma.dim() == 0:
            sigma = sigma.expand(x.shape[0])
        return sigma.reshape(-1, *([1] * (x.dim() - 1)))

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """Exact D(x, sigma) = U diag(d / (d + sigma^2 lam)) U^T x; sigma scalar or (B,)."""
        s2 = self._sigma(sigma, x) ** 2
        gain = self.d / (self.d + s2 * self.lam)
        return self.reconstruct(gain * self.project(x)).to(x.dtype)

    forward = __call__

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """C grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2."""
        s2 = self._sigma(sigma, x).to(x.dtype) ** 2
        return (self(x, sigma) - x) / s2

    def __repr__(self) -> str:
        return f"GaussianData(resolution={self.resolution}, sigma_data={self.sigma_data:.4g})"
