"""The two-atom toy against its analytic solution (eval.py --mode score, scripts/analyse_toy.py).

For samples x of a toy model (or of the exact score):
  * mode balance: the fraction nearest to the first ordering of the atoms (exact: 1/2 for
    symmetrised data) with its binomial standard error and z-score;
  * the distance r to the nearest mode against the Rayleigh law of the final noise level,
    scale sqrt(sigma_d^2 + sigma_final^2) (sigma_final = sigma_min after the reverse SDE, which
    ends without a denoising step; 0 after the ODE): the KS distance and p-value, and the width
    ratio sqrt(E r^2 / 2) / scale (1 when exact);
  * the marginal of the atom positions (every coordinate pooled) against the analytic one,
    p(y) = (1/N) sum_i k_v(y - mu_i), v = sigma_d^2 + sigma_final^2 (k_v the wrapped Gaussian):
    the total-variation distance of their histogram, with the value expected from sampling alone;
and for the score itself, with exact draws x ~ p_t on a grid of t (toy_score.score_error):
  * weighted(t) = E sigma_t^2 |s - s*|^2, its mean over the grid (score_error_mean), the
    relative error at t = 0 and over the grid, sum_t weighted / sum_t E sigma_t^2 |s*|^2.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def as_score(model, device="cpu"):
    """s(x, sigma) on float64 CPU inputs (what toy_score and the figures pass), the model on its device."""
    params = list(model.parameters()) if hasattr(model, "parameters") else []
    dtype = params[0].dtype if params else None

    def score(x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype)
        with torch.no_grad():
            out = model(x.to(device, dtype or x.dtype), sigma.to(device, dtype or x.dtype))
        return out.double().cpu()

    return score


SDE_SAMPLERS = ("euler_maruyama", "predictor_corrector")


def final_sigma(schedule, sampler: str) -> float:
    """The noise level the samples end at: the SDE samplers stop at sigma_min without a denoising step."""
    return float(schedule.sigma_min) if sampler in SDE_SAMPLERS else 0.0


@torch.no_grad()
def pc_samples(process, model, seeds, n_atoms: int, n_steps: int = 500, snr: float = 0.16,
               corrector_steps: int = 1, data=None, dtype=torch.float64) -> torch.Tensor:
    """Predictor-corrector samples on the torus (samplers.predictor_corrector through TorusDenoiser):
    a reverse-SDE step then `corrector_steps` Langevin steps at each level of the grid sigma(t_k),
    ending at sigma_min without a denoising step, as the toy's reverse SDE does.

    Sample k owns torch.Generator(seeds[k]): its prior draw first, then its sampling noise, the order
    WrappedVEProcess.sample uses. Returns (n, n_atoms) float32 on the CPU.
    """
    from .data.toy import wrap
    from .processes.wrapped_ve import TorusDenoiser
    from .samplers import predictor_corrector

    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    if not gens:
        return torch.empty(0, n_atoms)
    x = torch.cat([process.sample_prior(1, n_atoms, g, data=data, dtype=dtype) for g in gens])

    def noise_fn():
        return torch.cat([torch.randn(1, n_atoms, generator=g, dtype=dtype) for g in gens])

    # the toy's scores are order one in sigma * s, so the "sigma" step rule's eps = 2 snr^2 sigma^2 is the
    # paper's rule without norms; the torus is flat, so unwrapped Langevin steps wrapped once are exact
    out = predictor_corrector(TorusDenoiser(model), x, process.schedule.grid(n_steps), noise_fn,
                              corrector_steps=corrector_steps, snr=snr, step_rule="sigma", final_denoise=False)
    return wrap(out).float()


def atom_marginal(y, mu, var: float) -> np.ndarray:
    """The density of one atom's position (all atoms pooled) on [0, 1): (1/N) sum_i k_var(y - mu_i)."""
    from .processes.wrapped_ve import wrapped_gaussian

    y = torch.as_tensor(np.asarray(y, dtype=np.float64))
    mu = torch.as_tensor([float(m) for m in mu], dtype=torch.float64)
    log_k, _ = wrapped_gaussian(y[:, None] - mu[None], torch.tensor(float(var), dtype=torch.float64))
    return log_k.exp().mean(1).numpy()


