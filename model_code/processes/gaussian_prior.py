"""The Gaussian prior p(u_K) of the levels processes, fitted to the most degraded training data
T(K) u_0: a full covariance, or a diagonal one in the orthonormal DCT basis (heat dissipation
keeps the DCT basis, so its fully blurred images are nearly independent per DCT mode)."""
from __future__ import annotations

import math

import torch

from .heat import dct2, dct_matrix, idct2


class GaussianPrior:
    """p(u_K) = N(m, Sigma) fitted to q(u_K) = T(K) u_0 + N(0, sigma^2 I) over the training set.

    kind "full": Sigma = Cov(T(K) u_0) + sigma^2 I on the flattened field (D x D, Cholesky L).
    kind "dct_diag": independent Gaussians on the orthonormal DCT coefficients of each channel,
        var = Var(DCT T(K) u_0) + sigma^2 (for large images; natural for heat, whose blurred
        images are nearly diagonal in the DCT basis).
    Both add sigma^2 I exactly (the DCT is orthonormal), so Sigma is positive definite even with
    fewer images than dimensions. A sample is m + L z (full) or IDCT(m + sqrt(var) z), z ~ N(0, I).
    """

    def __init__(self, kind: str, shape, mean: torch.Tensor, factor: torch.Tensor):
        if kind not in ("full", "dct_diag"):
            raise ValueError(f"prior kind must be 'full' or 'dct_diag', got {kind!r}")
        self.kind, self.shape = kind, tuple(int(s) for s in shape)
        self.mean = mean.double()          # (D,) in pixel (full) or DCT (dct_diag) coordinates
        self.factor = factor.double()      # Cholesky factor L (D, D), or standard deviations (D,)
        _, h, w = self.shape
        self.c_h, self.c_w = dct_matrix(h), dct_matrix(w)

    @property
    def dim(self) -> int:
        return int(math.prod(self.shape))

    @classmethod
    def fit(cls, u_K: torch.Tensor, sigma: float, kind: str = "full") -> "GaussianPrior":
        """Fit to the noise-free top-level images u_K = T(K) u_0, shape (N, C, H, W)."""
        shape = u_K.shape[1:]
        x = u_K.double()
        if kind == "dct_diag":
            c_h, c_w = dct_matrix(shape[-2]), dct_matrix(shape[-1])
            x = dct2(x, c_h, c_w)
        x = x.reshape(len(x), -1)
        mean = x.mean(0)
        if kind == "full":
            xc = x - mean
            cov = xc.T @ xc / max(1, len(x) - 1) + sigma ** 2 * torch.eye(x.shape[1], dtype=torch.float64)
            factor = torch.linalg.cholesky(cov)
        else:
            factor = (x.var(0, unbiased=len(x) > 1) + sigma ** 2).sqrt()
        return cls(kind, shape, mean, factor)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "shape": list(self.shape), "mean": self.mean, "factor": self.factor}

    @classmethod
    def from_state(cls, state: dict) -> "GaussianPrior":
        return cls(state["kind"], state["shape"], state["mean"], state["factor"])

    def from_white(self, z: torch.Tensor) -> torch.Tensor:
        """Map white z (B, D) to prior samples (B, C, H, W)."""
        z = z.double().cpu()
        if self.kind == "full":
            x = self.mean + z @ self.factor.T
            return x.view(-1, *self.shape).float()
        c = (self.mean + z * self.factor).view(-1, *self.shape)
        return idct2(c, self.c_h, self.c_w).float()

    def kl_from(self, a: torch.Tensor, sigma: float) -> torch.Tensor:
        """KL( N(a, sigma^2 I) || N(m, Sigma) ) per row of a (B, C, H, W), in nats.

        = 1/2 [ sigma^2 tr(Sigma^-1) + (a - m)^T Sigma^-1 (a - m) - D + log det Sigma - D log sigma^2 ].
        """
        D = self.dim
        a = a.double().cpu()
        if self.kind == "full":
            diff = a.reshape(len(a), -1) - self.mean
            white = torch.linalg.solve_triangular(self.factor, diff.T, upper=False).T
            inv = torch.linalg.solve_triangular(self.factor, torch.eye(D, dtype=torch.float64), upper=False)
            trace, logdet = (inv ** 2).sum(), 2 * torch.log(torch.diagonal(self.factor)).sum()
        else:
            diff = dct2(a, self.c_h, self.c_w).reshape(len(a), -1) - self.mean
            white = diff / self.factor
            trace, logdet = (self.factor ** -2).sum(), 2 * torch.log(self.factor).sum()
        maha = (white ** 2).sum(1)
        return 0.5 * (sigma ** 2 * trace + maha - D + logdet - D * math.log(sigma ** 2))


# ----------------------------------------------------------------------------- training
