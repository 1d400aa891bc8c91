#!/usr/bin/env python
"""Threads or processes: 1 process x N threads against N processes x 1 thread (torchrun).

    python scripts/bench_threads.py                      # both layouts on this machine's cores
    python scripts/bench_threads.py --quick              # tiny, for the tests

Each layout trains the same config (the same global batch) with train.py twice, for a short
and a long number of optimiser steps, and the training throughput is the slope
(long - short) x batch / (t_long - t_short): start-up, data set-up and the last evaluation
cancel out. The layouts alternate within each round, so a load change on a shared machine hits
both. Prints a markdown table of samples per second; --json writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_code.threads import available_cores  # noqa: E402

CONFIGS = {
    # name: (config file, overrides that keep the step the config's own and drop evaluation)
    "fno_grf32": ("exps/json/grf-quality.json", ["max_minutes=null", "grf_n_train=512", "grf_n_valid=64"]),
    "uno_quickstart": ("exps/json/quickstart.json", ["resolution=32"]),
}
QUIET = ["train.epochs=null", "train.tensorboard=false", "train.device=cpu", "eval.n_samples=8",
         "eval.batch_size=8", "eval.n_plot=4"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS),
                   help="training configs to time (default: all)")
    p.add_argument("--workers", type=int, default=None,
                   help="N: compare 1 x N threads with N x 1 (default: the available cores, at least 2)")
    p.add_argument("--steps", type=int, nargs=2, default=(10, 210), metavar=("SHORT", "LONG"),
                   help="optimiser steps of the short and the long run (default 10 210)")
    p.add_argument("--rounds", type=int, default=3, help="alternating repetitions; the median is kept (default 3)")
    p.add_argument("--quick", action="store_true", help="tiny runs (2 and 6 steps, one round) for the tests")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    p.add_argument("--data_dir", default=os.environ.get("DATA_DIR", "data"),
                   help="DATA_DIR for volcano configs (default $DATA_DIR or data; synthetic data is written "
                        "there when missing)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.rounds = (2, 6), 1
    if not 0 < args.steps[0] < args.steps[1]:
        p.error("--steps needs 0 < SHORT < LONG")
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    return args


def command(layout: str, workers: int, config: str, overrides: list, savedir: Path, steps: int) -> tuple:
    """(argv, environment) of one training run."""
    threads = workers if layout == "threads" else 1
    settings = [*overrides, *QUIET, f"train.steps={steps}", f"train.record_interval={steps}",
                f"train.log_interval={steps}", f"train.checkpoint_interval={steps}", f"train.threads={threads}"]
    script = [str(ROOT / "train.py"), "--config", str(ROOT / config), "--savedir", str(savedir), "--quiet",
              *settings]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if layout == "threads":
        return [sys.executable, *script], env
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={workers}",
            *script], env


def timed_run(argv, env, savedir: Path) -> float:
    shutil.rmtree(savedir, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"bench_threads.py: training failed ({' '.join(argv[:4])} ...): " + " | ".join(tail))
    return seconds


def throughput(steps, seconds, batch: int) -> float:
    """Samples per second of training alone: the slope between a short and a long run, so the
    fixed costs (start-up, data, the final evaluation and checkpoint) cancel."""
    extra = seconds[1] - seconds[0]
    if not extra > 0:
        raise SystemExit(f"bench_threads.py: the long run was not slower than the short one ({seconds[0]:.1f} s, "
                         f"{seconds[1]:.1f} s): raise --steps")
    return (steps[1] - steps[0]) * batch / extra


def batch_size(config: str, overrides: list) -> int:
    from model_code import config as config_mod

    return config_mod.load([ROOT / config], overrides).train.batch_size


def main(argv=None) -> int:
    args = parse_args(argv)
    workers = args.workers or max(2, available_cores())
    if any(CONFIGS[c][0].endswith("quickstart.json") for c in args.configs):
        data = Path(args.data_dir)
        if not any(data.glob("subset_128/**/*.int")):
            subprocess.run([sys.executable, str(ROOT / "scripts" / "make_volcano.py"), "--out", str(data),
                            "--n", "64", "--seed", "0"], check=True, capture_output=True)
        os.environ["DATA_DIR"] = str(data.resolve())
    layouts = ("threads", "processes")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_threads_") as tmp:
        for name in args.configs:
            config, overrides = CONFIGS[name]
            if args.quick:
                overrides = [*overrides, "data.max_examples=48", "grf_n_train=48", "grf_n_valid=16"]
            batch = batch_size(config, overrides)
            rates = {layout: [] for layout in layouts}
            for r in range(args.rounds):
                for layout in layouts:
                    t = [timed_run(*command(layout, workers, config, overrides, Path(tmp) / f"{name}-{layout}-{s}",
                                            s), Path(tmp) / f"{name}-{layout}-{s}") for s in args.steps]
                    rate = throughput(args.steps, t, batch)
                    rates[layout].append(rate)
                    print(f"bench_threads: {name} round {r + 1}: {layout_label(layout, workers)}: "
                          f"{rate:.1f} samples/s ({t[0]:.1f} s / {t[1]:.1f} s)", file=sys.stderr, flush=True)
            median = {layout: sorted(v)[len(v) // 2] for layout, v in rates.items()}
            rows.append({"config": name, "batch": batch, "workers": workers,
                         **{f"{layout}_samples_per_s": median[layout] for layout in layouts},
                         "processes_over_threads": median["processes"] / median["threads"]})
    print(f"\n| config | global batch | 1 process x {workers} threads | {workers} processes x 1 thread | "
          f"processes / threads |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['config']} | {row['batch']} | {row['threads_samples_per_s']:.1f} samples/s | "
              f"{row['processes_samples_per_s']:.1f} samples/s | {row['processes_over_threads']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def layout_label(layout: str, workers: int) -> str:
    return f"1 process x {workers} threads" if layout == "threads" else f"{workers} processes x 1 thread"


if __name__ == "__main__":
    sys.exit(main())
