"""Training loss, sampler and ELBO of the level processes: heat dissipation and linear maps.

Notation (ARCHITECTURE §3.4-3.5; Rissanen et al. 2023). Levels k = 0..K, data at level 0,
u_k = T(k) u_0 with T from processes/heat.py or processes/linear.py.

Inference distribution (factorised over levels):  q(u_k | u_0) = N(T(k) u_0, sigma^2 I), k >= 1.
Generative model:  p(u_K) = N(m, Sigma) (the prior below),
                   p(u_{k-1} | u_k) = N(mu(u_k, k), delta^2 I),  mu(x, k) = x + F(x, k) (residual).

Training (every k in 1..K, K included):  k ~ U{1..K}, x = T(k) u_0 + sigma eps,
    loss = mean |mu(x, k) - T(k-1) u_0|^2.
Sampling:  u_K ~ p(u_K); for k = K..1: u_{k-1} = mu(u_k, k) + delta eps_k, no noise on the last step.
Negative ELBO (nats per image; a bound on -log P(u_0) of the *discrete* data):
    L_K = KL(q(u_K | u_0) || p(u_K))
    L_k = E_q(u_{k+1}|u_0) KL(q(u_k | u_0) || p(u_k | u_{k+1}))  for k = 1..K-1
        = D/2 (sigma^2/delta^2 - 1) + D log(delta/sigma) + |T(k) u_0 - mu(u_{k+1}, k+1)|^2 / (2 delta^2)
    L_0 = -E log P(u_0 | u_1),  P = N(mu(u_1, 1), delta^2) integrated over each pixel's bin of width
          1/(levels-1) (the discretised Gaussian; the end bins extend to +-infinity).
bits/dim = total / (D ln 2), D = C H W.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence

import torch
from torch import nn

from .processes.heat import dct2, dct_matrix, idct2


# ----------------------------------------------------------------------------- the model

class LevelModel(nn.Module):
    """mu(x, k) = x + F(x, k): the network predicts the residual u_{k-1} - u_k."""

    def __init__(self, net: nn.Module, residual: bool = True):
        super().__init__()
        self.net = net
        self.residual = bool(residual)

    def forward(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        k = torch.as_tensor(k, device=x.device).reshape(-1).expand(x.shape[0])
        out = self.net(x, k.to(x.dtype))
        return x + out if self.residual else out


# ----------------------------------------------------------------------------- the prior

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

def training_loss(model: Callable, fmap, u0: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """One draw of mean |mu(T(k) u_0 + sigma eps, k) - T(k-1) u_0|^2 with k ~ U{1..K} (K included)."""
    b = u0.shape[0]
    k = torch.randint(1, fmap.K + 1, (b,), generator=generator).to(u0.device)
    eps = torch.randn(u0.shape, generator=generator).to(u0)
    x = fmap.apply(u0, k) + sigma * eps          # u_k + noise
    target = fmap.apply(u0, k - 1)               # u_{k-1}: a separate tensor, never x itself
    return ((model(x, k) - target) ** 2).mean()


# ----------------------------------------------------------------------------- sampling

def white_noise(n_dims: int, seeds: Sequence[int], steps: int, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample draws from torch.Generator(seed_i): the prior's z_i (D,) then `steps` noises (shape).

    Sample i depends only on seeds[i], never on the batch it is in.
    """
    zs, noises = [], []
    for seed in seeds:
        g = torch.Generator().manual_seed(int(seed))
        zs.append(torch.randn(n_dims, generator=g))
        noises.append(torch.randn((steps, *shape), generator=g))
    return torch.stack(zs), torch.stack(noises)


@torch.no_grad()
def sample_levels(model: Callable, u_K: torch.Tensor, noise: torch.Tensor, delta: float, K: int,
                  keep_trajectory: bool = False, device="cpu", progress: Optional[Callable] = None):
    """Run u_{k-1} = mu(u_k, k) + delta eps_k for k = K..1 (no noise on the last step).

    u_K (B, C, H, W) is the prior draw; noise (B, K, C, H, W) holds eps for the steps k = K..2
    in order (noise[:, j] is used at k = K - j; the last entry is unused). Returns u_0 and,
    if asked, the trajectory (K + 1, B, C, H, W) on the CPU, from u_K to u_0.
    """
    u = u_K.to(device)
    frames = [u.cpu()] if keep_trajectory else None
    steps = range(K, 0, -1)
    for j, k in enumerate(progress(steps) if progress else steps):
        level = torch.full((u.shape[0],), k, device=device, dtype=torch.long)
        u = model(u, level)
        if k > 1:
            u = u + delta * noise[:, j].to(device)
        if keep_trajectory:
            frames.append(u.cpu())
    return u.cpu(), (torch.stack(frames) if keep_trajectory else None)


