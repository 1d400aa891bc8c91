"""The modes of eval.py on a loaded run (build.load_run). Each computes its result and writes its
own folder <savedir>/<name>/ (metrics.json, and samples.npz where there are samples; elbo:
terms.npz), holding the folder's writer lock while it writes, and never replaces a result
without --overwrite.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from . import build
from .errors import UserError

FID_DEFAULT_N = 10_000
SCORE_TIMES, SCORE_DRAWS = 21, 2000


def _progress(cli):
    from .progress import enabled_for

    return not cli.quiet and sys.stderr.isatty(), enabled_for(cli.quiet)


def _table(cli, run, out: Path):
    """(folder, key) of the --experiment_name results table, or None."""
    if getattr(cli, "experiment_name", None) is None:
        return None
    from .results_table import table_folder

    return table_folder(cli.results_root, cli.dataset_name or run.cfg.data.dataset, cli.experiment_name), out.name


def _evaluate(cli, out: Path, compute, run=None) -> int:
    """Hold `out` while compute() -> (summary, arrays, npz name, after) runs and its results are written;
    after(out) draws figures. An existing result was refused before any work and is refused again here.
    Prints the metrics as JSON, then the headline numbers against their floors on one line
    (metrics.headline: w_total, the spectrum errors, frechet; none for the other modes).
    With --experiment_name the metrics also go to that results table (results_table.py)."""
    from . import files, results_table, run_dir
    from .eval_common import refuse_existing, write_evaluation

    table = _table(cli, run, out) if run is not None else None
    if table is not None:
        results_table.refuse_existing_key(table[0], cli.mode, table[1], cli.overwrite)
    with run_dir.claim(out, owner="eval.py"):
        files.sweep_temporaries(out)          # what an evaluation killed mid-write left (its writer is gone)
        refuse_existing(out, cli.overwrite, announce=False)
        summary, arrays, npz, after = compute()
        write_evaluation(out, summary, arrays, npz, after)
    from .metrics import headline

    values = summary.get("metrics", {})
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in values.items()
                      if not isinstance(v, (list, dict))}))
    # The JSON's bare *_x_floor multiples read as scores; this line words them against the floor.
    numbers = headline(values)
    if numbers:
        # "frechet: frechet 25.2 ..." says its name twice: the headline already starts with it.
        print(numbers if numbers.startswith(f"{cli.mode} ") else f"{cli.mode}: {numbers}")
    print(f"wrote {out / npz} and {out / 'metrics.json'}")
    if table is not None:
        path = results_table.add_result(table[0], cli.mode, table[1], {**summary.get("metrics", {}),
                                        "run": str(cli.exp_name), "evaluation": str(out)}, cli.overwrite)
        print(f"added '{table[1]}' to {path}")
    return 0


def _start(cli, run, ckpt: str, out: Path, what: str, options: dict) -> None:
    """Refuse an existing result before any work, and say what is about to be computed."""
    from .eval_common import refuse_existing, sampler_summary

    refuse_existing(out, cli.overwrite)
    s = sampler_summary(options)
    nfe = f", {s['nfe']} network evaluations per sample" if "nfe" in s else ""
    weights = "EMA" if not cli.no_ema and run.state.get("ema") is not None else "raw"
    print(f"{cli.mode}: {what} from {ckpt} (step {run.state.get('step', 0)}, {weights} weights, {s['sampler']} "
          f"{s['steps']}{nfe}) -> {out}", file=sys.stderr)


def _options(cli, run) -> dict:
    from .eval_common import sampler_options

    return sampler_options(run, cli.sampler, cli.steps, cli.sigma_min, cli.delta)


def _batch(cli, run, shape, options: dict, n: int) -> tuple:
    """(batch size, how it was chosen) for drawing n samples: --val_batch_size, or auto (its default here)."""
    from .batching import auto_batch_size

    if cli.val_batch_size not in (None, "auto"):
        return cli.val_batch_size, {"batch_size": cli.val_batch_size, "rule": "--val_batch_size"}
    batch, how = auto_batch_size(run, shape, options, n, run.device, run.cfg.eval.batch_size)
    print(f"{cli.mode}: batch size {batch} ({how['rule']})", file=sys.stderr)
    return batch, how


def _split(cli, run, factor: int = 1, split: str | None = None):
    if getattr(cli, "data_note", None):
        print(cli.data_note, file=sys.stderr)
        cli.data_note = None                    # once, however many splits a mode reads
    data = build.build_dataset(run.cfg, cli.data_folder, factor, cli.data_replaces_root)
    if (split or cli.dataset_split) == "train":
        return data.train, data.train_labels if run.cfg.data.conditional else None
    return data.valid, data.valid_labels if run.cfg.data.conditional else None


# ------------------------------------------------------------------------ generate / superres

def generate(cli, run, ckpt: str, out_root: Path) -> int:
    from .eval_fields import generate_name, image_grid, sample_fields, sample_images

    factor = cli.factor if cli.mode == "superres" else 1
    options = _options(cli, run)
    name = cli.tag or generate_name(cli.mode, ckpt, options, factor, cli.sigma_min, not cli.no_ema, cli.seed)
    out = out_root / name
    n = cli.Ntest or run.cfg.eval.n_samples
    progress, lines = _progress(cli)
    _start(cli, run, ckpt, out, f"{n} samples", options)
    real, _ = _split(cli, run, factor, split="valid")
    batch, how = _batch(cli, run, run.shape if run.kind == "image" else tuple(real.shape[1:]), options, n)

    def compute():
        if run.kind == "image":
            arrays, summary = sample_images(cli, run, real, options, name, ckpt, n, batch, progress, lines)
            return {**summary, "batching": how}, arrays, "samples.npz", \
                lambda f: image_grid(f, torch.from_numpy(arrays["samples"]))
        arrays, summary = sample_fields(cli, run, real, options, factor, name, ckpt, n, batch, progress, lines)
        return {**summary, "batching": how}, arrays, "samples.npz", None

    return _evaluate(cli, out, compute)


# ------------------------------------------------------------------------ elbo / fid / frechet

def _write_log(cli, ckpt: str, mode: str, value: float):
    """after(out) of _evaluate: <mode>_log.txt beside metrics.json, one line (replaced with --overwrite, like the
    rest of the folder)."""
    from .eval_images import log_line
    from .files import atomic_write_text

    line = log_line(mode, Path(cli.exp_name) / ckpt, value)
    return lambda out: atomic_write_text(out / f"{mode}_log.txt", line + "\n")


def elbo(cli, run, ckpt: str, out_root: Path) -> int:
    from .eval_common import run_summary
    from .eval_images import elbo as elbo_of, elbo_line, elbo_name

    delta = _options(cli, run)["delta"]
    name = cli.tag or elbo_name(ckpt, delta, cli.dataset_split, cli.n_images, not cli.no_ema, cli.seed)
    out = out_root / name
    real, labels = _split(cli, run)
    images = real[:cli.n_images] if cli.n_images else real
    labels = None if labels is None else labels[:len(images)]
    batch = cli.val_batch_size or run.cfg.eval.batch_size
    _start(cli, run, ckpt, out, f"negative ELBO of {len(images)} {cli.dataset_split} images", {"delta": delta})

    def compute():
        terms, summary = elbo_of(run, images, labels, delta, batch, cli.seed, _progress(cli)[1])
        print(elbo_line(summary), file=sys.stderr)
        result = {**run_summary(run, name, "elbo", ckpt, not cli.no_ema), "delta": delta, "split": cli.dataset_split,
                  "seed": cli.seed, "n_images": len(images), "K": int(run.process.K),
                  "per_level_nats": summary["per_level_nats"], "per_level_bpd": summary["per_level_bpd"],
                  "metrics": {"bpd": summary["bpd"], "neg_elbo_nats": summary["neg_elbo_nats"]}}
        return result, {"terms": terms.numpy()}, "terms.npz", _write_log(cli, ckpt, "elbo", summary["bpd"])

    return _evaluate(cli, out, compute, run)


def _sample_metric(cli, run, ckpt: str, out_root: Path, metric, reference: str | None = None,
                   extra: dict | None = None) -> int:
    """metric(fake, real, batch) -> metrics of --Ntest samples against the --dataset_split images, or against
    `reference` (a word for the folder name; the real images are not loaded then); extra: more of metrics.json."""
    from .eval_common import generate as draw, labels_for, run_summary, sampler_summary
    from .eval_images import sample_metric_name

    options = _options(cli, run)
    n = cli.Ntest or (FID_DEFAULT_N if cli.mode == "fid" else run.cfg.eval.n_samples)
    if n < 2:
        raise UserError(f"--Ntest must be at least 2 for a Frechet distance; got {n}")
    name = cli.tag or sample_metric_name(cli.mode, ckpt, options, n, reference or cli.dataset_split, cli.sigma_min,
                                         not cli.no_ema, cli.seed)
    out = out_root / name
    progress, lines = _progress(cli)
    against = reference or f"the {cli.dataset_split} images"
    _start(cli, run, ckpt, out, f"{n} samples against {against}", options)
    real = None if reference else _split(cli, run)[0]
    batch, how = _batch(cli, run, run.shape, options, n)

    def compute():
        seeds = [cli.seed + k for k in range(n)]
        timing = {}
        fake = draw(run, seeds, run.shape, options, batch, progress, lines, labels_for(run, seeds), timing)
        values = metric(fake, real, batch)
        summary = {**run_summary(run, name, cli.mode, ckpt, not cli.no_ema), "n": n, "seed": cli.seed,
                   "split": reference or cli.dataset_split, "n_real": None if real is None else len(real),
                   **sampler_summary(options), **(extra or {}), "batching": how, "generation": timing,
                   "metrics": values}
        after = _write_log(cli, ckpt, "fid", values["fid"]) if cli.mode == "fid" else None
        return summary, {"samples": fake.numpy(), "seeds": np.array(seeds)}, "samples.npz", after

    return _evaluate(cli, out, compute, run)


def fid(cli, run, ckpt: str, out_root: Path) -> int:
    """clean-fid's FID (fid.py); the extractor and any reference statistics are checked before sampling."""
    from . import fid as fid_mod
    from .eval_images import fid as fid_of

    fid_mod.cleanfid()
    model, described = fid_mod.load_feature_model(cli.fid_weights, run.device)
    reference, word = None, None
    info = {"backend": fid_mod.backend(), "resize": fid_mod.RESIZE, "features": described,
            "weights": str(cli.fid_weights), "reference": f"the run's {cli.dataset_split} images"}
    if cli.dataset_name_cleanfid:
        mu, sigma, path = fid_mod.reference_statistics(cli.dataset_name_cleanfid, cli.dataset_split,
                                                       run.shape[-1], cli.fid_stats_dir)
        reference = (mu, sigma)
        word = f"{cli.dataset_name_cleanfid}_{cli.dataset_split}".lower()
        info["reference"] = f"clean-fid statistics {Path(path).name} ({path})"
    verbose = _progress(cli)[0]
    return _sample_metric(cli, run, ckpt, out_root,
                          lambda fake, real, batch: fid_of(model, fake, real, reference, batch, run.device, verbose),
                          reference=word, extra={"fid": info})


