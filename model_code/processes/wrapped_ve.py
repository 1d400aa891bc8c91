"""Variance-exploding diffusion on the torus [0, 1)^N (the toy problem's process).

Forward:  x_t = wrap(x_0 + sigma(t) z),  z ~ N(0, I),  t in [0, 1] continuous,
i.e. the VE SDE dx = g(t) dW with g^2 = d sigma^2 / dt, followed by wrapping. The
transition kernel is the wrapped Gaussian

    k_v(d) = sum_{n in Z} N(d + n; 0, v),   v = sigma(t)^2,

evaluated with images n = -K..K after reducing d to [-1/2, 1/2) (K chosen from the
largest variance so that the neglected images weigh less than exp(-18)).

Reverse: dx = -g^2 grad log p_t(x) dt + g dW_bar (SDE) or dx = -g^2/2 grad log p_t dt
(probability-flow ODE). Because every score on the torus is 1-periodic, integrating
without wrapping and wrapping once at the end gives the same path as wrapping after
every step, so the generic samplers of samplers.py (written in sigma) are reused
through ``TorusDenoiser``: D(x, sigma) = x + sigma^2 s(x, sigma).

``WrappedVEProcess`` puts the process behind the Process protocol (processes/base.py);
``regularizers.Regularized`` adds the toy's regularizers to its loss.
"""
from __future__ import annotations

import math

import torch

from .. import samplers as generic_samplers
from ..data.toy import torus_delta, wrap
from .base import Draw, Process

SCHEDULES = ("geometric", "linear")
PRIORS = ("uniform", "exact")
GENERATION_SAMPLERS = ("euler_maruyama", "heun_ode", "euler_ode")


# --------------------------------------------------------------------------- sigma(t)

