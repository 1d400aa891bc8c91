#!/usr/bin/env python
"""Model benchmark: the project's function-space generative models side by side at equal compute.

Each model trains with train.py (a subprocess, one after the other, never in parallel) for
the same wall-clock budget on the same CPU threads (--minutes, default 4, train.threads=2),
on the same data, then samples at the training resolution (32 px) and at twice it (64 px,
super-resolution: same seeds, the noise from the same continuous kernel):

    ve    score-based VE, exps/json/grf-quality.json (FNO), evaluated twice from one run:
          annealed_langevin as published (the config's L levels, T steps each) and heun_ode
          (the config's 20 levels: 39 network evaluations)
    ffm   functional flow matching, exps/json/ffm-grf.json (rectified-flow interpolant + FNO, heun_ode)
    ffm_l02  the same with input noise of kernel length scale 0.02 instead of 0.05 (a model choice
          for super-resolution: more noise power above the training grid's Nyquist)
    gano  the adversarial baseline, configs/gano/<dataset>_32px.yaml (UNO generator, 1 evaluation)

Data sets: grf (the GRF benchmark at 32 px, the configs as they are) and volcano (synthetic
phase fields at 32 px, written once by scripts/make_volcano.py --n 1024 --seed 0 into
<out>/data; ve / ffm get data.dataset=volcano data.resolution=32 data.npad=0, ve also
process.sigma_data=0.7, the phase channels' standard deviation). Every run counts steps, not
epochs, so that the budget is checked after every step, and evaluates nothing inside the
budget (RUN_SETTINGS below says why).

Measured for every (data set, resolution, model / sampler), n samples from seeds 30_000_000 + k:
network evaluations (NFE) and seconds per sample (after an untimed warm-up); the training time
actually used (the last `time` of the run's results.json) and its steps; w_var, w_skew, w_total
(model_code.evaluators.FieldStats) as multiples of the real-vs-real floor, with the interval
[w / floor_p95, w / floor_p05] from the floor's bootstrap percentiles (the multiple itself
divides by the floor of one split of the real set, which can lie outside its bootstrap range,
and then so does the multiple); the power-spectrum error (model_code.spectrum, nyquist 16 = the
32 px grid's) and its multiple of the floor, at 64 px split into the trained bands (low,
k <= 16) and the unseen ones (high), with the mean power ratio P_gen / P_real of the high bands
(< 1: too smooth, > 1: too rough). Real fields: GRF drawn exactly at each resolution
(PeriodicGRF, n fields); volcano: the validation split (102 of the 1024 fields) on the finer grid.

Writes <out>/bench_models.json, <out>/spectra_<dataset>_<res>px.png (every model on one
figure) and <out>/samples_<dataset>_64px.png (a row per model, real first); prints a markdown
table. The training runs stay in <out>/runs/<dataset>_<model> (--reuse evaluates them again).

    python scripts/bench_models.py                  # 6 runs x 4 min of training, then sampling
    python scripts/bench_models.py --assets         # the same, figures copied into assets/ (make bench)
    python scripts/bench_models.py --quick          # smoke run: 0.5 min per model, 64 samples (~8 min)

On a quiet 2-core machine the default run takes about an hour: 6 x ~4.7 min of training, then
sampling, dominated by VE's annealed Langevin sampler at 64 px (121 network evaluations per sample).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

THREADS = 2
TRAIN_RES = 32
NYQUIST = TRAIN_RES // 2            # the training grid's Nyquist wavenumber (cycles per unit domain)
FACTORS = (1, 2)
SEED0 = 30_000_000                  # sample k: seed SEED0 + k (eval.py's seeded generation)
REAL_SEED = 7_000                   # GRF real fields (as scripts/bench_quality.py)
VOLCANO_N, VOLCANO_SEED = 1024, 0
N_GRID = 6                          # samples per row of the sample grids
DATASETS = ("grf", "volcano")
MODELS = ("ve", "ffm", "ffm_l02", "gano")
# A model choice for super-resolution: the same FFM with input noise of kernel length scale 0.02
# instead of 0.05, whose fine-scale power (above the 32 px grid's Nyquist) is far larger.
FINE_NOISE = ["noise.length_scale=0.02"]
W1 = ("w_var", "w_skew", "w_total")

# Config file of each model per data set.
CONFIGS = {
    "ve": {"grf": "exps/json/grf-quality.json", "volcano": "exps/json/grf-quality.json"},
    "ffm": {"grf": "exps/json/ffm-grf.json", "volcano": "exps/json/ffm-grf.json"},
    "ffm_l02": {"grf": "exps/json/ffm-grf.json", "volcano": "exps/json/ffm-grf.json"},
    "gano": {"grf": "configs/gano/grf_32px.yaml", "volcano": "configs/gano/volcano_32px.yaml"},
}
# Samplers evaluated per model (None: the config's own; GANO has a single generator pass).
SAMPLERS = {"ve": ("annealed_langevin", "heun_ode"), "ffm": (None,), "ffm_l02": (None,), "gano": (None,)}

VOLCANO_DATA = ["data.dataset=volcano", f"data.resolution={TRAIN_RES}", "data.npad=0"]
# Data-set overrides per model (GANO's volcano config already has them).
DATA_OVERRIDES = {
    ("ve", "volcano"): VOLCANO_DATA + [
        # The EDM preconditioning expects the data's standard deviation: the cos / sin channels of
        # phase fields have 0.71 (measured on the synthetic set: 0.705 / 0.709), the GRF benchmark
        # 1.0 (unit pointwise variance, what grf-quality.json states). sigma_max = 20 stays: it is
        # far above the largest distance between two fields in [-1, 1] (RMS about 1.4), as for GRF.
        "process.sigma_data=0.7"],
    ("ffm", "volcano"): VOLCANO_DATA,       # the interpolant has no data scale to set
    ("ffm_l02", "grf"): FINE_NOISE,
    ("ffm_l02", "volcano"): VOLCANO_DATA + FINE_NOISE,
}
# Every run: the budget and the threads, plus
# - counting in steps, not epochs: the trainer checks max_minutes at the end of each unit, so
#   with epochs a run could overshoot the budget by up to an epoch (minutes for GANO on a busy
#   CPU); with steps, by one step. The learning rate is constant in every config (no schedule
#   length to preserve).
# - no evaluation inside the budget: the evaluators cost each model differently (121 network
#   evaluations per sample for VE's Langevin, 1 for GANO); the trainer still evaluates once
#   after the budget, outside the measured `time`.
# - the validation loss on 128 fields every 100 steps and model.pt every 500 steps (and at the
#   end): about 1 % of the budget, the same for every model.
# - the trainer's final evaluation (after the budget; not used here) on 16 samples only: VE's
#   Langevin sampler makes it the slowest part of a short run otherwise.
RUN_SETTINGS = ["train.epochs=null", "train.steps=100000000", "train.log_interval=100",
                "train.checkpoint_interval=500", "train.record_interval=100000000", "eval.n_valid=128",
                "eval.n_samples=16"]


# ------------------------------------------------------------------ training
def train_overrides(model: str, dataset: str, minutes: float) -> list:
    """The key=value overrides of one training run."""
    out = list(DATA_OVERRIDES.get((model, dataset), []))
    return out + [f"train.max_minutes={minutes:g}", f"train.threads={THREADS}", *RUN_SETTINGS]


def train_command(model: str, dataset: str, run_dir: Path, minutes: float) -> list:
    return [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / CONFIGS[model][dataset]),
            "--savedir", str(run_dir), "--quiet", *train_overrides(model, dataset, minutes)]


def check_overrides(datasets, models, minutes: float) -> None:
    """Every (data set, model) config with its overrides loads (before any training starts)."""
    from model_code import config

    for dataset in datasets:
        for model in models:
            cfg = config.load([str(ROOT / CONFIGS[model][dataset])], train_overrides(model, dataset, minutes))
            if cfg.data.dataset != dataset or cfg.data.resolution != TRAIN_RES:
                raise SystemExit(f"bench_models.py: {model} on {dataset} loads data.dataset={cfg.data.dataset}, "
                                 f"resolution {cfg.data.resolution}; expected {dataset} at {TRAIN_RES} px")


def last_log_line(run_dir: Path) -> dict:
    """The last line of the run's results.json (its `time`: training seconds, its `step`)."""
    path = Path(run_dir) / "results.json"
    if not path.exists():
        return {}
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def make_volcano(data_dir: Path) -> None:
    """The synthetic volcano set, written once (a second call finds it and does nothing)."""
    if any((data_dir / "subset_128").rglob("*.int")):
        return
    print(f"== writing {VOLCANO_N} synthetic volcano fields to {data_dir}", flush=True)
    subprocess.run([sys.executable, str(ROOT / "scripts/make_volcano.py"), "--out", str(data_dir), "--n",
                    str(VOLCANO_N), "--seed", str(VOLCANO_SEED), "--quiet"], check=True)