def frechet(cli, run, ckpt: str, out_root: Path) -> int:
    from .eval_images import frechet as frechet_of, frechet_interval_note

    note = {} if run.cfg.data.dataset == "digits" else {
        "note": "the classifier knows scikit-learn's 8x8 digits only: a rough structural comparison here"}
    return _sample_metric(cli, run, ckpt, out_root,
                          lambda fake, real, batch: {**frechet_of(fake, real, seed=run.cfg.seed), **note},
                          extra={"frechet_interval": frechet_interval_note()})


# ------------------------------------------------------------------------ score (toy)

def score(cli, run, ckpt: str, out_root: Path) -> int:
    from . import toy_analysis as ta
    from .eval_common import generate as draw, run_summary, sampler_summary
    from .eval_fields import generate_name

    options = _options(cli, run)
    name = cli.tag or generate_name("score", ckpt, options, ema=not cli.no_ema, seed=cli.seed)
    out = out_root / name
    n = cli.Ntest or run.cfg.eval.n_samples
    if n < 2:
        raise UserError(f"--Ntest must be at least 2 for the mode balance; got {n}")
    progress, lines = _progress(cli)
    _start(cli, run, ckpt, out, f"score error on {SCORE_TIMES} times and {n} samples", options)
    data, analytic, schedule = ta.toy_parts(run.cfg)
    # the exact prior p_1 needs the data law; the uniform one does not
    call = {**options, "data": data} if getattr(run.process, "prior", "uniform") == "exact" else options
    batch, _ = _batch(cli, run, run.shape, call, n)

    def compute():
        seeds = [cli.seed + k for k in range(n)]
        x = draw(run, seeds, run.shape, call, batch, progress, lines)
        stats, r = ta.sample_analysis(x.double(), data, ta.final_sigma(schedule, options.get("sampler",
                                                                                             "euler_maruyama")))
        ts = np.linspace(0.0, 1.0, SCORE_TIMES)
        errors = ta.score_analysis(ta.as_score(run.model, run.device), analytic, data, schedule, ts, SCORE_DRAWS,
                                   torch.Generator().manual_seed(cli.seed))
        per_t = errors.pop("score_error_per_t")
        summary = {**run_summary(run, name, "score", ckpt, not cli.no_ema), "n": n, "seed": cli.seed,
                   **sampler_summary(options), "draws_per_t": SCORE_DRAWS, "metrics": {**errors, **stats},
                   "score_error_per_t": per_t}
        arrays = {"samples": x.numpy(), "seeds": np.array(seeds), "nearest_mode_distance": r.numpy(),
                  "t": ts, "weighted": np.array([e["weighted"] for e in per_t]),
                  "reference": np.array([e["reference"] for e in per_t])}
        title = f"{name}: balance {stats['mode_balance']:.3f}"
        return summary, arrays, "samples.npz", lambda f: ta.scatter(f, x, data, title)

    return _evaluate(cli, out, compute)


MODE_FUNCTIONS = {"generate": generate, "superres": generate, "elbo": elbo, "fid": fid, "frechet": frechet,
                  "score": score}