def marginal_analysis(x: torch.Tensor, data, sigma_end: float, bins: int = 100) -> dict:
    """The histogram of the atom positions against atom_marginal at the final level (module docstring).

    marginal_tv = (1/2) sum_b |h_b - p_b| over `bins` equal bins, h the sample fractions and p the exact
    bin probabilities; marginal_tv_expected is its value for exact samples, E(1/2) sum |h_b - p_b| ~
    (1/2) sum_b sqrt(2 p_b (1 - p_b) / (pi m)) for m pooled positions (normal approximation, positions taken
    as independent: one atom per mode in each sample makes the true value somewhat smaller).
    """
    pos = torch.as_tensor(x).double().reshape(-1).numpy() % 1.0
    m = len(pos)
    var = data.sigma_d ** 2 + sigma_end ** 2
    edges = np.linspace(0.0, 1.0, bins + 1)
    fine = 20                                             # midpoint rule inside each bin
    mids = (edges[:-1, None] + (np.arange(fine)[None] + 0.5) / (fine * bins)).reshape(-1)
    p_bins = atom_marginal(mids, data.mu, var).reshape(bins, fine).mean(1) / bins
    h = np.histogram(pos, bins=edges)[0] / m
    expected = 0.5 * np.sqrt(2 * p_bins * (1 - p_bins) / (math.pi * m)).sum()
    return {"marginal_tv": float(0.5 * np.abs(h - p_bins).sum()), "marginal_tv_expected": float(expected),
            "marginal_bins": bins, "marginal_variance": var}


def sample_analysis(x: torch.Tensor, data, sigma_end: float) -> dict:
    """Mode balance and the Rayleigh test of samples x (n, n_atoms) (module docstring)."""
    from scipy import stats

    from .data.toy import mode_balance, nearest_mode

    n = len(x)
    modes = data.modes()
    balance, balance_se = mode_balance(x, modes)
    _, r = nearest_mode(x, modes)
    scale = math.sqrt(data.sigma_d ** 2 + sigma_end ** 2)
    ks = stats.kstest(r.numpy(), "rayleigh", args=(0.0, scale))
    return {"n_samples": n, "mode_balance": balance, "mode_balance_se": balance_se,
            "mode_balance_z": (balance - 0.5) / (0.5 / math.sqrt(n)) if x.shape[1] == 2 else None,
            "rayleigh_scale": scale, "ks_distance": float(ks.statistic), "ks_pvalue": float(ks.pvalue),
            # sqrt(E r^2 / 2) / scale: 1 for the exact law; > 1 means modes too wide, < 1 too narrow
            "width_ratio": float((r.double().pow(2).mean() / 2).sqrt()) / scale,
            "ks_critical_5pct": 1.358 / math.sqrt(n)}, r


def score_analysis(score, analytic, data, schedule, ts, n: int, generator: torch.Generator) -> dict:
    """The p_t-weighted score error on the grid ts (module docstring)."""
    from .toy_score import score_error

    errors = score_error(score, analytic, data, schedule, ts, n, generator)
    weighted = np.array([e["weighted"] for e in errors])
    reference = np.array([e["reference"] for e in errors])
    return {"score_error_mean": float(weighted.mean()), "score_error_per_t": errors,
            "relative_error_overall": float(weighted.sum() / max(reference.sum(), 1e-300)),
            "relative_error_t0": float(errors[0]["relative"])}


@torch.no_grad()
def score_field_arrays(score_model, sigmas, n_grid: int = 21):
    """grid (n, n, 2) of cell centres and sigma * s(x, sigma) on it for each sigma: (T, n, n, 2)."""
    g = (torch.arange(n_grid, dtype=torch.float64) + 0.5) / n_grid
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), dim=-1)
    flat = grid.reshape(-1, 2)
    out = []
    for s in sigmas:
        sig = torch.full((len(flat),), float(s), dtype=torch.float64)
        out.append((float(s) * score_model(flat, sig).double()).reshape(n_grid, n_grid, 2))
    return grid.numpy(), torch.stack(out).numpy()


def toy_parts(cfg):
    """(data, analytic score, sigma schedule) of a toy config (schema.Config)."""
    from .build import analytic_score
    from .data.toy import TwoAtomData
    from .processes.wrapped_ve import SigmaSchedule

    a, w = cfg.data.atoms, cfg.process.wrapped_ve
    return (TwoAtomData(a.mu, a.sigma_d, a.symmetrize), analytic_score(cfg),
            SigmaSchedule(w.schedule, w.sigma_min, w.sigma_max))


def exact_model(cfg):
    """A stand-in 'run' sampling with the exact score (what 'analytical' means in analyse_toy.py)."""
    from .build import build_process

    return build_process(cfg, None, None), toy_parts(cfg)[1]


def scatter(folder, x: torch.Tensor, data, title: str = "") -> None:
    from .plotting_toy import sample_scatter

    if x.shape[1] == 2:
        sample_scatter(x.numpy(), data.modes().numpy(), folder / "samples", title)
