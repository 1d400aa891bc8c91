"""Samplers for the VE process. One signature (k-diffusion style):

    sampler(denoiser, x, sigmas, noise_fn, **options) -> x0

x is the initial state (already sigma_1 * z), sigmas the decreasing levels, and
noise_fn() returns a fresh N(0, C) draw shaped like x: the caller decides whether the
noise is white or a GRF, and which generators feed it.
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from .progress import LogLines



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


@torch.no_grad()
def euler_ode(denoiser, x, sigmas, noise_fn=None, progress: bool = False, **_):
    """Probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma, Euler's method (Karras et
    al. 2022, Alg. 1 without the Heun correction). Deterministic and independent of C.

    Steps through `sigmas` and finally to sigma = 0, where the Euler step is x = D(x, sigma_last).
    len(sigmas) network evaluations.
    """
    sigmas = [float(s) for s in sigmas] + [0.0]
    for i in tqdm(range(len(sigmas) - 1), desc="euler", leave=False, disable=not progress):
        s_cur, s_next = sigmas[i], sigmas[i + 1]
        d_cur = (x - denoiser(x, s_cur)) / s_cur        # dx/dsigma at (x, sigma_i)
        x = x + (s_next - s_cur) * d_cur                # Euler step to sigma_{i+1}
    return x


@torch.no_grad()
def euler_maruyama(denoiser, x, sigmas, noise_fn, progress: bool = False, final_denoise: bool = True, **_):
    """Reverse VE SDE, Euler-Maruyama in sigma (Song et al. 2021, eq. 6 with g^2 = d sigma^2 / dt).

    With the C-preconditioned score (C grad log p = (D - x) / sigma^2) the reverse SDE
    dx = -d[sigma^2] C grad log p_sigma(x) + sqrt(d[sigma^2]) dW_C, W_C a C-Wiener process,
    discretises to (this is also Song et al.'s "reverse diffusion" predictor)

        x <- x + (sigma_i^2 - sigma_{i+1}^2) Cscore(x, sigma_i) + sqrt(sigma_i^2 - sigma_{i+1}^2) xi,

    xi ~ N(0, C) from noise_fn. The last step to sigma = 0 is the denoising step x <- D(x, sigma_last).
    len(sigmas) network evaluations.
    """
    sigmas = [float(s) for s in sigmas]
    for i in tqdm(range(len(sigmas) - 1), desc="euler-maruyama", leave=False, disable=not progress):
        s_cur, s_next = sigmas[i], sigmas[i + 1]
        dvar = s_cur ** 2 - s_next ** 2                 # g^2 dt over the step
        x = x + dvar * denoiser.score(x, s_cur) + math.sqrt(dvar) * noise_fn()
    if final_denoise:
        x = denoiser(x, sigmas[-1])                     # sigma_last -> 0: x = E[u | x]
    return x


def _per_sample_norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each sample (over all channels and points), shaped to broadcast."""
    return v.flatten(1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))


