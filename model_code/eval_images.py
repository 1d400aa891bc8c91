"""eval.py's elbo / fid / frechet: likelihood and sample-quality numbers of image runs.

elbo (levels runs): the negative ELBO of the real images (LevelsProcess.elbo_terms, nats per
image), with its per-level breakdown, in nats and bits per dimension, bpd = nats / (D ln 2),
D = C H W. One generator seeded with --seed runs through the batches, so a value is
reproducible for a given seed and batch size (another batch size draws other noise).

fid: clean-fid's FID (fid.py: its `clean` resize, features, statistics and distance) of the
generated images against the run's real images or clean-fid reference statistics, with the
user's TorchScript Inception (--fid_weights; nothing is downloaded). It needs clean-fid and
torchvision (.venv-vision).
frechet: the Frechet distance in the features of the small digits classifier
(digits_classifier.py), with its real-vs-real floor (two disjoint halves of the real set) and
the 90% bootstrap interval of each (frechet_p05 / _p95, frechet_floor_p05 / _p95).
Both come from --Ntest (--num_gen) samples with seeds --seed + k, for any process.

Each also writes one line, as the inverse-heat code's evaluation logs do, to <mode>_log.txt
beside metrics.json (log_line below).
"""
from __future__ import annotations

import torch

from .build import sampler_label
from .eval_common import DEFAULT_SEED, checkpoint_word, finish_name


def elbo_name(checkpoint: str, delta: float, split: str, n_images=None, ema: bool = True,
              seed: int = DEFAULT_SEED) -> str:
    """elbo-<checkpoint>-delta<delta>-<split>[-n<n_images>][-raw][-seed<seed>]."""
    parts = ["elbo", checkpoint_word(checkpoint), f"delta{delta:g}", split]
    if n_images:
        parts.append(f"n{n_images}")
    return finish_name(parts, ema, seed)


def sample_metric_name(mode: str, checkpoint: str, options: dict, n: int, split: str = "valid", sigma_min=None,
                       ema: bool = True, seed: int = DEFAULT_SEED) -> str:
    """<mode>-<checkpoint>-<sampler>-<steps word>[-smin<s>]-gen<n>[-train][-raw][-seed<seed>],
    e.g. fid-latest-levels-delta0.0125-gen1000 or frechet-latest-heun_ode-steps20-gen256."""
    sampler, word = sampler_label(options)
    parts = [mode, checkpoint_word(checkpoint), sampler, word]
    if sigma_min is not None and sampler not in ("annealed_langevin", "levels"):
        parts.append(f"smin{sigma_min:g}")
    parts.append(f"gen{n}")
    if split != "valid":
        parts.append(split)
    return finish_name(parts, ema, seed)


@torch.no_grad()
def elbo(run, images: torch.Tensor, labels, delta: float, batch_size: int, seed: int, log_lines: bool = False):
    """(per-image terms (N, K + 1) in nats, summary dict: neg_elbo_nats, bpd, per_level_nats, per_level_bpd)."""
    from .processes.levels import elbo_summary
    from .progress import LogLines

    g = torch.Generator().manual_seed(seed)
    starts = range(0, len(images), batch_size)
    log = LogLines("elbo", "batch", len(starts), enabled=log_lines)
    terms = []
    for done, i in enumerate(starts):
        batch = images[i:i + batch_size].to(run.device)
        lab = None if labels is None else labels[i:i + batch_size].to(run.device)
        terms.append(run.process.elbo_terms(run.model, batch, g, delta=delta, labels=lab).double().cpu())
        log.tick(len(batch), done + 1)
    terms = torch.cat(terms)
    return terms, elbo_summary(terms, images[0].numel())


def elbo_line(summary: dict) -> str:
    per = summary["per_level_bpd"]
    line = (f"negative ELBO {summary['neg_elbo_nats']:.3f} nats = {summary['bpd']:.4f} bits/dim over "
            f"{summary['n_images']} images")
    if len(per) > 2:
        worst = 1 + max(range(len(per) - 2), key=lambda i: per[1 + i])
        line += (f"; per level (bits/dim): L_0 {per[0]:.4f}, L_1..L_{len(per) - 2} {sum(per[1:-1]):.4f} "
                 f"(largest L_{worst}), prior L_{len(per) - 1} {per[-1]:.4f}")
    return line


def fid(model, fake: torch.Tensor, real, reference, batch_size: int, device, verbose: bool = False) -> dict:
    from . import fid as fid_mod

    finite = torch.isfinite(fake.reshape(len(fake), -1)).all(1)
    return {"fid": fid_mod.fid(model, fake, real, reference, batch_size, device, verbose),
            "n_nonfinite": int((~finite).sum())}


LOG_WORDS = {"fid": "FID", "elbo": "NELBO (bits/dim)"}


def log_line(mode: str, checkpoint, value: float) -> str:
    """<checkpoint> FID: <value> / <checkpoint> NELBO (bits/dim): <value>, the line of <mode>_log.txt."""
    return f"{checkpoint} {LOG_WORDS[mode]}: {float(value)!r}"


def frechet(fake: torch.Tensor, real: torch.Tensor, seed: int = 0, n_resamples=None) -> dict:
    """frechet, frechet_floor and their 90% bootstrap intervals (digits_classifier.frechet_summary), n_real,
    n_nonfinite."""
    from .digits_classifier import frechet_summary

    finite = torch.isfinite(fake.reshape(len(fake), -1)).all(1)
    return {**frechet_summary(fake, real, seed, n_resamples=n_resamples), "n_real": len(real),
            "n_nonfinite": int((~finite).sum())}


def frechet_interval_note(n_resamples=None) -> str:
    """What frechet_p05 / _p95 and frechet_floor_p05 / _p95 are, for metrics.json."""
    from .fid import FRECHET_RESAMPLES

    n = FRECHET_RESAMPLES if n_resamples is None else int(n_resamples)
    return (f"frechet_p05 / _p95: 5th / 95th percentiles of the Frechet distance over {n} bootstrap resamples of "
            f"the generated and the real features, moved to centre on the value (the resamples' extra upward "
            f"bias taken out): its spread over other seeds and real sets of these sizes; frechet_floor_p05 / "
            f"_p95: the same for the real-vs-real floor over {n} resamples of the real features split into halves")
