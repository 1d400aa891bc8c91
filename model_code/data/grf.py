"""Periodic Gaussian random fields with known statistics (ground truth for tests).

The field lives on the unit torus [0, 1)^2 and has covariance operator

    C = scale^2 * (-Delta + tau^2)^(-alpha).

Its eigenfunctions are the Fourier modes e_k(x) = exp(2 pi i k.x), k in Z^2, with
eigenvalues lambda_k = scale^2 * (4 pi^2 |k|^2 + tau^2)^(-alpha). On an n x n grid we
keep the frequencies the FFT represents (k in fftfreq(n) * n, mean mode included) and
draw

    u(x_j) = Re sum_k sqrt(lambda_k) (a_k + i b_k) e_k(x_j),   a_k, b_k iid N(0, 1).

Then Cov(u(x_j), u(x_0)) = sum_k lambda_k cos(2 pi k.(x_j - x_0)), exactly: the grid
field is stationary, its covariance row is the inverse FFT of the eigenvalues, and
its pointwise variance is sum_k lambda_k over the represented k. These numbers are
known at every resolution, which makes this data set the reference for sample-quality
and super-resolution checks.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from model_code.errors import UserError

# Side of the frequency grid used for the continuum-limit normalisation.
_CONTINUUM_GRID = 2048


def _frequency_sq_norm(n: int) -> np.ndarray:
    """|k|^2 for the integer frequency vectors on the n x n FFT grid (float64)."""
    k = np.fft.fftfreq(n, d=1.0 / n)
    return k[:, None] ** 2 + k[None, :] ** 2


def _continuum_variance(alpha: float, tau: float) -> float:
    """sum over k in Z^2 of (4 pi^2 |k|^2 + tau^2)^(-alpha).

    Summed exactly over a large square of frequencies, plus the integral of the
    (radial) tail beyond its inscribed disc; for alpha > 1 the remainder is tiny.
    """
    n = _CONTINUUM_GRID
    total = float(np.sum((4.0 * math.pi**2 * _frequency_sq_norm(n) + tau**2) ** (-alpha)))
    radius = n / 2
    # int_{|k| > R} (4 pi^2 |k|^2 + tau^2)^(-alpha) dk = (4 pi^2 R^2 + tau^2)^(1-alpha) / (4 pi (alpha - 1))
    tail = (4.0 * math.pi**2 * radius**2 + tau**2) ** (1.0 - alpha) / (4.0 * math.pi * (alpha - 1.0))
    return total + tail


def _check_resolution(n, what: str = "resolution") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UserError(f"{what} must be a positive integer, got {n!r}")
    return int(n)


class PeriodicGRF:
    """Periodic GRF on the unit torus with covariance scale^2 (-Delta + tau^2)^(-alpha).

    alpha must exceed 1 (the dimension 2 over 2) for the pointwise variance to be
    finite; tau must be positive. scale=None picks the scale that gives pointwise
    variance 1 in the continuum limit (finite grids have slightly less).
    """

    def __init__(self, alpha: float = 2.5, tau: float = 7.0, scale: float | None = None):
        if not alpha > 1.0:
            raise UserError(f"GRF alpha must be > 1 for a finite pointwise variance in 2-D, got {alpha}")
        if not tau > 0.0:
            raise UserError(f"GRF tau must be > 0, got {tau}")
        if scale is not None and not scale > 0.0:
            raise UserError(f"GRF scale must be > 0 (or None for unit variance), got {scale}")
        self.alpha = float(alpha)
        self.tau = float(tau)
        if scale is None:
            scale = 1.0 / math.sqrt(_continuum_variance(self.alpha, self.tau))
        self.scale = float(scale)

    def __repr__(self) -> str:
        return f"PeriodicGRF(alpha={self.alpha}, tau={self.tau}, scale={self.scale:.6g})"

    def eigenvalues(self, n: int) -> torch.Tensor:
        """lambda_k * scale^2 on the n x n FFT frequency grid (float64, FFT order)."""
        n = _check_resolution(n)
        lam = (4.0 * math.pi**2 * _frequency_sq_norm(n) + self.tau**2) ** (-self.alpha)
        return torch.from_numpy(lam * self.scale**2)

    def pointwise_variance(self, n: int) -> float:
        """Exact variance of u(x) for fields sampled on an n x n grid."""
        return float(self.eigenvalues(n).sum())

    def covariance_row(self, n: int) -> torch.Tensor:
        """Exact Cov(u(0, 0), u(x_ij)) for every grid point x_ij (float64, (n, n))."""
        lam = self.eigenvalues(n)
        # sum_k lambda_k exp(2 pi i k.j / n): an unnormalised inverse DFT.
        return torch.fft.ifft2(lam, norm="forward").real

    def from_white_noise(self, xi: torch.Tensor) -> torch.Tensor:
        """Map complex white noise xi (N, n, n), E|xi_k|^2 = 2, to fields (N, 1, n, n).

        This is the deterministic half of `sample`; with xi = a + i b, a, b iid N(0, 1)
        the output has covariance row `covariance_row(n)`. Real output in the real
        dtype matching xi's precision.
        """
        if not torch.is_complex(xi) or xi.ndim != 3 or xi.shape[-1] != xi.shape[-2]:
            raise ValueError(f"xi must be a complex tensor of shape (N, n, n), got {tuple(xi.shape)} {xi.dtype}")
        n = xi.shape[-1]
        real_dtype = torch.float64 if xi.dtype == torch.complex128 else torch.float32
        amp = self.eigenvalues(n).sqrt().to(device=xi.device, dtype=real_dtype)
        field = torch.fft.ifft2(amp * xi, norm="forward").real
        return field.unsqueeze(1)

    def sample(self, n_samples: int, resolution: int, generator: torch.Generator) -> torch.Tensor:
        """Draw n_samples fields on a resolution x resolution grid: float32 (N, 1, n, n)."""
        n_samples = _check_resolution(n_samples, "n_samples")
        n = _check_resolution(resolution)
        shape = (n_samples, n, n)
        a = torch.randn(shape, generator=generator, dtype=torch.float32)
        b = torch.randn(shape, generator=generator, dtype=torch.float32)
        return self.from_white_noise(torch.complex(a, b))


def make_grf_dataset(
    n_train: int,
    n_valid: int,
    resolution: int,
    seed: int = 0,
    alpha: float = 2.5,
    tau: float = 7.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation sets of unit-variance periodic GRF samples, (N, 1, n, n) float32.

    The two splits use disjoint generator seeds (2 * seed and 2 * seed + 1), so no
    split of one seed ever repeats a split of another.
    """
    grf = PeriodicGRF(alpha=alpha, tau=tau)
    seed = int(seed)
    train = grf.sample(n_train, resolution, torch.Generator().manual_seed(2 * seed))
    valid = grf.sample(n_valid, resolution, torch.Generator().manual_seed(2 * seed + 1))
    return train, valid