def slerp(z_a: torch.Tensor, z_b: torch.Tensor, n: int) -> torch.Tensor:
    """n points cos(l pi/2) z_a + sin(l pi/2) z_b, l in [0, 1]: every point is again N(0, I) in law."""
    lam = torch.linspace(0, 1, n, dtype=z_a.dtype)[:, None] * (math.pi / 2)
    return torch.cos(lam) * z_a[None] + torch.sin(lam) * z_b[None]


def initial_and_noise(mode: str, prior: GaussianPrior, K: int, seeds: Sequence[int], num_points: int = 10):
    """(u_K, noise) for the sampling modes of sample.py.

    random:      u_K and noise from each sample's own generator.
    same_init:   one u_K (of seeds[0]) for every sample; noise from each sample's generator.
    share_noise: each sample's own u_K; one noise sequence (of seeds[0]) for every sample.
    interpolate: num_points prior states on the great circle between those of seeds[0] and seeds[1]
                 (slerp of the white z, so each is a prior draw), one shared noise sequence.
    """
    shape = prior.shape
    if mode == "interpolate":
        z, noise = white_noise(prior.dim, list(seeds[:2]), K, shape)
        z = slerp(z[0], z[1], num_points)
        return prior.from_white(z), noise[:1].expand(num_points, *noise.shape[1:]).clone()
    z, noise = white_noise(prior.dim, seeds, K, shape)
    if mode == "same_init":
        z = z[:1].expand_as(z)
    elif mode == "share_noise":
        noise = noise[:1].expand_as(noise).clone()
    elif mode != "random":
        raise ValueError(f"unknown sampling mode {mode!r}")
    return prior.from_white(z), noise


# ----------------------------------------------------------------------------- ELBO

def log_discretised_gaussian(x: torch.Tensor, mean: torch.Tensor, std: float, levels: int) -> torch.Tensor:
    """log P(x) for x on the grid j/(levels-1) under N(mean, std^2) integrated over x's bin (float64).

    Bins are [x - h, x + h], h = 1/(2 (levels - 1)); the bin of 0 extends to -inf, that of 1 to +inf.
    """
    x, mean = x.double(), mean.double()
    half = 0.5 / (levels - 1)
    upper = (x + half - mean) / std
    lower = (x - half - mean) / std
    log_cdf_upper = torch.special.log_ndtr(upper)              # log Phi(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)              # log (1 - Phi(lower))
    # log(Phi(upper) - Phi(lower)), computed on the side away from the far tail.
    right = log_sf_lower + torch.log1p(-torch.exp(torch.special.log_ndtr(-upper) - log_sf_lower).clamp(max=1 - 1e-15))
    left = log_cdf_upper + torch.log1p(-torch.exp(torch.special.log_ndtr(lower) - log_cdf_upper).clamp(max=1 - 1e-15))
    mid = torch.where(lower > 0, right, left)
    return torch.where(x < half, log_cdf_upper, torch.where(x > 1 - half, log_sf_lower, mid))


@torch.no_grad()
def negative_elbo_terms(model: Callable, fmap, prior: GaussianPrior, u0: torch.Tensor, sigma: float,
                        delta: float, levels: int, generator: torch.Generator) -> torch.Tensor:
    """Per-image terms (B, K + 1) in nats: column k is L_k of the module docstring (0..K)."""
    K = fmap.K
    b = u0.shape[0]
    D = u0[0].numel()
    terms = torch.zeros(b, K + 1, dtype=torch.float64)
    terms[:, K] = prior.kl_from(fmap.apply(u0, K), sigma)
    const = 0.5 * D * (sigma ** 2 / delta ** 2 - 1) + D * math.log(delta / sigma)
    for k in range(0, K):
        eps = torch.randn(u0.shape, generator=generator).to(u0)
        x = fmap.apply(u0, k + 1) + sigma * eps                          # u_{k+1} ~ q(u_{k+1} | u_0)
        mu = model(x, torch.full((b,), k + 1, device=u0.device, dtype=torch.long))
        if k == 0:
            logp = log_discretised_gaussian(u0, mu, delta, levels)
            terms[:, 0] = -logp.reshape(b, -1).sum(1).double().cpu()
        else:
            sq = ((fmap.apply(u0, k) - mu) ** 2).reshape(b, -1).sum(1).double().cpu()
            terms[:, k] = const + sq / (2 * delta ** 2)
    return terms


def elbo_summary(terms: torch.Tensor, dims: int) -> Dict[str, object]:
    """Mean negative ELBO in nats and bits/dim, with the per-level breakdown."""
    per_level = terms.mean(0)
    total = float(per_level.sum())
    to_bpd = 1.0 / (dims * math.log(2))
    return {"neg_elbo_nats": total, "bpd": total * to_bpd, "n_images": int(terms.shape[0]),
            "per_level_nats": [float(v) for v in per_level],
            "per_level_bpd": [float(v) * to_bpd for v in per_level]}