@torch.no_grad()
def predictor_corrector(denoiser, x, sigmas, noise_fn, progress: bool = False, corrector_steps: int = 1,
                        snr: float = 0.16, step_rule: str = "sigma", final_denoise: bool = True, **_):
    """Predictor-corrector sampling (Song et al. 2021, Alg. 2 / App. G, VE SDE), preconditioned by C.

    For i = 0 .. L-2:
      predictor (reverse diffusion, = one Euler-Maruyama step):
        x <- x + (sigma_i^2 - sigma_{i+1}^2) Cscore(x, sigma_i) + sqrt(sigma_i^2 - sigma_{i+1}^2) xi
      corrector (`corrector_steps` Langevin steps at sigma_{i+1}):
        g = Cscore(x, sigma_{i+1}), xi ~ N(0, C), eps from the rule below,
        x <- x + eps g + sqrt(2 eps) xi
    Then x <- D(x, sigma_last).

    Step-size rule (`step_rule`):
      "norm"  (Song et al. Alg. 4 with the preconditioned quantities): eps = 2 (snr |xi| / |g|)^2
              per sample, |.| the Euclidean norm over all points and channels of the C-noise xi
              and the C-preconditioned score g. Then |eps g| / |sqrt(2 eps) xi| = snr: the
              drift and noise increments as they are actually applied have ratio snr. For white
              noise this is exactly the paper's rule.
      "sigma" eps = 2 snr^2 sigma_{i+1}^2: the value the paper's rule takes (in C^{-1/2}-whitened
              norms) when the noise dominates the data, E|C^{-1/2} g|^2 ~ n / sigma^2. It needs
              no norms, bounds the relative per-mode bias of the Langevin step by snr^2, and is
              the safe choice when C is strongly anisotropic (small nugget), where the Euclidean
              norms of g and xi weight the modes differently. Default: with an rbf GRF
              (l = 0.15, nugget 0.1) on 8 x 8 and p = 2 Gaussian data, "norm" over-disperses the
              top modes by 13-26 % even at 128 levels (snr 0.16; still ~10 % at snr 0.05), "sigma"
              by <= 5 % (tests/test_samplers.py).
    (1 + corrector_steps) (L - 1) + 1 network evaluations.
    """
    if step_rule not in ("norm", "sigma"):
        raise ValueError(f"step_rule must be 'norm' or 'sigma', got {step_rule!r}")
    sigmas = [float(s) for s in sigmas]
    for i in tqdm(range(len(sigmas) - 1), desc="pc", leave=False, disable=not progress):
        s_cur, s_next = sigmas[i], sigmas[i + 1]
        # predictor: reverse-diffusion step sigma_i -> sigma_{i+1}
        dvar = s_cur ** 2 - s_next ** 2
        x = x + dvar * denoiser.score(x, s_cur) + math.sqrt(dvar) * noise_fn()
        # corrector: Langevin MCMC targeting p_{sigma_{i+1}}
        for _ in range(corrector_steps):
            g = denoiser.score(x, s_next)
            xi = noise_fn()
            if step_rule == "norm":
                eps = 2.0 * (snr * _per_sample_norm(xi) / _per_sample_norm(g).clamp_min(1e-30)) ** 2
            else:
                eps = 2.0 * snr ** 2 * s_next ** 2
            x = x + eps * g + (2.0 * eps) ** 0.5 * xi
    if final_denoise:
        x = denoiser(x, sigmas[-1])
    return x


@torch.no_grad()
def edm_stochastic(denoiser, x, sigmas, noise_fn, progress: bool = False, S_churn: float = 0.0,
                   S_tmin: float = 0.0, S_tmax: float = float("inf"), S_noise: float = 1.0, **_):
    """EDM stochastic sampler (Karras et al. 2022, Alg. 2) with N(0, C) churn noise.

    Grid t_0 > ... > t_{N-1} = `sigmas`, t_N = 0. For i = 0 .. N-1:
      gamma_i = min(S_churn / N, sqrt(2) - 1) if S_tmin <= t_i <= S_tmax else 0
      t_hat = t_i (1 + gamma_i);  x_hat = x + sqrt(t_hat^2 - t_i^2) S_noise xi,  xi ~ N(0, C)
      d = (x_hat - D(x_hat, t_hat)) / t_hat;  x = x_hat + (t_{i+1} - t_hat) d      (Euler)
      if t_{i+1} != 0: d' = (x - D(x, t_{i+1})) / t_{i+1};
                       x = x_hat + (t_{i+1} - t_hat) (d + d') / 2                 (Heun)
    With S_churn = 0 this is heun_ode. 2 N - 1 network evaluations.
    """
    sigmas = [float(s) for s in sigmas] + [0.0]
    n = len(sigmas) - 1
    for i in tqdm(range(n), desc="edm", leave=False, disable=not progress):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        # increase the noise level temporarily: t_hat = t_i + gamma_i t_i
        gamma = min(S_churn / n, math.sqrt(2.0) - 1.0) if S_tmin <= t_cur <= S_tmax else 0.0
        t_hat = t_cur + gamma * t_cur
        if t_hat > t_cur:
            x = x + math.sqrt(t_hat ** 2 - t_cur ** 2) * S_noise * noise_fn()
        # Euler step from t_hat to t_{i+1}
        d_cur = (x - denoiser(x, t_hat)) / t_hat
        x_next = x + (t_next - t_hat) * d_cur
        # second-order correction unless t_{i+1} = 0
        if t_next > 0:
            d_next = (x_next - denoiser(x_next, t_next)) / t_next
            x_next = x + (t_next - t_hat) * 0.5 * (d_cur + d_next)
        x = x_next
    return x


