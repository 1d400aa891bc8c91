"""The exact score of the toy problem's diffused law, a drop-in for the score network.

The data are x_0 = wrap(m + sigma_d z) with m one of the permuted means m_1..m_P
(toy.py); the forward process adds sigma z and wraps. Wrapped Gaussians convolve like
Gaussians, so at noise level sigma

    p_sigma(x) = (1/P) sum_p prod_i k_v(x_i - m_{p,i}),   v = sigma_d^2 + sigma^2,

with k_v the wrapped Gaussian kernel (processes/wrapped_ve.py). Its score is the
posterior-weighted average of the component scores,

    grad_i log p_sigma(x) = sum_p w_p(x) d/dx_i log k_v(x_i - m_{p,i}),
    w_p(x) = softmax_p( sum_i log k_v(x_i - m_{p,i}) ),

with both permutations and every periodic image up to K (chosen from v unless given).
``AnalyticScore(x, sigma)`` has the score network's signature (x (B, N), sigma (B,)),
so every sampler and metric accepts either.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .data.toy import permuted_means
from .processes.wrapped_ve import wrapped_gaussian


class AnalyticScore(nn.Module):
    """grad_x log p_sigma(x) of the (symmetrised) wrapped-Gaussian mixture, in float64."""

    def __init__(self, mu=(0.25, 0.75), sigma_d: float = 0.05, symmetrize: bool = True, n_images: int = 0):
        super().__init__()
        means = permuted_means(mu)
        self.register_buffer("modes", means if symmetrize else means[:1], persistent=False)
        self.sigma_d = float(sigma_d)
        self.n_images = int(n_images)
        self.config = {"mu": [float(m) for m in mu], "sigma_d": self.sigma_d, "symmetrize": bool(symmetrize),
                       "n_images": self.n_images}

    def describe(self) -> dict:
        """Constructor arguments: ``AnalyticScore(**describe())`` rebuilds it."""
        return dict(self.config)

    def _components(self, x: torch.Tensor, sigma):
        """Per-component log densities (B, P) and scores (B, P, N)."""
        x64 = x.double()
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        var = (self.sigma_d ** 2 + sigma ** 2)[:, None, None]                # (B, 1, 1)
        d = x64[:, None, :] - self.modes.to(x.device)[None]                  # (B, P, N)
        log_k, score = wrapped_gaussian(d, var, self.n_images or None)
        return log_k.sum(-1), score

    def log_prob(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """log p_sigma(x) on the torus (density w.r.t. Lebesgue measure on [0,1)^N), (B,)."""
        logp, _ = self._components(x, sigma)
        return torch.logsumexp(logp, dim=1) - math.log(logp.shape[1])

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        logp, score = self._components(x, sigma)
        w = torch.softmax(logp, dim=1)                                       # posterior over modes
        return (w[..., None] * score).sum(1).to(x.dtype)


@torch.no_grad()
def score_error(score_model, analytic, data, schedule, ts, n: int, generator: torch.Generator) -> list:
    """The p_t-weighted score error at each t in ``ts``, by Monte Carlo with n exact draws x ~ p_t.

    weighted(t) = E_{x ~ p_t} sigma_t^2 |s_theta(x, sigma_t) - s*(x, sigma_t)|^2  (sum over atoms);
    its mean over t ~ U(0, 1) is the excess of the sigma^2-weighted DSM loss over its minimum.
    reference(t) = E sigma_t^2 |s*|^2 (the error of the zero score), relative = weighted / reference.
    """
    from .data.toy import wrap

    rows = []
    for t in ts:
        sigma = float(schedule.sigma(torch.tensor(float(t), dtype=torch.float64)))
        x0 = data.sample(n, generator, dtype=torch.float64)
        z = torch.randn(x0.shape, generator=generator, dtype=torch.float64, device=generator.device)
        x = wrap(x0 + sigma * z)
        sig = torch.full((n,), sigma, dtype=torch.float64)
        s_true = analytic(x, sig)
        diff2 = ((score_model(x, sig).double() - s_true) ** 2).sum(-1).mean()
        ref = (s_true ** 2).sum(-1).mean()
        rows.append({"t": float(t), "sigma": sigma, "weighted": float(sigma ** 2 * diff2),
                     "reference": float(sigma ** 2 * ref), "relative": float(diff2 / ref.clamp_min(1e-300))})
    return rows
