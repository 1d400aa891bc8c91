"""eval.py's generate / superres / plot: samples of a run with their statistics, one folder each.

Field runs (VE / interpolant on volcano or GRF fields): generate draws --Ntest samples on the
run's grid, superres on the grid --factor times finer (the neural operators run at any
resolution), and metrics.json holds the W1 distances of the per-sample statistics to those
of the validation split, each with its multiple of the real-vs-real floor and the floor's
90% bootstrap interval, and the power-spectrum errors (spectrum.py; superres splits them at the
training grid's Nyquist wavenumber). Image runs (any process): generate writes the samples and a grid.
plot draws the figures of every field evaluation under a folder (or of the one named); real_vs_generated
and final_stats are titled with the headline numbers (metrics.headline: w_total and the spectrum errors,
each worded against its floor by metrics.floor_caption).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from .eval_common import DEFAULT_SEED, checkpoint_word, damaged_files, finish_name, folder_state
from .errors import UserError

FIGURES = ("samples", "mean_sample", "final_stats", "spectrum", "real_vs_generated")
N_REAL_EXAMPLES = 8          # real validation fields kept in samples.npz for real_vs_generated.png


def evaluation_name(mode: str, checkpoint_name: str, sampler: str, n_sigmas: int, options: dict, factor: int = 1,
                    sigma_min=None, ema: bool = True, seed: int = DEFAULT_SEED) -> str:
    """The folder name of an evaluation: every setting that changes its samples, filesystem-safe.

    <mode>-<checkpoint>-<sampler>-<T<steps per level> | steps<levels>>[-smin<sigma_min>][-x<factor>][-raw]
    [-seed<seed>]; the checkpoint is its file name without 'model.' and '.pt' (model.pt: 'latest',
    snapshot N: 'stepN'), sigma_min only where the sampler uses it, -raw for --no_ema, the seed
    when not the default.
    """
    parts = [mode, checkpoint_word(checkpoint_name), sampler]
    if sampler == "annealed_langevin":
        parts.append(f"T{options['T']}")
    else:
        parts.append(f"steps{n_sigmas}")
        if sigma_min is not None:
            parts.append(f"smin{sigma_min:g}")
    if mode == "superres":
        parts.append(f"x{factor}")
    return finish_name(parts, ema, seed)


def generate_name(mode: str, checkpoint_name: str, options: dict, factor: int = 1, sigma_min=None,
                  ema: bool = True, seed: int = DEFAULT_SEED) -> str:
    """evaluation_name for any process: levels, toy and GANO runs put their sampler word (delta, steps, nfe1)
    in place of the sampler grid, e.g. generate-latest-levels-delta0.0125, superres-latest-generator-nfe1-x2."""
    from .build import sampler_label

    sampler, word = sampler_label(options)
    if "sigmas" in options:
        return evaluation_name(mode, checkpoint_name, sampler, len(options["sigmas"]), options, factor, sigma_min,
                               ema, seed)
    parts = [mode, checkpoint_word(checkpoint_name), sampler, word]
    if mode == "superres":               # GANO (generator-nfe1): each factor its own folder, as for the others
        parts.append(f"x{factor}")
    return finish_name(parts, ema, seed)


def sample_fields(cli, run, real: torch.Tensor, options: dict, factor: int, name: str, ckpt: str, n: int,
                  batch_size: int, progress: bool, log_lines: bool):
    """Generate on the grid of `real` and compare with it: (arrays for samples.npz, summary for metrics.json).

    The spectrum errors split at the Nyquist wavenumber of the training grid (run.shape), which
    superres's finer grid passes; samples.npz keeps both spectra (spectrum, real_spectrum) for the
    figure and metrics.json that wavenumber (training_nyquist).
    """
    from . import metrics, spectrum
    from .eval_common import generate, labels_for, run_summary, sampler_summary
    from .evaluators import FieldStats

    kind = run.kind
    seeds = [cli.seed + k for k in range(n)]
    timing = {}
    samples = generate(run, seeds, tuple(real.shape[1:]), options, batch_size, progress, log_lines,
                       labels_for(run, seeds), timing)
    stats = FieldStats(kind, real)
    real_stats, gen_stats = stats.real_stats, metrics.sample_stats(samples, kind)
    values = stats.values(samples)
    nyquist = min(run.shape[-2:]) // 2
    real_spectrum = metrics.radial_power_spectrum(real)
    values.update(spectrum.spectrum_metrics(real, samples, nyquist, real_spectrum=real_spectrum))
    arrays = dict(samples=samples.numpy(), var=gen_stats["var"].numpy(), skew=gen_stats["skew"].numpy(),
                  real_var=real_stats["var"].numpy(), real_skew=real_stats["skew"].numpy(),
                  real_mean=real.mean(0).numpy(), real_examples=real[:N_REAL_EXAMPLES].numpy(),
                  seeds=np.array(seeds), real_spectrum=real_spectrum.numpy(),
                  spectrum=metrics.radial_power_spectrum(metrics.finite_samples(samples)[0]).numpy())
    summary = {**run_summary(run, name, cli.mode, ckpt, not cli.no_ema), "n": n, "seed": cli.seed,
               "resolution": list(real.shape[-2:]), "factor": factor, "training_nyquist": nyquist,
               "n_real": len(real), **sampler_summary(options), "generation": timing,
               "floor_interval": f"floor_<metric>_p05 / _p95: 5th / 95th percentiles of the real-vs-real floor over "
                                 f"{metrics.FLOOR_RESAMPLES} bootstrap resamples of the {len(real)} real fields",
               "metrics": values}
    return arrays, summary


def sample_images(cli, run, real: torch.Tensor, options: dict, name: str, ckpt: str, n: int, batch_size: int,
                  progress: bool, log_lines: bool):
    """Image runs: samples, their pixel statistics next to the real images', and a grid (samples.png)."""
    from .eval_common import generate, labels_for, run_summary, sampler_summary

    seeds = [cli.seed + k for k in range(n)]
    labels = labels_for(run, seeds)
    timing = {}
    samples = generate(run, seeds, run.shape, options, batch_size, progress, log_lines, labels, timing)
    finite = torch.isfinite(samples.reshape(n, -1)).all(1)
    values = {"n_nonfinite": int((~finite).sum()), "pixel_mean": float(samples[finite].mean()),
              "pixel_std": float(samples[finite].std()), "real_pixel_mean": float(real.mean()),
              "real_pixel_std": float(real.std()),
              "out_of_range": float(((samples[finite] < 0) | (samples[finite] > 1)).float().mean())}
    arrays = dict(samples=samples.numpy(), seeds=np.array(seeds))
    if labels is not None:
        arrays["labels"] = labels.numpy()
    summary = {**run_summary(run, name, cli.mode, ckpt, not cli.no_ema), "n": n, "seed": cli.seed,
               "resolution": list(run.shape[-2:]), "n_real": len(real), **sampler_summary(options),
               "generation": timing, "metrics": values}
    return arrays, summary