@torch.no_grad()
def dpm_solver_2m(denoiser, x, sigmas, noise_fn=None, progress: bool = False, **_):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), data prediction, VE/EDM parametrisation.

    alpha = 1, sigma_t = sigma, lambda = -log sigma, h_i = lambda_{i+1} - lambda_i = log(sigma_i / sigma_{i+1}).
    Exact integration of the linear part plus a linear extrapolation of D in lambda:
      i = 0 (first order, DPM-Solver++(1) = DDIM):
        x <- (sigma_1 / sigma_0) x + (1 - sigma_1 / sigma_0) D_0
      i >= 1 (second order, multistep): r_i = h_{i-1} / h_i,
        D~ = (1 + 1 / (2 r_i)) D_i - 1 / (2 r_i) D_{i-1}
        x <- (sigma_{i+1} / sigma_i) x + (1 - sigma_{i+1} / sigma_i) D~
      last step to sigma = 0 (h = inf, first order): x <- D(x, sigma_last).
    Deterministic, len(sigmas) network evaluations.
    """
    sigmas = [float(s) for s in sigmas]
    d_prev, h_prev = None, None
    for i in tqdm(range(len(sigmas)), desc="dpm++2m", leave=False, disable=not progress):
        s_cur = sigmas[i]
        d_cur = denoiser(x, s_cur)                      # data prediction D_i
        if i + 1 == len(sigmas):
            x = d_cur                                   # sigma_last -> 0
            break
        s_next = sigmas[i + 1]
        h = math.log(s_cur / s_next)
        if d_prev is None:
            d_hat = d_cur                               # first step: first order
        else:
            r = h_prev / h
            d_hat = (1.0 + 0.5 / r) * d_cur - (0.5 / r) * d_prev
        x = (s_next / s_cur) * x + (1.0 - s_next / s_cur) * d_hat   # -(e^{-h} - 1) = 1 - sigma_{i+1}/sigma_i
        d_prev, h_prev = d_cur, h
    return x


SAMPLERS = {
    "annealed_langevin": annealed_langevin,
    "heun_ode": heun_ode,
    "euler_ode": euler_ode,
    "euler_maruyama": euler_maruyama,
    "predictor_corrector": predictor_corrector,
    "edm_stochastic": edm_stochastic,
    "dpm_solver_2m": dpm_solver_2m,
}


def network_evaluations(name: str, n_sigmas: int, options: dict | None = None) -> int:
    """Number of denoiser calls sampler `name` makes on a grid of n_sigmas levels."""
    options = dict(options or {})
    n = int(n_sigmas)
    if name == "annealed_langevin":
        return n * int(options.get("T", 3)) + int(options.get("final_denoise", True))
    if name in ("heun_ode", "edm_stochastic"):
        return 2 * n - 1
    if name in ("euler_ode", "dpm_solver_2m"):
        return n
    if name == "euler_maruyama":
        return n - 1 + int(options.get("final_denoise", True))
    if name == "predictor_corrector":
        return (1 + int(options.get("corrector_steps", 1))) * (n - 1) + int(options.get("final_denoise", True))
    raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


@torch.no_grad()
def generate(denoiser, noise, sigmas, n: int, resolution, seeds, batch_size: int,
             sampler=annealed_langevin, device="cpu", progress: bool = False, log_lines: bool = False, **options):
    """Draw n samples; sample k uses only torch.Generator(seed=seeds[k]).

    progress: tqdm bars (a terminal); log_lines: a plain line per batch, at most one a minute (a log).

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
    log = LogLines("generate", "batch", len(starts), enabled=log_lines)
    for done, start in enumerate(tqdm(starts, desc="generate", leave=False, disable=not progress or len(starts) < 2)):
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[start:start + batch_size]]

        def noise_fn(gens=gens):
            return noise.sample(len(gens), resolution, gens, device=device)

        x = sigma_1 * noise_fn()
        out.append(sampler(denoiser, x, sigmas, noise_fn, progress=progress, **options).float().cpu())
        log.tick(len(gens), done + 1)
    return torch.cat(out)
