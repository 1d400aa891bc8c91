"""Samplers for the VE process. One signature (k-diffusion style):

    sampler(denoiser, x, sigmas, noise_fn, **options) -> x0

x is the initial state (already sigma_1 * z), sigmas the decreasing levels, and
noise_fn() returns a fresh N(0, C) draw shaped like x: the caller decides whether the
noise is white or a GRF, and which generators feed it.
"""
import math

import torch
from tqdm.auto import tqdm

from .noise import standard_normal  # noqa: F401  (re-exported for callers building noise_fn)


@torch.no_grad()
def annealed_langevin(denoiser, x, sigmas, noise_fn, T: int = 3, epsilon: float = 2e-5,
                      final_denoise: bool = True, progress: bool = False):
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) with preconditioner C.

    For each level i and T steps:  x <- x + (a_i/2) C grad log p_i(x) + sqrt(a_i) xi,
    xi ~ N(0, C), a_i = epsilon * sigma_i^2 / sigma_L^2. Then one denoising step
    x <- D(x, sigma_L) (Jolicoeur-Martineau et al. 2021), which the published code lacked.
    Network evaluations: L * T (+1).
    """
    sigmas = [float(s) for s in sigmas]
    sigma_L = sigmas[-1]
    bar = tqdm(total=len(sigmas) * T, desc="langevin", leave=False, disable=not progress)
    for sigma in sigmas:
        a = epsilon * sigma ** 2 / sigma_L ** 2
        for _ in range(T):
            x = x + 0.5 * a * denoiser.score(x, sigma) + math.sqrt(a) * noise_fn()
            bar.update(1)
    bar.close()
    if final_denoise:
        x = denoiser(x, sigma_L)
    return x


@torch.no_grad()
def heun_ode(denoiser, x, sigmas, noise_fn=None, progress: bool = False, **_):
    """Deterministic probability-flow ODE, Heun's 2nd-order method (Karras et al. 2022, Alg. 1).

    dx/dsigma = (x - D(x, sigma)) / sigma, independent of C (the noise only enters
    through the start x = sigma_1 z). Steps through `sigmas` and then to sigma = 0
    with one Euler step, i.e. x <- D(x, sigma_last). 2 len(sigmas) - 1 network evaluations.
    """
    sigmas = [float(s) for s in sigmas]
    for i in tqdm(range(len(sigmas)), desc="heun", leave=False, disable=not progress):
        s_cur = sigmas[i]
        d_cur = (x - denoiser(x, s_cur)) / s_cur
        if i + 1 == len(sigmas):
            x = x - s_cur * d_cur                     # Euler to sigma = 0: x = D(x, sigma_last)
            break
        s_next = sigmas[i + 1]
        x_next = x + (s_next - s_cur) * d_cur
        d_next = (x_next - denoiser(x_next, s_next)) / s_next
        x = x + (s_next - s_cur) * 0.5 * (d_cur + d_next)
    return x


SAMPLERS = {"annealed_langevin": annealed_langevin, "heun_ode": heun_ode}


@torch.no_grad()
def generate(denoiser, noise, sigmas, n: int, resolution, seeds, batch_size: int,
             sampler=annealed_langevin, device="cpu", progress: bool = False, **options):
    """Draw n samples; sample k uses only torch.Generator(seed=seeds[k]).

    The start x = sigma_1 z and every later noise draw of sample k come from its own
    generator, so sample k is the same whatever the batch size (EDM's per-sample seeds).
    Returns a CPU float32 tensor (n, C, H, W).
    """
    seeds = list(seeds)
    if len(seeds) != n:
        raise ValueError(f"need one seed per sample: {len(seeds)} seeds for {n} samples")
    sigma_1 = float(sigmas[0])
    out = []
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="generate", leave=False, disable=not progress or len(starts) < 2):
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[start:start + batch_size]]

        def noise_fn(gens=gens):
            return noise.sample(len(gens), resolution, gens, device=device)

        x = sigma_1 * noise_fn()
        out.append(sampler(denoiser, x, sigmas, noise_fn, progress=progress, **options).float().cpu())
    return torch.cat(out)
