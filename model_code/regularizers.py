"""The toy problem's training loss and the regularizers added to it.

Notation: x in [0,1)^N, sigma = sigma(t) from the schedule, tau = sigma^2, s_theta(x, sigma)
the score model, s*(x, sigma) the analytic score (toy_score.py), k the wrapped Gaussian
kernel. All losses are averages over the batch of sums over atoms.

* Denoising score matching (always on), sigma^2-weighted:
      L_DSM = E_{t, x0, z} | sigma (s_theta(x_t, sigma) - grad log k_{sigma^2}(x_t - x0)) |^2,
      x_t = wrap(x0 + sigma z).
* none: nothing is added.
* analytic_regression (oracle):  L = E | sigma (s_theta(x_t, sigma) - s*(x_t, sigma)) |^2.
* fokker_planck: the score Fokker-Planck equation of the VE SDE dx = g dW (Lai et al. 2023).
  p obeys d_t p = (g^2/2) Lap p, hence d_t log p = (g^2/2)(Lap log p + |grad log p|^2) and,
  in tau = sigma^2 (d tau = g^2 dt), the score obeys
      r := d_tau s - (1/2) grad_x( div_x s + |s|^2 ) = 0.
  div_x s is exact (N backward passes) or Hutchinson's v . grad_x(v . s), v Rademacher,
  which is unbiased, and r is linear in it, so E_v r_hutch = r_exact. Weighting:
      sigma: L = E | sigma^3 r |^2   (each noise level contributes O(1), like sigma^2-DSM)
      none:  L = E | g^2 r |^2 = E | d_t s - (g^2/2) grad(div s + |s|^2) |^2  (the published,
             unweighted residual in t; it grows like 1/sigma^2 and is dominated by small sigma).
* consistency (Daras et al. 2023, in score form): for t' < t the true scores satisfy
      s*(x, sigma_t) = E[ s*(X_{t'}, sigma_{t'}) | X_t = x ]
  (differentiate p_t = p_{t'} * k under the integral), where X_{t'} | X_t follows the
  reverse process. X_{t'} is drawn with n_steps Euler-Maruyama steps of the reverse SDE
  driven by a guide score (the model itself, no gradient through the trajectory) from
  M = n_samples copies of each x_t; with the two half-means a, b of s_theta(X_{t'}, sigma_{t'})
      L = E sigma_t^2 (s_theta(x, sigma_t) - a) . (s_theta(x, sigma_t) - b),
  whose expectation is exactly sigma_t^2 |s_theta(x, sigma_t) - E s_theta(X_{t'}, sigma_{t'})|^2
  (a plain squared mean would add the Monte-Carlo variance / M as a spurious penalty).
* consistency_analytic (oracle): the same, with the analytic score as the guide.
"""
from __future__ import annotations

import torch

from .data.toy import wrap
from .processes.wrapped_ve import reverse_sde_step

KINDS = ("none", "analytic_regression", "fokker_planck", "consistency", "consistency_analytic")
LAPLACIANS = ("exact", "hutchinson")
FP_WEIGHTINGS = ("sigma", "none")


def dsm_loss(score_model, process, x0: torch.Tensor, sigma: torch.Tensor, z: torch.Tensor):
    """sigma^2-weighted denoising score matching; returns (loss, x_t)."""
    xt = process.perturb(x0, sigma, z)
    target = process.conditional_score(xt, x0, sigma)
    err = sigma[:, None] * (score_model(xt, sigma) - target)
    return (err ** 2).sum(-1).mean(), xt


def analytic_regression(score_model, analytic, xt: torch.Tensor, sigma: torch.Tensor):
    """E | sigma (s_theta - s*) |^2 at the training points."""
    with torch.no_grad():
        target = analytic(xt, sigma)
    err = sigma[:, None] * (score_model(xt, sigma) - target)
    return (err ** 2).sum(-1).mean()


def _rademacher(shape, generator, dtype, device):
    return torch.randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1


