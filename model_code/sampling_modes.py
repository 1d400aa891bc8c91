"""sample.py's modes for the VE and interpolant processes and GANO (the levels process has its own,
in LevelsProcess.sample). GANO's sample is G(z) for its start z alone: random and interpolate apply.

Each sampler of samplers.SAMPLERS starts from x = sigma_1 z, z ~ N(0, C), and may draw more
N(0, C) noise as it goes (noise_fn). Sample i owns torch.Generator(seeds[i]); its first draw is
its start z_i, its later draws are its sampling noise, exactly as samplers.generate and
Process.sample draw them, so mode random reproduces eval.py's samples of the same seeds.

    random       start z_i, later noise from generator i;
    same_init    every sample starts from z_0 (seeds[0]'s start), later noise from generator i
                 (each generator still draws its own start first, so sample i's later noise is
                 that of its random sample);
    share_noise  start z_i, one later-noise sequence, that of seeds[0], for every sample;
    interpolate  num_points starts on the great circle z(l) = cos(l pi/2) z_0 + sin(l pi/2) z_1,
                 l in [0, 1], between the starts of seeds[0] and seeds[1]: z_0, z_1 independent
                 N(0, C) and cos^2 + sin^2 = 1, so each z(l) is again N(0, C); later noise: that of
                 seeds[0], shared.

same_init and share_noise mean something only for samplers that draw later noise.
"""
from __future__ import annotations

import math

import torch

from .errors import UserError

MODES = ("random", "same_init", "share_noise", "interpolate")
STOCHASTIC = ("annealed_langevin", "euler_maruyama", "predictor_corrector", "edm_stochastic")


def is_stochastic(options: dict) -> bool:
    """Whether the sampler draws noise after its start (edm_stochastic only with S_churn > 0)."""
    name = options["sampler"]
    if name == "edm_stochastic":
        return float(options.get("S_churn", 0.0)) > 0
    return name in STOCHASTIC


def check_mode(mode: str, options: dict) -> None:
    """Refuse a mode that means nothing with this sampler: one line saying why and what would work."""
    if mode not in ("same_init", "share_noise") or (options and is_stochastic(options)):
        return
    if not options:
        raise UserError(f"--mode {mode} means nothing for a GANO run: a sample is G(z) for its input function z "
                        f"alone, so there is no later noise; use --mode random | interpolate")
    name = options["sampler"]
    why = ("every sample would be the same" if mode == "same_init"
           else "there is no later noise to share, so it would give the random samples")
    raise UserError(f"--mode {mode} means nothing with the deterministic sampler {name}: it draws no noise after "
                    f"its start, {why}; use --sampler {' | '.join(STOCHASTIC)}, or --mode random | interpolate")


def slerp(z_a: torch.Tensor, z_b: torch.Tensor, n: int) -> torch.Tensor:
    """n points cos(l pi/2) z_a + sin(l pi/2) z_b, l = 0, 1/(n-1), .., 1 (each again N(0, C) in law)."""
    lam = torch.linspace(0, 1, n, dtype=torch.float64) * (math.pi / 2)
    shape = (n,) + (1,) * z_a.dim()
    cos, sin = torch.cos(lam).reshape(shape), torch.sin(lam).reshape(shape)
    return (cos * z_a.double()[None] + sin * z_b.double()[None]).to(z_a.dtype)


@torch.no_grad()
def sample_modes(process, model, mode: str, seeds, shape, device, options: dict, num_points: int = 10,
                 labels=None, progress: bool = False):
    """(samples (n, C, H, W), starts z (n, C, H, W), both CPU float32) of a VE / interpolant / GANO run in `mode`.

    options: build.sampler_setup's (sampler, sigmas, and the sampler's own settings; {} for GANO).
    """
    from .processes.base import Conditioned, check_options
    from .samplers import SAMPLERS

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    noise = process.noise
    resolution = tuple(int(s) for s in shape[1:])
    seeds = [int(s) for s in seeds]
    if mode == "interpolate" and len(seeds) < 2:
        raise ValueError("mode 'interpolate' needs two seeds")
    gens = [torch.Generator().manual_seed(s) for s in (seeds[:2] if mode == "interpolate" else seeds)]
    z = noise.sample(len(gens), resolution, gens, device=device)
    n = num_points if mode == "interpolate" else len(seeds)
    if mode == "same_init":
        start = z[:1].expand(n, *z.shape[1:]).clone()
    elif mode == "interpolate":
        start = slerp(z[0], z[1], n)
    else:
        start = z

    if not options:                                 # GANO: the generator of the start functions
        return model(start.to(device)).float().cpu(), start.float().cpu()
    fn = SAMPLERS[options["sampler"]]
    rest = {k: v for k, v in options.items() if k not in ("sampler", "sigmas")}
    check_options(fn, rest, ("denoiser", "x", "sigmas", "noise_fn", "progress"), f"sampler {options['sampler']!r}")
    sigmas = options["sigmas"]

    def own_noise():
        return noise.sample(len(gens), resolution, gens, device=device)

    def shared_noise():
        return noise.sample(1, resolution, gens[:1], device=device).expand(n, -1, -1, -1)

    noise_fn = own_noise if mode in ("random", "same_init") else shared_noise
    x = float(sigmas[0]) * start
    out = fn(Conditioned(model, labels), x, sigmas, noise_fn, progress=progress, **rest)
    return out.float().cpu(), start.float().cpu()
