"""Noise-level schedules (standard deviations, decreasing)."""
import math

import torch


def sigma_levels(sigma_1: float, sigma_L: float, L: int, schedule: str = "geometric") -> torch.Tensor:
    """sigma_1 > ... > sigma_L as float64, geometric (NCSN) or linear spacing."""
    if not sigma_1 > sigma_L > 0:
        raise ValueError(f"need sigma_1 > sigma_L > 0, got {sigma_1}, {sigma_L}")
    if L == 1:
        return torch.tensor([float(sigma_1)], dtype=torch.float64)
    if schedule == "geometric":
        return torch.exp(torch.linspace(math.log(sigma_1), math.log(sigma_L), L, dtype=torch.float64))
    if schedule == "linear":
        return torch.linspace(sigma_1, sigma_L, L, dtype=torch.float64)
    raise ValueError(f"unknown schedule '{schedule}' (geometric or linear)")


def edm_sigmas(sigma_max: float, sigma_min: float, n: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: n levels, dense near sigma_min for rho > 1 (float64, decreasing)."""
    if n == 1:
        return torch.tensor([float(sigma_max)], dtype=torch.float64)
    i = torch.arange(n, dtype=torch.float64) / (n - 1)
    inv = 1.0 / rho
    return (sigma_max ** inv + i * (sigma_min ** inv - sigma_max ** inv)) ** rho


# --------------------------------------------------------------------------- training times

TIME_SAMPLERS = ("uniform", "logit_normal", "edm_lognormal")

_TIME_SAMPLER_DEFAULTS = {
    "uniform": {"low": 0.0, "high": 1.0},
    "logit_normal": {"m": 0.0, "s": 1.0},
    "edm_lognormal": {"P_mean": -1.2, "P_std": 1.2},
}


def sample_time(kind: str, n: int, generator=None, dtype: torch.dtype = torch.float32,
                device=None, **params) -> torch.Tensor:
    """``n`` independent training times (or noise levels), every draw from ``generator``.

    * ``"uniform"``        U(low, high), defaults U(0, 1) (low > 0 / high < 1 keep away from
                           the endpoints where conversions divide by alpha or sigma).
    * ``"logit_normal"``   sigmoid(m + s Z), Z ~ N(0, 1); defaults m = 0, s = 1
                           (Esser et al. 2024); in (0, 1).
    * ``"edm_lognormal"``  sigma = exp(P_mean + P_std Z), defaults P_mean = -1.2, P_std = 1.2
                           (Karras et al. 2022). Returns a *noise level* sigma, not a time
                           (for the VE interpolant, ``VE.t_from_sigma`` maps it to t).

    Drawn in float64 on the generator's device, returned as ``dtype`` on ``device``.
    Unknown kinds or parameters are a ``ValueError`` naming them.
    """
    if kind not in _TIME_SAMPLER_DEFAULTS:
        raise ValueError(f"unknown time sampler {kind!r}; choose one of {', '.join(TIME_SAMPLERS)}")
    unknown = sorted(set(params) - set(_TIME_SAMPLER_DEFAULTS[kind]))
    if unknown:
        raise ValueError(f"time sampler {kind!r}: unknown parameter(s) {', '.join(unknown)}; "
                         f"accepted: {', '.join(_TIME_SAMPLER_DEFAULTS[kind])}")
    p = {**_TIME_SAMPLER_DEFAULTS[kind], **{k: float(v) for k, v in params.items()}}
    n = int(n)
    if n < 0:
        raise ValueError(f"sample_time: n must be >= 0, got {n}")
    gen_device = generator.device if generator is not None else device
    draw = dict(generator=generator, dtype=torch.float64, device=gen_device)
    if kind == "uniform":
        if not 0.0 <= p["low"] < p["high"] <= 1.0:
            raise ValueError(f"time sampler 'uniform': need 0 <= low < high <= 1, got {p['low']}, {p['high']}")
        out = p["low"] + (p["high"] - p["low"]) * torch.rand(n, **draw)
    elif kind == "logit_normal":
        if not p["s"] > 0:
            raise ValueError(f"time sampler 'logit_normal': s must be positive, got {p['s']}")
        out = torch.sigmoid(p["m"] + p["s"] * torch.randn(n, **draw))
    else:
        if not p["P_std"] > 0:
            raise ValueError(f"time sampler 'edm_lognormal': P_std must be positive, got {p['P_std']}")
        out = torch.exp(p["P_mean"] + p["P_std"] * torch.randn(n, **draw))
    return out.to(device=device if device is not None else out.device, dtype=dtype)