def fokker_planck_residual(score_model, x: torch.Tensor, sigma: torch.Tensor, laplacian: str = "exact",
                           generator: torch.Generator | None = None, probe: torch.Tensor | None = None
                           ) -> torch.Tensor:
    """r = d s / d(sigma^2) - (1/2) grad_x (div_x s + |s|^2), shape (B, N), differentiable.

    Sample b's output depends only on (x_b, sigma_b), so gradients of batch sums give
    per-sample derivatives. ``probe`` fixes Hutchinson's v (else Rademacher from generator).
    """
    if laplacian not in LAPLACIANS:
        raise ValueError(f"unknown laplacian {laplacian!r}; choose one of {', '.join(LAPLACIANS)}")
    x = x.detach().requires_grad_(True)
    sigma = sigma.detach().to(x.dtype).requires_grad_(True)
    s = score_model(x, sigma)
    n = s.shape[1]
    grad = torch.autograd.grad
    # d s_i / d sigma, then d/d tau = (d/d sigma) / (2 sigma)
    ds_dsigma = torch.stack([grad(s[:, i].sum(), sigma, create_graph=True)[0] for i in range(n)], dim=1)
    ds_dtau = ds_dsigma / (2 * sigma[:, None])
    if laplacian == "exact":                       # div s = sum_i d s_i / d x_i
        div = sum(grad(s[:, i].sum(), x, create_graph=True)[0][:, i] for i in range(n))
    else:                                          # Hutchinson: v . J v, E[v v^T] = I
        v = _rademacher(x.shape, generator, x.dtype, x.device) if probe is None else probe.to(x)
        jv = grad((s * v).sum(), x, create_graph=True)[0]
        div = (jv * v).sum(-1)
    phi = div + (s ** 2).sum(-1)                   # Lap log p + |grad log p|^2
    grad_phi = grad(phi.sum(), x, create_graph=True)[0]
    return ds_dtau - 0.5 * grad_phi


def fokker_planck(score_model, xt: torch.Tensor, sigma: torch.Tensor, schedule, laplacian: str = "exact",
                  weighting: str = "sigma", generator: torch.Generator | None = None):
    """Weighted mean squared score Fokker-Planck residual at the training points."""
    if weighting not in FP_WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {', '.join(FP_WEIGHTINGS)}")
    r = fokker_planck_residual(score_model, xt, sigma, laplacian, generator)
    if weighting == "sigma":
        w = sigma.to(r) ** 3
    else:                                          # residual in t: g^2 r, g^2 = d sigma^2 / dt
        w = schedule.g2(schedule.t_of_sigma(sigma.double())).to(r)
    return ((w[:, None] * r) ** 2).sum(-1).mean()


def consistency(score_model, guide, xt: torch.Tensor, t: torch.Tensor, schedule, generator: torch.Generator,
                delta_t: float = 0.1, n_steps: int = 4, n_samples: int = 4):
    """Unbiased consistency penalty (see the module docstring); n_samples must be even >= 2."""
    if n_samples < 2 or n_samples % 2:
        raise ValueError(f"consistency needs an even n_samples >= 2, got {n_samples}")
    b, n = xt.shape
    t = t.to(torch.float64)
    t_end = (t - delta_t).clamp_min(0.0)
    x = xt.detach().repeat_interleave(n_samples, 0)
    t_rep, t_end_rep = t.repeat_interleave(n_samples), t_end.repeat_interleave(n_samples)
    with torch.no_grad():                          # the trajectories carry no gradient
        for k in range(n_steps):
            ta = t_rep + (t_end_rep - t_rep) * (k / n_steps)
            tb = t_rep + (t_end_rep - t_rep) * ((k + 1) / n_steps)
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)
            x = reverse_sde_step(guide, x, schedule.sigma(ta).to(x.dtype), schedule.sigma(tb).to(x.dtype), z)
        x = wrap(x)
    sigma_t = schedule.sigma(t).to(xt.dtype)
    s_here = score_model(xt, sigma_t)
    s_there = score_model(x, schedule.sigma(t_end_rep).to(xt.dtype)).view(b, n_samples, n)
    a = s_there[:, : n_samples // 2].mean(1)
    c = s_there[:, n_samples // 2:].mean(1)
    return (sigma_t[:, None] ** 2 * (s_here - a) * (s_here - c)).sum(-1).mean()
