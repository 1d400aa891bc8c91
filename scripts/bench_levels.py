#!/usr/bin/env python
"""Benchmark: one CPU digits run per forward process, negative ELBO in bits/dim and a sample grid each.

    OMP_NUM_THREADS=1 python scripts/bench_levels.py --minutes 2       # ~2 min per process
    python scripts/bench_levels.py --minutes 0.2 --processes heat,identity   # a quick look

Every process trains configs/digits/default_digits_configs.yaml (the same U-Net, data, sigma,
delta and seed) with model.forward=<process> for --minutes of training time, then the EMA
weights are evaluated on the whole validation split (270 real 8 x 8 digits): the negative ELBO
(levels.py; a bound on the discrete NLL) in bits per dimension, and 36 samples from fixed seeds.
Reference points measured in the same run: the uniform distribution over the 17 grey levels
(log2 17 bits/dim) and a full-covariance Gaussian fitted to the training images (its density
times the bin width 1/16, a dequantised approximation, not a bound).
Writes <out>/<process>/ (the work folders), <out>/bench_levels.json, the table on stdout and
<assets>/bench_<process>.png + <assets>/bench_levels.png.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROCESSES = ["heat", "identity", "constant_velocity", "constant_deceleration", "fixed_random", "random_product"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=2.0, help="training time per process (default 2)")
    p.add_argument("--processes", default=",".join(PROCESSES), help="comma-separated forward processes")
    p.add_argument("--config", default=str(ROOT / "configs" / "digits" / "default_digits_configs.yaml"),
                   help="base config; each run sets model.forward=<process> on it (default: the digits config)")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench_levels"), help="work folders and the JSON")
    p.add_argument("--assets", default=str(ROOT / "assets" / "levels"), help="where the figures go")
    p.add_argument("--fresh", action="store_true", help="delete existing work folders first (else they resume)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra config overrides for every run")
    return p.parse_args(argv)


def gaussian_reference_bpd(train, valid, levels: int) -> float:
    """-log N(x; m, S) - D log(1/(levels-1)) per dimension in bits (S = Cov(train) + 1e-4 I)."""
    import torch

    x = train.reshape(len(train), -1).double()
    y = valid.reshape(len(valid), -1).double()
    cov = torch.cov(x.T) + 1e-4 * torch.eye(x.shape[1], dtype=torch.float64)
    dist = torch.distributions.MultivariateNormal(x.mean(0), covariance_matrix=cov)
    nats = -dist.log_prob(y).mean().item() - x.shape[1] * math.log(1.0 / (levels - 1))
    return nats / (x.shape[1] * math.log(2))


def main(argv=None) -> int:
    import shutil

    import torch

    from model_code import image_runs, plotting_images

    args = parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    rows = []
    grids = []
    for proc in [p for p in args.processes.split(",") if p]:
        work = out / proc
        if args.fresh and work.exists():
            shutil.rmtree(work)
        began = time.time()
        image_runs.train_main(["--config", args.config, "--workdir", str(work), "--quiet", f"model.forward={proc}",
                               f"training.max_minutes={args.minutes}", "training.n_iters=1000000",
                               "training.sampling_freq=1000000", "training.snapshot_freq=1000000",
                               "training.eval_freq=500", *args.overrides])
        train_s = time.time() - began
        run = image_runs.load_run(work, 0, "cpu")
        data = image_runs.load_data(run.cfg)
        elbo = image_runs.elbo_of(run, data.valid, run.cfg.model.delta, 270, seed=0)
        samples = image_runs.generate(run, 36, run.cfg.model.delta, 36, seed=1000)
        grid = Path(args.assets) / f"bench_{proc}.png"
        plotting_images.save_grid(samples, grid, nrow=6)
        grids.append(samples)
        per = elbo["per_level_bpd"]
        rows.append({"process": proc, "steps": run.step, "train_s": round(train_s, 1), "bpd": elbo["bpd"],
                     "prior_bpd": per[-1], "levels_bpd": sum(per[1:-1]), "l0_bpd": per[0],
                     "n_valid": elbo["n_images"], "grid": str(grid.relative_to(ROOT)) if grid.is_absolute() and
                     ROOT in grid.parents else str(grid)})
        print(f"{proc}: {run.step} steps in {train_s:.0f} s, {elbo['bpd']:.3f} bits/dim", file=sys.stderr)
    data = image_runs.load_data(image_runs.load_config(args.config))
    reference = {"uniform_bpd": math.log2(data.levels),
                 "gaussian_bpd": gaussian_reference_bpd(data.train, data.valid, data.levels)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_levels.json").write_text(json.dumps({"minutes": args.minutes, "rows": rows,
                                                       "reference": reference}, indent=2) + "\n")
    plotting_images.save_benchmark_figure(grids, [f"{r['process']}: {r['bpd']:.2f} bits/dim" for r in rows],
                                          Path(args.assets) / "bench_levels.png")
    head = "| process | steps | train s | neg. ELBO bits/dim | prior term | levels 1..K-1 | L_0 |"
    print(head)
    print("|" + "---|" * 7)
    for r in rows:
        print(f"| {r['process']} | {r['steps']} | {r['train_s']:.0f} | {r['bpd']:.3f} | {r['prior_bpd']:.3f} | "
              f"{r['levels_bpd']:.3f} | {r['l0_bpd']:.3f} |")
    print(f"reference (same data): uniform over {data.levels} levels {reference['uniform_bpd']:.3f} bits/dim; "
          f"full-covariance Gaussian (dequantised) {reference['gaussian_bpd']:.3f} bits/dim")
    return 0


if __name__ == "__main__":
    from model_code.errors import run_cli

    run_cli(main, "bench_levels.py")