def train(model: str, dataset: str, run_dir: Path, minutes: float, data_dir: Path,
          reuse: bool) -> dict:
    """Train (or, with reuse and a model.pt there, keep) one run; returns its training record."""
    if reuse and (run_dir / "model.pt").exists():
        print(f"== {dataset} / {model}: reusing {run_dir}", flush=True)
        wall = None
    else:
        if run_dir.exists():                # a fresh run: train.py would resume an old one past the budget
            shutil.rmtree(run_dir)
        cmd = train_command(model, dataset, run_dir, minutes)
        print(f"== {dataset} / {model}: training {minutes:g} min on {THREADS} threads -> {run_dir}", flush=True)
        start = time.time()
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "DATA_DIR": str(data_dir)})
        wall = time.time() - start
    last = last_log_line(run_dir)
    budget = json.loads((run_dir / "config.json").read_text())["train"]["max_minutes"]
    if budget != minutes:
        print(f"   warning: {run_dir} was trained for {budget} min, not --minutes {minutes:g}", flush=True)
    return {"run": str(run_dir), "budget_minutes": budget, "train_s": last.get("time"), "steps": last.get("step"),
            "train_wall_s": wall, "config": CONFIGS[model][dataset],
            "overrides": train_overrides(model, dataset, minutes)}


