"""Interpolant processes x_t = alpha(t) x0 + sigma(t) x1 (docs/maths.md).

x0 is the data, x1 ~ N(0, C) is white or GRF noise (model_code.noise), t in [0, 1] with
the data at t = 0. Each schedule is a small object with ``alpha(t)``, ``sigma(t)``,
``d_alpha(t)``, ``d_sigma(t)`` (element-wise in t, torch tensors) and ``__call__(t)``
returning all four as a :class:`Coefficients` dataclass (facebookresearch/flow_matching
style). Broadcasting against a field ``(B, C, H, W)`` (or any rank) goes through
:func:`expand_like` only.

Schedules (all have alpha' <= 0 < sigma' and alpha sigma' - sigma alpha' > 0 on (0, 1)):

* ``RectifiedFlow``  alpha = 1 - t,           sigma = t
* ``Cosine``         alpha = cos(pi t / 2),   sigma = sin(pi t / 2)
* ``LinearVP``       alpha = exp(-B(t) / 2),  sigma = sqrt(1 - alpha^2),
                     B(t) = int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2
* ``VE``             alpha = 1,               sigma = sigma_min^(1-t) sigma_max^t

Endpoints: sigma(0) = 0 for the first three (x_t is the data exactly; d_sigma of LinearVP
is infinite there), alpha(1) = 0 for RectifiedFlow and Cosine (x_t is pure noise). VE
has sigma(0) = sigma_min > 0. Conversions between prediction types (prediction.py) divide
by alpha or sigma, so they are meaningful on t in [t_eps, 1 - t_eps] only.

``InterpolantProcess`` (at the end) puts a schedule, a noise and the prediction types behind
the Process protocol (processes/base.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import torch

from .base import Draw, Process, rows

TimeLike = Union[float, torch.Tensor]


def expand_like(v: TimeLike, like: torch.Tensor) -> torch.Tensor:
    """``v`` (a number, a 0-d tensor or a batch ``(B,)``) reshaped to ``(B, 1, ..., 1)`` so it
    broadcasts against ``like`` ``(B, ...)``, on ``like``'s device and dtype. The only place
    where the rank of a field is used."""
    v = torch.as_tensor(v, device=like.device, dtype=like.dtype)
    if v.dim() == 0:
        return v
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def _as_time(t: TimeLike) -> torch.Tensor:
    """t as a float64 tensor (coefficients are computed in float64, cast by expand_like)."""
    if isinstance(t, torch.Tensor):
        return t.to(dtype=torch.float64)
    return torch.as_tensor(t, dtype=torch.float64)


@dataclass
class Coefficients:
    """alpha(t), sigma(t) and their time derivatives, each shaped like t."""

    alpha: torch.Tensor
    sigma: torch.Tensor
    d_alpha: torch.Tensor
    d_sigma: torch.Tensor

    def expand(self, like: torch.Tensor) -> "Coefficients":
        """All four broadcast against a field ``like`` (see :func:`expand_like`)."""
        return Coefficients(*(expand_like(c, like) for c in (self.alpha, self.sigma, self.d_alpha, self.d_sigma)))


class Interpolant:
    """Base class: subclasses define alpha, sigma, d_alpha, d_sigma of a float64 tensor t."""

    name = "interpolant"

    def alpha(self, t: TimeLike) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, t: TimeLike) -> torch.Tensor:
        raise NotImplementedError

    def d_alpha(self, t: TimeLike) -> torch.Tensor:
        raise NotImplementedError

    def d_sigma(self, t: TimeLike) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, t: TimeLike) -> Coefficients:
        t = _as_time(t)
        return Coefficients(self.alpha(t), self.sigma(t), self.d_alpha(t), self.d_sigma(t))

    def coefficients(self, t: TimeLike, like: torch.Tensor) -> Coefficients:
        """The four coefficients at ``t`` broadcast against the field ``like``."""
        return self(t).expand(like)

    def sample_xt(self, x0: torch.Tensor, x1: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """x_t = alpha(t) x0 + sigma(t) x1."""
        c = self.coefficients(t, x0)
        return c.alpha * x0 + c.sigma * x1

    def velocity(self, x0: torch.Tensor, x1: torch.Tensor, t: TimeLike) -> torch.Tensor:
        """d/dt x_t along the pair: alpha'(t) x0 + sigma'(t) x1."""
        c = self.coefficients(t, x0)
        return c.d_alpha * x0 + c.d_sigma * x1

    def describe(self) -> dict:
        return {"type": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.describe().items() if k != "type")
        return f"{type(self).__name__}({args})"


class RectifiedFlow(Interpolant):
    """alpha = 1 - t, sigma = t (straight paths; functional flow matching with GRF noise)."""

    name = "rectified_flow"

    def alpha(self, t):
        return 1.0 - _as_time(t)

    def sigma(self, t):
        return _as_time(t).clone()

    def d_alpha(self, t):
        return torch.full_like(_as_time(t), -1.0)

    def d_sigma(self, t):
        return torch.ones_like(_as_time(t))


class Cosine(Interpolant):
    """alpha = cos(pi t / 2), sigma = sin(pi t / 2) (variance preserving: alpha^2 + sigma^2 = 1)."""

    name = "cosine"

    def alpha(self, t):
        return torch.cos(0.5 * math.pi * _as_time(t))

    def sigma(self, t):
        return torch.sin(0.5 * math.pi * _as_time(t))

    def d_alpha(self, t):
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * _as_time(t))

    def d_sigma(self, t):
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * _as_time(t))


class LinearVP(Interpolant):
    """The VP SDE of Song et al. (2021) with linear beta(t) = beta_min + t (beta_max - beta_min).

    alpha = exp(-B / 2), B = int_0^t beta; sigma = sqrt(1 - alpha^2) = sqrt(-expm1(-B));
    alpha' = -beta alpha / 2; sigma' = beta alpha^2 / (2 sigma) (infinite at t = 0, where
    sigma is clamped to ``eps`` to stay finite). alpha(1) = exp(-(beta_min + beta_max) / 4)
    is small but not zero.
    """

    name = "linear_vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-12):
        beta_min, beta_max = float(beta_min), float(beta_max)
        if not (0.0 <= beta_min <= beta_max) or not math.isfinite(beta_max) or beta_max <= 0:
            raise ValueError(f"LinearVP: need 0 <= beta_min <= beta_max, beta_max > 0; got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max, self.eps = beta_min, beta_max, float(eps)

    def beta(self, t):
        return self.beta_min + _as_time(t) * (self.beta_max - self.beta_min)

    def integral_beta(self, t):
        t = _as_time(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t ** 2

    def alpha(self, t):
        return torch.exp(-0.5 * self.integral_beta(t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(-self.integral_beta(t)))

    def d_alpha(self, t):
        return -0.5 * self.beta(t) * self.alpha(t)

    def d_sigma(self, t):
        return 0.5 * self.beta(t) * self.alpha(t) ** 2 / self.sigma(t).clamp(min=self.eps)

    def describe(self):
        return {"type": self.name, "beta_min": self.beta_min, "beta_max": self.beta_max}


class VE(Interpolant):
    """alpha = 1, sigma = sigma_min^(1 - t) sigma_max^t (geometric, as the NCSN levels).

    ``t_from_sigma`` maps a noise level (e.g. from the EDM log-normal sampler) back to t.
    """

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        sigma_min, sigma_max = float(sigma_min), float(sigma_max)
        if not (0.0 < sigma_min < sigma_max) or not math.isfinite(sigma_max):
            raise ValueError(f"VE: need 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self._log_ratio = math.log(sigma_max / sigma_min)

    def alpha(self, t):
        return torch.ones_like(_as_time(t))

    def sigma(self, t):
        return self.sigma_min * torch.exp(self._log_ratio * _as_time(t))

    def d_alpha(self, t):
        return torch.zeros_like(_as_time(t))

    def d_sigma(self, t):
        return self._log_ratio * self.sigma(t)

    def t_from_sigma(self, sigma: TimeLike) -> torch.Tensor:
        """The t with sigma(t) = sigma (outside [0, 1] when sigma is outside [sigma_min, sigma_max])."""
        return torch.log(_as_time(sigma) / self.sigma_min) / self._log_ratio

    def describe(self):
        return {"type": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


INTERPOLANTS = {
    "rectified_flow": RectifiedFlow,
    "cosine": Cosine,
    "linear_vp": LinearVP,
    "ve": VE,
}


def build_interpolant(name: str, **params) -> Interpolant:
    """``INTERPOLANTS[name](**params)`` with a clear error for an unknown name or parameter."""
    if name not in INTERPOLANTS:
        raise ValueError(f"unknown interpolant {name!r}; choose one of {', '.join(INTERPOLANTS)}")
    try:
        return INTERPOLANTS[name](**params)
    except TypeError as exc:
        raise ValueError(f"interpolant {name!r}: bad parameters {sorted(params)} ({exc})") from None


# --------------------------------------------------------------------------- the Process

def interpolant_from_description(desc) -> Interpolant:
    """An Interpolant from its ``describe()`` (or its name)."""
    if isinstance(desc, Interpolant):
        return desc
    if isinstance(desc, str):
        return build_interpolant(desc)
    params = dict(desc)
    return build_interpolant(params.pop("type"), **params)


class InterpolantProcess(Process):
    """An interpolant x_t = alpha(t) x0 + sigma(t) x1, x1 ~ N(0, C) from ``noise``, as a Process.

    wrap:   denoiser.InterpolantDenoiser: the backbone F(x_t, t) predicts ``model_output``
            (x0, noise, score, velocity or v) and is seen by the samplers as a VE denoiser
            in s = sigma(t) / alpha(t).
    loss:   |convert(F(x_t, t), model_output -> loss_target) - target(x0, x1, t)|^2 averaged over
            points (losses.interpolant_loss), t from ``time_sampler`` clamped to [t_min, t_max]
            (conversions divide by alpha or sigma, which vanish at the ends of [0, 1]).
    sample: any sampler of samplers.SAMPLERS on a VE grid in s (default: EDM grid from
            s(t_max) to s(t_min), ``steps`` levels, with Heun's method).
    """

    name = "interpolant"

    def __init__(self, noise, interpolant="rectified_flow", model_output: str = "velocity",
                 loss_target: str = "velocity", time_sampler: str = "uniform", t_min: float = 1e-3,
                 t_max: float = 1 - 1e-3):
        from ..prediction import KINDS
        from ..schedules import TIME_SAMPLERS

        for what, kind in (("model_output", model_output), ("loss_target", loss_target)):
            if kind not in KINDS:
                raise ValueError(f"unknown {what} {kind!r}; choose one of {', '.join(KINDS)}")
        if time_sampler not in TIME_SAMPLERS:
            raise ValueError(f"unknown time_sampler {time_sampler!r}; choose one of {', '.join(TIME_SAMPLERS)}")
        if not 0.0 <= t_min < t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got {t_min}, {t_max}")
        self.noise = noise
        self.interpolant = interpolant_from_description(interpolant)
        self.model_output, self.loss_target, self.time_sampler = model_output, loss_target, time_sampler
        self.t_min, self.t_max = float(t_min), float(t_max)

    def wrap(self, net):
        from ..denoiser import InterpolantDenoiser

        return InterpolantDenoiser(net, self.interpolant, self.model_output, self.t_min, self.t_max)

    def loss(self, model, batch, generator, shard: slice = slice(None), step: int = 0) -> Draw:
        from ..losses import interpolant_loss
        from ..schedules import sample_time

        u = batch.x
        t = sample_time(self.time_sampler, len(u), generator).clamp(self.t_min, self.t_max).to(u.device)
        x1 = self.noise.sample(len(u), tuple(u.shape[2:]), generator, device=u.device, dtype=u.dtype)
        loss = interpolant_loss(model, u[shard], x1[shard], t[shard], self.loss_target, rows(batch.labels, shard))
        return Draw(loss, {})

    def ve_sigmas(self, steps: int = 32, rho: float = 7.0) -> torch.Tensor:
        """EDM grid of ``steps`` VE levels s = sigma(t) / alpha(t) from t_max down to t_min."""
        from ..schedules import edm_sigmas

        s_max = float(self.interpolant.sigma(self.t_max) / self.interpolant.alpha(self.t_max))
        s_min = float(self.interpolant.sigma(self.t_min) / self.interpolant.alpha(self.t_min))
        return edm_sigmas(s_max, s_min, int(steps), rho)

    def sample(self, model, seeds, shape, device, labels=None, progress: bool = False, sampler: str = "heun_ode",
               sigmas=None, steps: int = 32, batch_size=None, **options):
        """Samples with a VE sampler through the InterpolantDenoiser (see processes.ve.sample_denoiser).

        ``sigmas`` is the VE grid in s (default: ``ve_sigmas(steps)``).
        """
        from .ve import sample_denoiser

        grid = self.ve_sigmas(steps) if sigmas is None else torch.as_tensor(sigmas, dtype=torch.float64)
        return sample_denoiser(model, self.noise, grid, seeds, shape, device, labels, progress, sampler, batch_size,
                               **options)

    def describe(self) -> dict:
        return {"type": self.name, "noise": self.noise.describe(), "interpolant": self.interpolant.describe(),
                "model_output": self.model_output, "loss_target": self.loss_target,
                "time_sampler": self.time_sampler, "t_min": self.t_min, "t_max": self.t_max}