def image_grid(folder: Path, samples: torch.Tensor, n_plot: int = 64) -> None:
    from .plotting_images import save_grid

    save_grid(samples[:n_plot].clamp(0, 1), folder / "samples.png")


# ----------------------------------------------------------------------------- plot

def _field_evaluation(folder: Path) -> bool:
    try:
        summary = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and summary.get("mode") in ("generate", "superres") and \
        summary.get("kind") in ("phase", "real")


def evaluations(out: Path, tag=None, notes: bool = True) -> list:
    """The complete field evaluations under `out` (generate / superres, eval_common.folder_state), or the one
    named `tag`; an incomplete one (interrupted) is skipped with a note."""
    def usable(d):
        state = folder_state(d)
        if state == "incomplete" and notes:
            print(f"note: skipping {d}: an incomplete evaluation (interrupted before its metrics.json was "
                  f"written); run its command again to redo it", file=sys.stderr)
        return state == "complete" and _field_evaluation(d)

    if tag is not None:
        if not usable(out / tag):
            have = [d.name for d in evaluations(out, notes=False)] if out.is_dir() else []
            raise UserError(f"no evaluation '{tag}' in {out}" + (
                f" (it holds: {', '.join(have)})" if have else ": run --mode generate (or superres) first"))
        return [out / tag]
    return sorted(d for d in out.iterdir() if d.is_dir() and usable(d)) if out.is_dir() else []


def plot(out: Path, tag=None) -> int:
    from . import plotting, run_dir

    done = evaluations(out, tag)
    if not done:
        raise UserError(f"nothing to plot in {out}: run --mode generate (or superres) first")
    drew = 0
    for folder in done:
        with run_dir.claim(folder, owner="eval.py"):
            summary = json.loads((folder / "metrics.json").read_text())
            damaged = damaged_files(folder, summary)
            if damaged:
                print(f"note: skipping {folder}: {', '.join(damaged)} changed after the evaluation wrote it (its "
                      f"SHA-256 differs from metrics.json's); run its command again with --overwrite to redo it",
                      file=sys.stderr)
                continue
            data = np.load(folder / "samples.npz")
            kind, values, mode = summary["kind"], summary["metrics"], summary["mode"]
            res = "x".join(map(str, summary["resolution"]))
            samples = torch.from_numpy(data["samples"])
            plotting.plot_fields(samples[:16], folder / "samples", kind=kind,
                                 suptitle=f"{folder.name}: {res}, {summary['checkpoint']}")
            plotting.plot_mean_fields(torch.from_numpy(data["real_mean"]), samples.mean(0), folder / "mean_sample",
                                      kind=kind)
            plotting.plot_stat_histograms({"var": data["real_var"], "skew": data["real_skew"]},
                                          {"var": data["var"], "skew": data["skew"]}, values,
                                          folder / "final_stats", kind=kind,
                                          title=f"{folder.name} ({mode} at {res}): real (validation) vs generated")
            drawn = list(FIGURES)
            if "spectrum" in data.files:          # evaluations written before the spectrum metrics have none
                plotting.plot_spectra(data["real_spectrum"], {"generated": data["spectrum"]}, folder / "spectrum",
                                      nyquist=summary.get("training_nyquist"), exts=("png", "pdf"),
                                      title=f"{folder.name} ({mode} at {res})\n" + spectrum_caption(values))
            else:
                drawn.remove("spectrum")
            if "real_examples" in data.files:     # evaluations written before it kept no real fields
                caption = plotting.headline(values, sep="\n")
                plotting.plot_real_vs_generated(data["real_examples"], samples, folder / "real_vs_generated",
                                                kind=kind, title=f"{folder.name} ({mode} at {res})" + (
                                                    f"\n{caption}" if caption else ""))
            else:
                drawn.remove("real_vs_generated")
        print(f"wrote figures to {folder}: {', '.join(drawn)} (.png/.pdf)")
        drew += 1
    if not drew:
        raise UserError(f"nothing to plot in {out}: every evaluation there is damaged")
    return 0


def spectrum_caption(values: dict) -> str:
    """The spectrum errors of a metrics row with their floors, one line per band range."""
    from .metrics import floor_caption
    from .spectrum import ERROR_NAMES

    lines = [floor_caption(values, name) for name in ERROR_NAMES if name in values]
    if "spectrum_ratio_high" in values:
        lines[-1] += f"; P_gen / P_real above Nyquist {values['spectrum_ratio_high']:.3g}"
    return "\n".join(lines)