# ---------------------------------------------------------------- real fields
def real_fields(dataset: str, cfg, n: int, factor: int, data_dir: Path):
    """The real fields at TRAIN_RES * factor: GRF drawn exactly (n fields), volcano the validation split."""
    import torch

    from model_code import build
    from model_code.data.grf import PeriodicGRF

    if dataset == "grf":
        field = PeriodicGRF(alpha=cfg.data.grf_alpha, tau=cfg.data.grf_tau)
        return field.sample(n, TRAIN_RES * factor, torch.Generator().manual_seed(REAL_SEED))
    return build.build_dataset(cfg, str(data_dir), resolution_factor=factor).valid


class Reference:
    """What every model of one (data set, resolution) is compared with: real fields, their stats and floors."""

    def __init__(self, real, kind: str):
        from model_code import metrics
        from model_code.evaluators import FieldStats
        from model_code.spectrum import spectrum_floor

        self.real, self.kind = real, kind
        self.stats = FieldStats(kind, real, seed=0)
        self.spectrum = metrics.radial_power_spectrum(real)
        self.spectrum_floor = spectrum_floor(real, NYQUIST, seed=0)

    def metrics(self, samples) -> dict:
        from model_code.spectrum import spectrum_metrics

        values = self.stats.values(samples)
        values.update(spectrum_metrics(self.real, samples, nyquist=NYQUIST, real_spectrum=self.spectrum,
                                       floor=self.spectrum_floor))
        values.update(floor_intervals(values))
        return values


# ----------------------------------------------------------------- the maths
def floor_intervals(values: dict) -> dict:
    """<m>_x_floor_lo / _hi = <m> / floor_<m>_p95, <m> / floor_<m>_p05 for each W1 metric.

    The multiple of the floor with the floor's bootstrap interval: a larger floor gives the
    smaller multiple. Missing keys, non-finite values or a floor percentile <= 0 give no entry.
    """
    out = {}
    for m in W1:
        w, lo, hi = values.get(m), values.get(f"floor_{m}_p05"), values.get(f"floor_{m}_p95")
        if w is None or lo is None or hi is None or not all(map(math.isfinite, (w, lo, hi))) or lo <= 0 or hi <= 0:
            continue
        out[f"{m}_x_floor_lo"] = w / hi
        out[f"{m}_x_floor_hi"] = w / lo
    return out


