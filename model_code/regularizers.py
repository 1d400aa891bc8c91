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

``Regularized(process, kind, ...)`` wraps the toy's process (processes.wrapped_ve.WrappedVEProcess)
so that its loss is L_DSM + weight * regularizer, behind the same Process protocol.
"""
from __future__ import annotations

import torch

from typing import Optional

from .data.toy import wrap
from .processes.base import Draw, Process
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
                  weighting: str = "sigma", generator: torch.Generator | None = None,
                  probe: torch.Tensor | None = None):
    """Weighted mean squared score Fokker-Planck residual at the training points."""
    if weighting not in FP_WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {', '.join(FP_WEIGHTINGS)}")
    r = fokker_planck_residual(score_model, xt, sigma, laplacian, generator, probe)
    if weighting == "sigma":
        w = sigma.to(r) ** 3
    else:                                          # residual in t: g^2 r, g^2 = d sigma^2 / dt
        w = schedule.g2(schedule.t_of_sigma(sigma.double())).to(r)
    return ((w[:, None] * r) ** 2).sum(-1).mean()


def consistency(score_model, guide, xt: torch.Tensor, t: torch.Tensor, schedule, generator: torch.Generator,
                delta_t: float = 0.1, n_steps: int = 4, n_samples: int = 4, noise: torch.Tensor | None = None):
    """Unbiased consistency penalty (see the module docstring); n_samples must be even >= 2.

    ``noise`` (n_steps, B, n_samples, N) fixes the reverse-SDE draws (else drawn from generator step by step).
    """
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
            if noise is None:
                z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)
            else:
                z = noise[k].reshape(x.shape).to(x)
            x = reverse_sde_step(guide, x, schedule.sigma(ta).to(x.dtype), schedule.sigma(tb).to(x.dtype), z)
        x = wrap(x)
    sigma_t = schedule.sigma(t).to(xt.dtype)
    s_here = score_model(xt, sigma_t)
    s_there = score_model(x, schedule.sigma(t_end_rep).to(xt.dtype)).view(b, n_samples, n)
    a = s_there[:, : n_samples // 2].mean(1)
    c = s_there[:, n_samples // 2:].mean(1)
    return (sigma_t[:, None] ** 2 * (s_here - a) * (s_here - c)).sum(-1).mean()


# --------------------------------------------------------------------------- the objective wrapper

CONSISTENCY_DEFAULTS = {"delta_t": 0.1, "n_steps": 4, "n_samples": 4}


class Regularized(Process):
    """A process whose loss is L_DSM + weight * regularizer (the toy's regularizers, module docstring).

    process:   the inner process (WrappedVEProcess: its ``draw`` gives the DSM loss and x_t, t, sigma);
    kind:      none | analytic_regression | fokker_planck | consistency | consistency_analytic;
    weight:    the regularizer's weight; burn_in: optimiser steps of plain DSM first;
    n_points:  the regularizer is evaluated on the first n_points rows of the batch (0: all);
    analytic:  the exact score (toy_score.AnalyticScore), needed by the oracle kinds;
    laplacian, weighting: Fokker-Planck settings; consistency: {delta_t, n_steps, n_samples}.

    Shards. With B rows, P the regularized rows and s this rank's rows, a shard's loss is
        mean_{i in s} dsm_i + weight * (B / |s|) (1 / |P|) sum_{j in P and s} r_j,
    and every random number of the regularizer (Hutchinson probes, reverse-SDE noise) is drawn
    for all of P, so the shard losses weighted by |s| / B add up to the full-batch loss
    mean_i dsm_i + weight * mean_{j in P} r_j. wrap, sample, fit, state_dict and describe are
    the inner process's (describe adds a "regularizer" entry).
    """

    def __init__(self, process, kind: str = "none", weight: float = 1.0, burn_in: int = 0, n_points: int = 64,
                 analytic=None, laplacian: str = "exact", weighting: str = "sigma",
                 consistency: Optional[dict] = None):
        if kind not in KINDS:
            raise ValueError(f"unknown regularizer {kind!r}; choose one of {', '.join(KINDS)}")
        if laplacian not in LAPLACIANS:
            raise ValueError(f"unknown laplacian {laplacian!r}; choose one of {', '.join(LAPLACIANS)}")
        if weighting not in FP_WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose one of {', '.join(FP_WEIGHTINGS)}")
        if weight < 0 or burn_in < 0 or n_points < 0:
            raise ValueError("weight, burn_in and n_points must be >= 0")
        unknown = sorted(set(consistency or {}) - set(CONSISTENCY_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown consistency option(s) {', '.join(unknown)}; "
                             f"accepted: {', '.join(CONSISTENCY_DEFAULTS)}")
        c = {**CONSISTENCY_DEFAULTS, **(consistency or {})}
        if c["n_samples"] < 2 or c["n_samples"] % 2 or c["n_steps"] < 1 or not 0 < c["delta_t"] <= 1:
            raise ValueError("consistency needs 0 < delta_t <= 1, n_steps >= 1 and an even n_samples >= 2")
        if kind in ("analytic_regression", "consistency_analytic") and analytic is None:
            raise ValueError(f"regularizer {kind!r} needs the analytic score")
        self.process = process
        self.name = process.name
        self.kind, self.weight, self.burn_in, self.n_points = kind, float(weight), int(burn_in), int(n_points)
        self.analytic, self.laplacian, self.weighting = analytic, laplacian, weighting
        self.consistency = {"delta_t": float(c["delta_t"]), "n_steps": int(c["n_steps"]),
                            "n_samples": int(c["n_samples"])}

    def __getattr__(self, name):
        # schedule, prior, n_atoms, ...: the inner process's
        inner = self.__dict__.get("process")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def active(self, step: int) -> bool:
        return self.kind != "none" and step >= self.burn_in and self.weight > 0

    def loss(self, model, batch, generator, shard: slice = slice(None), step: int = 0) -> Draw:
        x0 = batch.x
        b = len(x0)
        dsm, xt, t, sigma = self.process.draw(model, x0, generator, shard)
        reg = torch.zeros((), dtype=dsm.dtype, device=dsm.device)
        if self.active(step):
            n_p = min(self.n_points, b) if self.n_points else b
            draws = self._draws(n_p, x0, generator)
            index = torch.arange(b)[shard]                    # this shard's rows of the batch
            local = torch.nonzero(index < n_p).squeeze(1)      # its regularized rows, within the shard
            if len(local):
                picked = index[local]                          # the same rows, within the batch
                mean = self._regularizer(model, xt[local.to(xt.device)].detach(), t[local.to(t.device)],
                                         sigma[local.to(sigma.device)], draws, picked, generator)
                reg = mean * (len(local) / n_p) * (b / max(1, len(index)))
        loss = dsm + self.weight * reg
        return Draw(loss, {"dsm": float(dsm.detach()), "regularizer": float(reg.detach()),
                           "total": float(loss.detach())})

    def _draws(self, n_p: int, x0: torch.Tensor, generator: torch.Generator) -> Optional[torch.Tensor]:
        """The regularizer's random numbers for all n_p regularized rows (None when it has none)."""
        n = x0.shape[1]
        if self.kind == "fokker_planck" and self.laplacian == "hutchinson":
            return _rademacher((n_p, n), generator, x0.dtype, generator.device)
        if self.kind in ("consistency", "consistency_analytic"):
            c = self.consistency
            return torch.randn((c["n_steps"], n_p, c["n_samples"], n), generator=generator, dtype=x0.dtype,
                               device=generator.device)
        return None

    def _regularizer(self, model, xt, t, sigma, draws, picked, generator):
        """Mean regularizer over the given rows; ``picked`` indexes their draws."""
        schedule = self.process.schedule
        if self.kind == "analytic_regression":
            return analytic_regression(model, self.analytic, xt, sigma)
        if self.kind == "fokker_planck":
            probe = None if draws is None else draws[picked.to(draws.device)].to(xt)
            return fokker_planck(model, xt, sigma, schedule, self.laplacian, self.weighting, generator, probe)
        guide = self.analytic if self.kind == "consistency_analytic" else model
        c = self.consistency
        return consistency(model, guide, xt, t, schedule, generator, c["delta_t"], c["n_steps"], c["n_samples"],
                           noise=draws[:, picked.to(draws.device)])

    # ------------------------------------------------------------------ the inner process's

    def wrap(self, net):
        return self.process.wrap(net)

    def sample(self, model, seeds, shape, device, labels=None, progress: bool = False, **options):
        return self.process.sample(model, seeds, shape, device, labels=labels, progress=progress, **options)

    def fit(self, train) -> None:
        self.process.fit(train)

    def state_dict(self) -> dict:
        return self.process.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.process.load_state_dict(state)

    def describe(self) -> dict:
        analytic = None
        if self.analytic is not None and hasattr(self.analytic, "describe"):
            analytic = self.analytic.describe()
        return {**self.process.describe(),
                "regularizer": {"kind": self.kind, "weight": self.weight, "burn_in": self.burn_in,
                                "n_points": self.n_points, "analytic": analytic, "laplacian": self.laplacian,
                                "weighting": self.weighting, "consistency": dict(self.consistency)}}