class SigmaSchedule:
    """sigma(t) on t in [0, 1], increasing from sigma_min to sigma_max.

    * geometric: sigma = sigma_min (sigma_max / sigma_min)^t,  sigma' = sigma log(sigma_max / sigma_min)
    * linear:    sigma = sigma_min + t (sigma_max - sigma_min),  sigma' = sigma_max - sigma_min
    g^2(t) = d sigma^2 / dt = 2 sigma sigma'.
    """

    def __init__(self, kind: str = "geometric", sigma_min: float = 0.005, sigma_max: float = 1.0):
        if kind not in SCHEDULES:
            raise ValueError(f"unknown sigma schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.kind, self.sigma_min, self.sigma_max = kind, float(sigma_min), float(sigma_max)

    def sigma(self, t):
        t = torch.as_tensor(t)
        if self.kind == "geometric":
            return self.sigma_min * (self.sigma_max / self.sigma_min) ** t
        return self.sigma_min + t * (self.sigma_max - self.sigma_min)

    def dsigma_dt(self, t):
        t = torch.as_tensor(t)
        if self.kind == "geometric":
            return self.sigma(t) * math.log(self.sigma_max / self.sigma_min)
        return torch.full_like(t, self.sigma_max - self.sigma_min, dtype=torch.result_type(t, 1.0))

    def g2(self, t):
        """g^2 = d sigma^2 / dt."""
        return 2 * self.sigma(t) * self.dsigma_dt(t)

    def t_of_sigma(self, sigma):
        sigma = torch.as_tensor(sigma)
        if self.kind == "geometric":
            return torch.log(sigma / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)
        return (sigma - self.sigma_min) / (self.sigma_max - self.sigma_min)

    def grid(self, n_steps: int) -> torch.Tensor:
        """n_steps + 1 decreasing levels sigma(t_k), t_k = 1 - k / n_steps (float64)."""
        return self.sigma(torch.linspace(1.0, 0.0, int(n_steps) + 1, dtype=torch.float64))


# --------------------------------------------------------------------------- wrapped Gaussian

def n_images_for(var_max: float) -> int:
    """Images -K..K such that the first neglected one lies > 6 standard deviations away."""
    return int(math.ceil(6.0 * math.sqrt(float(var_max)) + 0.5))


def wrapped_gaussian(d: torch.Tensor, var, n_images: int | None = None):
    """log k_v(d) and d/dd log k_v(d) of the wrapped Gaussian, elementwise.

    log k_v(d) = logsumexp_n [ -(d + n)^2 / (2 v) ] - log(2 pi v) / 2
    d/dd log k_v(d) = - sum_n w_n (d + n) / v,   w_n = softmax_n( -(d + n)^2 / (2 v) ).
    ``var`` broadcasts against d (e.g. shape (B, 1) for one variance per sample). The
    result is differentiable in d and var (autograd), as the Fokker-Planck residual needs.
    """
    var = torch.as_tensor(var, dtype=d.dtype, device=d.device)
    if n_images is None or n_images <= 0:
        n_images = n_images_for(float(var.detach().max()))
    d0 = torus_delta(d, torch.zeros((), dtype=d.dtype, device=d.device))
    shifts = torch.arange(-n_images, n_images + 1, dtype=d.dtype, device=d.device)
    y = d0[..., None] + shifts                                     # (..., 2K + 1)
    e = -y ** 2 / (2 * var[..., None])
    log_k = torch.logsumexp(e, dim=-1) - 0.5 * torch.log(2 * math.pi * var)
    score = -(torch.softmax(e, dim=-1) * y).sum(-1) / var
    return log_k, score


def uniform_deviation_bound(sigma_total: float, n_atoms: int) -> float:
    """Upper bound on max_x |p(x) - 1| for any mixture of products of wrapped Gaussians.

    One coordinate has density 1 + 2 sum_{k>=1} rho^{k^2} cos(2 pi k (y - m)), rho =
    exp(-2 pi^2 s^2), so it deviates from 1 by at most e1 = 2 sum_k rho^{k^2}; a product
    of N such factors by (1 + e1)^N - 1, and a mixture by no more than its worst part.
    """
    rho = math.exp(-2 * math.pi ** 2 * float(sigma_total) ** 2)
    e1 = 2 * sum(rho ** (k * k) for k in range(1, 50))
    return (1 + e1) ** int(n_atoms) - 1


# --------------------------------------------------------------------------- the process

class WrappedVE:
    """Wrapped VE diffusion: perturbation, the DSM target, the prior and generation."""

    def __init__(self, schedule: SigmaSchedule, prior: str = "uniform", n_images: int = 0):
        if prior not in PRIORS:
            raise ValueError(f"unknown prior {prior!r}; choose one of {', '.join(PRIORS)}")
        self.schedule = schedule
        self.prior = prior
        self.n_images = int(n_images) if n_images else n_images_for(schedule.sigma_max ** 2)

    def perturb(self, x0: torch.Tensor, sigma: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x_t = wrap(x0 + sigma z), sigma of shape (B,)."""
        return wrap(x0 + sigma[:, None].to(x0) * z)

    def conditional_score(self, xt: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """grad_x log p(x_t | x_0) = wrapped-Gaussian kernel score of x_t - x_0, variance sigma^2."""
        return wrapped_gaussian(xt - x0, sigma[:, None].to(xt) ** 2, self.n_images)[1]

    def sample_prior(self, n: int, n_atoms: int, generator: torch.Generator, data=None,
                     dtype=torch.float64) -> torch.Tensor:
        """x_1 ~ p_1: U([0,1)^N) (uniform; accurate when uniform_deviation_bound is small),
        or exactly wrap(x_0 + sigma_max z) with x_0 from ``data`` (exact)."""
        if self.prior == "uniform":
            return torch.rand(n, n_atoms, generator=generator, dtype=dtype, device=generator.device)
        if data is None:
            raise ValueError("the exact prior needs the data sampler")
        x0 = data.sample(n, generator, dtype=dtype)
        z = torch.randn(n, n_atoms, generator=generator, dtype=dtype, device=generator.device)
        return wrap(x0 + self.schedule.sigma_max * z)


# --------------------------------------------------------------------------- sampling

class TorusDenoiser:
    """Adapter giving a score model the denoiser interface of samplers.py.

    score(x, sigma) = s(x, sigma) and D(x, sigma) = x + sigma^2 s(x, sigma) (Tweedie in the
    unwrapped chart), so (x - D) / sigma = -sigma s is the VE probability-flow drift in sigma.
    ``score_model(x, sigma)`` takes x (B, N) and sigma (B,) and returns (B, N).
    """

    def __init__(self, score_model):
        self.score_model = score_model

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self.score_model(x, s).to(x.dtype)

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        return x + float(sigma) ** 2 * self.score(x, sigma)


@torch.no_grad()
def generate(score_model, process: WrappedVE, n: int, n_atoms: int, generator: torch.Generator,
             sampler: str = "euler_maruyama", n_steps: int = 500, data=None,
             dtype=torch.float64) -> torch.Tensor:
    """n samples on the torus from the reverse process driven by ``score_model``.

    euler_maruyama: the reverse SDE from sigma_max to sigma_min without a final denoising
    step, so the output follows p_{t=0} (data convolved with N(0, sigma_min^2)).
    heun_ode / euler_ode: the probability-flow ODE down to sigma_min, then the samplers'
    last Euler step to sigma = 0 (x <- x + sigma_min^2 s), approximately p_data.
    All draws come from ``generator``.
    """
    if sampler not in GENERATION_SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(GENERATION_SAMPLERS)}")
    x = process.sample_prior(n, n_atoms, generator, data=data, dtype=dtype)
    sigmas = process.schedule.grid(n_steps)

    def noise_fn():
        return torch.randn(x.shape, generator=generator, dtype=dtype, device=generator.device)

    fn = getattr(generic_samplers, sampler)
    options = {"final_denoise": False} if sampler == "euler_maruyama" else {}
    out = fn(TorusDenoiser(score_model), x, sigmas, noise_fn, **options)
    return wrap(out)


def reverse_sde_step(score_fn, x: torch.Tensor, sigma_cur: torch.Tensor, sigma_next: torch.Tensor,
                     z: torch.Tensor) -> torch.Tensor:
    """One Euler-Maruyama step of the reverse VE SDE with one noise level per sample:

    x <- x + (sigma_cur^2 - sigma_next^2) s(x, sigma_cur) + sqrt(sigma_cur^2 - sigma_next^2) z.
    (Same update as samplers.euler_maruyama, which takes one scalar level per step.)
    """
    dvar = (sigma_cur ** 2 - sigma_next ** 2).clamp_min(0)[:, None].to(x)
    return x + dvar * score_fn(x, sigma_cur) + dvar.sqrt() * z


# --------------------------------------------------------------------------- the Process

def schedule_from_description(desc) -> SigmaSchedule:
    if isinstance(desc, SigmaSchedule):
        return desc
    return SigmaSchedule(desc.get("kind", "geometric"), desc.get("sigma_min", 0.005), desc.get("sigma_max", 1.0))


class WrappedVEProcess(WrappedVE, Process):
    """The toy's wrapped VE diffusion as a Process.

    wrap:   the network itself: the score model s(x, sigma) (x (B, n_atoms), sigma (B,));
    loss:   sigma^2-weighted denoising score matching (regularizers.dsm_loss) with
            t ~ U(t_min, 1), sigma = sigma(t), x_t = wrap(x_0 + sigma z);
    sample: the reverse SDE (or a probability-flow ODE) from the prior (``generate``), each
            sample driven by its own seed's generator.
    """

    name = "wrapped_ve"

    def __init__(self, schedule, prior: str = "uniform", n_images: int = 0, t_min: float = 0.0, n_atoms: int = 2):
        super().__init__(schedule_from_description(schedule), prior, n_images)
        if not 0.0 <= t_min < 1.0:
            raise ValueError(f"t_min must lie in [0, 1), got {t_min}")
        self.t_min, self.n_atoms = float(t_min), int(n_atoms)
        self._n_images_given = int(n_images)

    def wrap(self, net):
        return net

    def draw(self, model, x0: torch.Tensor, generator: torch.Generator, shard: slice = slice(None)):
        """(DSM loss, x_t, t, sigma) on the rows ``shard``; t and z are drawn for all of x0."""
        from ..regularizers import dsm_loss

        device = x0.device
        t = self.t_min + (1 - self.t_min) * torch.rand(len(x0), generator=generator, dtype=torch.float64,
                                                       device=generator.device)
        t = t.to(device)
        sigma = self.schedule.sigma(t).float()
        z = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype).to(device)
        loss, xt = dsm_loss(model, self, x0[shard], sigma[shard], z[shard])
        return loss, xt, t[shard], sigma[shard]

    def loss(self, model, batch, generator, shard: slice = slice(None), step: int = 0) -> Draw:
        loss, _, _, _ = self.draw(model, batch.x, generator, shard)
        return Draw(loss, {"dsm": float(loss.detach())})

    @torch.no_grad()
    def sample(self, model, seeds, shape=None, device="cpu", labels=None, progress: bool = False,
               sampler: str = "euler_maruyama", n_steps: int = 500, data=None, dtype=torch.float64):
        """Samples on the torus; sample k equals ``generate(model, self, 1, n_atoms, Generator(seeds[k]))``.

        ``data`` (the TwoAtomData) is needed by the exact prior only.
        """
        if labels is not None:
            raise ValueError("the toy process has no class labels")
        if sampler not in GENERATION_SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(GENERATION_SAMPLERS)}")
        n_atoms = self.n_atoms if shape is None else int(tuple(shape)[-1])
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        if not gens:
            return torch.empty(0, n_atoms)
        x = torch.cat([self.sample_prior(1, n_atoms, g, data=data, dtype=dtype) for g in gens]).to(device)

        def noise_fn():
            return torch.cat([torch.randn(1, n_atoms, generator=g, dtype=dtype) for g in gens]).to(device)

        fn = getattr(generic_samplers, sampler)
        options = {"final_denoise": False} if sampler == "euler_maruyama" else {}
        out = fn(TorusDenoiser(model), x, self.schedule.grid(n_steps), noise_fn, progress=progress, **options)
        return wrap(out).float().cpu()

    def describe(self) -> dict:
        return {"type": self.name,
                "schedule": {"kind": self.schedule.kind, "sigma_min": self.schedule.sigma_min,
                             "sigma_max": self.schedule.sigma_max},
                "prior": self.prior, "n_images": self._n_images_given, "t_min": self.t_min, "n_atoms": self.n_atoms}