def nfe_of(options: dict) -> int:
    """Network evaluations per sample of process.sample options (eval_common.sampler_summary)."""
    from model_code.eval_common import sampler_summary

    return int(sampler_summary(options)["nfe"])


def fmt(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–" if x is None else str(x)
    return f"{x:.{digits}f}"


def fmt_multiple(row: dict, m: str) -> str:
    """'1.23 [0.95, 1.60]': the multiple of the floor and its interval (or just the multiple, or –)."""
    x = row.get(f"{m}_x_floor")
    if x is None:
        return "–"
    lo, hi = row.get(f"{m}_x_floor_lo"), row.get(f"{m}_x_floor_hi")
    return fmt(x) + (f" [{fmt(lo)}, {fmt(hi)}]" if lo is not None and hi is not None else "")


def fmt_error(row: dict, name: str) -> str:
    """'0.123 (1.4x)': a spectrum error and its multiple of the real-vs-real floor."""
    if name not in row:
        return "–"
    x = row.get(f"{name}_x_floor")
    return fmt(row[name], 3) + (f" ({fmt(x, 1)}x)" if x is not None else "")


TABLE_HEAD = ("| data | px | model | sampler | NFE | s/sample | train s | steps | w_var ×floor [90%] | "
              "w_skew ×floor [90%] | w_total ×floor [90%] | spectrum err (×floor) | low (×floor) | "
              "high (×floor) | P_gen/P_real high |")


def table(rows: list) -> str:
    """The markdown table of the result rows (one per data set, resolution, model / sampler)."""
    lines = [TABLE_HEAD, "|" + "---|" * TABLE_HEAD.count(" | ") + "---|"]
    for r in rows:
        cells = [r["dataset"], str(r["resolution"]), r["model"], r["sampler"], str(r["nfe"]),
                 fmt(r["s_per_sample"], 4), fmt(r.get("train_s"), 0), "–" if r.get("steps") is None
                 else str(r["steps"]), *(fmt_multiple(r, m) for m in W1),
                 *(fmt_error(r, k) for k in ("spectrum_error", "spectrum_error_low", "spectrum_error_high")),
                 fmt(r.get("spectrum_ratio_high"), 2) if "spectrum_ratio_high" in r else "–"]
        if r.get("n_nonfinite"):
            cells[3] += f" ({r['n_nonfinite']} non-finite)"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- evaluation
def sample(run, name, n: int, factor: int):
    """n samples of a loaded run at TRAIN_RES * factor with sampler `name`: (samples, seconds, options)."""
    from model_code import build
    from model_code.processes.base import sample_in_batches

    options = build.sampler_setup(run.cfg, name)
    res = run.shape[-1] * factor
    seeds = [SEED0 + k for k in range(n)]
    shape = (run.shape[0], res, res)
    # Warm-up, untimed (FFT plans, allocations): otherwise the first model timed pays for them.
    # Sample k depends on its seed alone, so this changes no sample.
    sample_in_batches(run.process, run.model, seeds[:2], shape, run.device, 2, **options)
    start = time.time()
    samples = sample_in_batches(run.process, run.model, seeds, shape, run.device, run.cfg.eval.batch_size,
                                **options)
    return samples, time.time() - start, options


def evaluate(run, name, n: int, factor: int, ref: Reference) -> tuple:
    """One row of the table (without the data set / model / training fields) and the samples."""
    from model_code import build
    from model_code.metrics import radial_power_spectrum
    from model_code.metrics import finite_samples

    samples, seconds, options = sample(run, name, n, factor)
    label, _ = build.sampler_label(options)
    finite, _ = finite_samples(samples)
    row = {"sampler": label, "resolution": samples.shape[-1], "factor": factor, "n": n, "n_real": len(ref.real),
           "nfe": nfe_of(options), "sampling_s": seconds, "s_per_sample": seconds / n,
           "sampler_options": {k: v for k, v in options.items() if k not in ("sampler", "sigmas")},
           "n_levels": len(options["sigmas"]) if "sigmas" in options else None, **ref.metrics(samples),
           "spectrum": radial_power_spectrum(finite).tolist() if len(finite) else None}
    return row, samples


def sample_grid(real, rows: list, kind: str, path: Path, title: str) -> None:
    """One row of N_GRID fields per model (real first); path without extension (.png is added)."""
    import torch

    from model_code import plotting

    fields, titles = [real[:N_GRID]], ["real"] + [""] * (N_GRID - 1)
    for label, samples in rows:
        fields.append(samples[:N_GRID])
        titles += [label] + [""] * (N_GRID - 1)
    plotting.plot_fields(torch.cat(fields), path, kind=kind, titles=titles, ncols=N_GRID, suptitle=title,
                         exts=("png",))


def run_label(model: str, sampler: str) -> str:
    """'ve annealed_langevin', 'ffm heun_ode', 'gano' (one generator pass: no sampler to name)."""
    return model if sampler == "generator" else f"{model} {sampler}"


def data_key(cfg) -> tuple:
    """The data settings the runs of one data set must share (the real fields come from the first)."""
    d = cfg.data
    return d.dataset, d.resolution, d.npad, d.grf_alpha, d.grf_tau, d.val_size, d.split_seed, d.max_examples


def evaluate_dataset(dataset: str, runs: dict, trained: dict, n: int, out: Path, data_dir: Path) -> tuple:
    """Rows and figure names of one data set: every model / sampler at every factor."""
    import torch

    from model_code import build, plotting

    loaded = {model: build.load_run(run_dir, "model.pt", "cpu") for model, run_dir in runs.items()}
    first = next(iter(loaded.values()))
    rows, figures = [], []
    for factor in FACTORS:
        res = TRAIN_RES * factor
        real = real_fields(dataset, first.cfg, n, factor, data_dir)
        ref = Reference(real, first.kind)
        spectra, grid = {}, []
        for model, run in loaded.items():
            if run.kind != first.kind or run.shape != first.shape or data_key(run.cfg) != data_key(first.cfg):
                raise SystemExit(f"bench_models.py: {model} on {dataset} trained on {run.kind} {run.shape} "
                                 f"{data_key(run.cfg)}, the first model on {first.kind} {first.shape} "
                                 f"{data_key(first.cfg)}")
            for name in SAMPLERS[model]:
                torch.manual_seed(0)
                row, samples = evaluate(run, name, n, factor, ref)
                label = run_label(model, row["sampler"])
                row = {"dataset": dataset, "model": model, "label": label, **trained[model], **row}
                rows.append(row)
                if row["spectrum"] is not None:
                    spectra[label] = torch.tensor(row["spectrum"])
                grid.append((label, samples))
                print(f"   {dataset} {res} px {label}: {row['nfe']} NFE, {row['s_per_sample']:.4f} s/sample, "
                      f"w_total {row.get('w_total_x_floor', math.nan):.2f}x floor", flush=True)
        name = f"spectra_{dataset}_{res}px"
        plotting.plot_spectra(ref.spectrum, spectra, out / name, nyquist=NYQUIST,
                              title=f"{dataset} at {res} px (trained at {TRAIN_RES} px), {n} samples per model, "
                                    f"{len(real)} real")
        figures.append(name + ".png")
        if factor == FACTORS[-1]:
            name = f"samples_{dataset}_{res}px"
            sample_grid(real, grid, first.kind, out / name, f"{dataset} at {res} px (trained at {TRAIN_RES} px)")
            figures.append(name + ".png")
    return rows, figures


# ----------------------------------------------------------------------- CLI
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=None,
                   help="training budget per model: wall-clock minutes on 2 threads (default 4; 0.5 with --quick)")
    p.add_argument("--n", type=int, default=None,
                   help="samples per model and resolution, and GRF real fields per resolution (default 512; 64 "
                        "with --quick); volcano's real set is its validation split")
    p.add_argument("--out", default=None, help="output folder (default results/bench_models; "
                                               "results/bench_models_quick with --quick)")
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: grf, volcano")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: ve, ffm, ffm_l02 (FFM with noise length scale 0.02), gano")
    p.add_argument("--quick", action="store_true", help="smoke run: 0.5 min of training per model, 64 samples")
    p.add_argument("--reuse", action="store_true",
                   help="skip training where <out>/runs/<dataset>_<model>/model.pt exists (evaluate again); "
                        "without it every run trains afresh (an old run folder is replaced)")
    p.add_argument("--assets", action="store_true",
                   help="also copy the figures into assets/ as bench_models_<name>.png")
    a = p.parse_args(argv)
    a.datasets = [d for d in a.datasets.split(",") if d]
    a.models = [m for m in a.models.split(",") if m]
    for value, allowed, flag in ((a.datasets, DATASETS, "--datasets"), (a.models, MODELS, "--models")):
        bad = [v for v in value if v not in allowed]
        if bad or not value:
            p.error(f"{flag}: unknown or empty {bad or value} (choose from {', '.join(allowed)})")
    a.minutes = a.minutes if a.minutes is not None else (0.5 if a.quick else 4.0)
    a.n = a.n if a.n is not None else (64 if a.quick else 512)
    if not a.minutes > 0 or a.n < 4:
        p.error("--minutes must be positive and --n at least 4")
    a.out = Path(a.out) if a.out else ROOT / ("results/bench_models_quick" if a.quick else "results/bench_models")
    return a


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    a = parse_args(argv)
    began = time.time()
    import torch

    torch.set_num_threads(THREADS)          # sampling runs on the same threads as training
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    check_overrides(a.datasets, a.models, a.minutes)
    if "volcano" in a.datasets:
        make_volcano(data_dir)
    runs, trained = {}, {}
    for dataset in a.datasets:             # one after the other: every model gets the machine alone
        for model in a.models:
            run_dir = out / "runs" / f"{dataset}_{model}"
            trained[dataset, model] = train(model, dataset, run_dir, a.minutes, data_dir, a.reuse)
            runs.setdefault(dataset, {})[model] = run_dir
    train_done = time.time()
    rows, figures = [], []
    for dataset in a.datasets:
        print(f"== evaluating {dataset}: {a.n} samples per model at {TRAIN_RES} and {2 * TRAIN_RES} px", flush=True)
        r, f = evaluate_dataset(dataset, runs[dataset], {m: trained[dataset, m] for m in runs[dataset]}, a.n,
                                out, data_dir)
        rows += r
        figures += f
    total = time.time() - began
    command = "python scripts/bench_models.py " + " ".join(argv)
    budgets = sorted({v["budget_minutes"] for v in trained.values()})
    budget = f"{budgets[0]:g} min" if len(budgets) == 1 else "UNEQUAL budgets (" + ", ".join(
        f"{b:g}" for b in budgets) + " min)"
    print(f"\nModels at equal compute: {budget} of training per model on {THREADS} CPU threads "
          f"(train s: the time used, from results.json); {a.n} samples per model and resolution from seeds "
          f"{SEED0}+k; GRF against {a.n} exact real fields, volcano against its validation split; "
          f"multiples of the real-vs-real floor, in brackets w over the floor's 95th and 5th bootstrap "
          f"percentiles (the point uses one split's floor and may fall outside); spectrum bands "
          f"low <= {NYQUIST} < high. Training {train_done - began:.0f} s, total {total:.0f} s.\n")
    print(table(rows))
    summary = {"command": command.strip(), "budget_minutes": budgets[0] if len(budgets) == 1 else budgets, "threads": THREADS, "n": a.n,
               "quick": a.quick, "nyquist": NYQUIST, "seed0": SEED0, "datasets": a.datasets, "models": a.models,
               "runs": {f"{d}_{m}": v for (d, m), v in trained.items()}, "figures": figures,
               "train_seconds": train_done - began, "total_seconds": total, "rows": rows}
    (out / "bench_models.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {out / 'bench_models.json'} and {len(figures)} figures in {out}")
    if a.assets:
        for name in figures:
            shutil.copy(out / name, ROOT / "assets" / f"bench_models_{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
