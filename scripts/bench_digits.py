#!/usr/bin/env python
"""Every image system on scikit-learn's 8 x 8 digits, one harness, one quality number.

    python scripts/bench_digits.py                       # 3000 steps per system, 2 runs at a time
    python scripts/bench_digits.py --steps 300 --systems heat,rectified_flow    # a quick look

Each system trains through train.py with the SAME U-Net (32 channels, [1, 2], one residual
block, attention at 4 x 4), the same optimiser (AdamW, lr 1e-3, 100 warm-up steps, cosine
decay, EMA 0.995), the same batch (64) and the same number of steps on one CPU thread, so
only the process differs: heat dissipation and three linear maps (levels process), VE
score-based diffusion, and the starter's interpolants (rectified flow, cosine, linear VP).

Quality: the Frechet distance in the features of a small digits classifier (digits_classifier.py;
trained deterministically in seconds, no download) between N generated digits and half A of
the 1797 digits, against the floor, the distance between half B and half A (same sizes: what
a perfect generator gets). Levels runs also give the negative ELBO (bits/dim) on the validation
split. Prints a table, writes <out>/bench_digits.json and a figure of samples per system.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SYSTEMS = {
    "heat": ["configs/digits/default_digits_configs.yaml"],
    "identity": ["configs/digits/digits_identity.yaml"],
    "constant_velocity": ["configs/digits/digits_constant_velocity.yaml"],
    "fixed_random": ["configs/digits/digits_fixed_random.yaml"],
    "ve": ["configs/digits/digits_ve_unet.yaml"],
    "rectified_flow": ["configs/starter/rectified_flow_digits.yaml"],
    "cosine": ["configs/starter/cosine_digits.yaml"],
    "linear_vp": ["configs/starter/linear_vp_digits.yaml"],
}
SAME = ["net.type=unet", "net.unet.model_channels=32", "net.unet.channel_mult=[1,2]", "net.unet.num_res_blocks=1",
        "net.unet.attention_levels=[1]", "net.unet.dropout=0.0", "net.unet.num_heads=2", "optim.name=adamw",
        "optim.lr=1e-3", "optim.warmup=100", "optim.schedule=cosine", "optim.weight_decay=0.0",
        "optim.ema_rate=0.995", "optim.grad_clip=1.0", "train.batch_size=64", "train.epochs=null",
        "train.threads=1", "train.tensorboard=false", "eval.evaluators=[]", "train.snapshot_interval=null",
        "train.figure_interval=null", "data.val_size=0.15", "seed=0"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000, help="optimiser steps per system (default 3000)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated systems (default: all)")
    p.add_argument("--jobs", type=int, default=2, help="runs trained at the same time, one thread each (default 2)")
    p.add_argument("--n", type=int, default=899, help="generated digits per system (default 899 = half B's size)")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench_digits"), help="run folders and the JSON")
    p.add_argument("--assets", default=str(ROOT / "assets" / "digits"), help="where the figure goes")
    p.add_argument("--fresh", action="store_true", help="delete existing run folders first (else they resume)")
    return p.parse_args(argv)


def train(name, steps, out: Path, fresh: bool) -> float:
    import shutil

    run = out / name
    if fresh and run.exists():
        shutil.rmtree(run)
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", *[str(ROOT / f) for f in SYSTEMS[name]],
           "--savedir", str(run), "--quiet", *SAME, f"train.steps={steps}",
           f"train.record_interval={steps}", f"train.checkpoint_interval={max(1, steps // 10)}",
           f"train.log_interval={max(1, steps // 20)}"]
    began = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: train.py failed:\n{proc.stderr[-2000:]}")
    return time.time() - began


def halves():
    """The 1797 digits in [0, 1], split into two seeded disjoint halves A (898) and B (899)."""
    import torch

    from model_code.data.images import load_digits_images

    x = load_digits_images(8)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order[:len(x) // 2]], x[order[len(x) // 2:]]


def evaluate(name, run: Path, n: int, real_a, real_b) -> dict:
    import torch

    from model_code import build, digits_classifier
    from model_code.processes.levels import elbo_summary

    loaded = build.load_run(run, "model.pt", "cpu")
    options = build.sampler_setup(loaded.cfg)
    samples = torch.cat([loaded.process.sample(loaded.model, list(range(i, min(n, i + 256))), loaded.shape, "cpu",
                                               **options) for i in range(0, n, 256)]).clamp(0, 1)
    row = {"system": name, "process": loaded.cfg.process.type, "steps": loaded.state["step"],
           "nfe": nfe(loaded.cfg, options), "frechet": digits_classifier.frechet_digits(samples, real_a),
           "samples": samples[:36]}
    if loaded.cfg.process.type == "levels":
        data = build.build_dataset(loaded.cfg, None)
        terms = loaded.process.elbo_terms(loaded.model, data.valid, torch.Generator().manual_seed(0))
        row["bpd"] = elbo_summary(terms, data.valid[0].numel())["bpd"]
    return row


def nfe(cfg, options) -> int:
    from model_code.samplers import network_evaluations

    if cfg.process.type == "levels":
        return cfg.process.levels.K
    return network_evaluations(options["sampler"], len(options["sigmas"]), options)


def main(argv=None) -> int:
    import torch

    from model_code import digits_classifier, plotting_images

    args = parse_args(argv)
    torch.set_num_threads(1)
    names = [s for s in args.systems.split(",") if s]
    unknown = [s for s in names if s not in SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown system(s) {', '.join(unknown)} (one of: {', '.join(SYSTEMS)})")
    out = Path(args.out)
    with ThreadPoolExecutor(args.jobs) as pool:
        seconds = dict(zip(names, pool.map(lambda s: train(s, args.steps, out, args.fresh), names)))
    real_a, real_b = halves()
    floor = digits_classifier.frechet_digits(real_b, real_a)
    rows = []
    for name in names:
        row = evaluate(name, out / name, args.n, real_a, real_b)
        row["train_s"] = round(seconds[name], 1)
        row["x_floor"] = row["frechet"] / floor
        rows.append(row)
        print(f"{name}: Frechet {row['frechet']:.2f} ({row['x_floor']:.1f} x floor)", file=sys.stderr)
    plotting_images.save_benchmark_figure([r.pop("samples") for r in rows],
                                          [f"{r['system']}: {r['frechet']:.1f}" for r in rows],
                                          Path(args.assets) / "bench_digits.png")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_digits.json").write_text(json.dumps({"steps": args.steps, "n": args.n, "floor": floor,
                                                       "rows": rows}, indent=2) + "\n")
    print("| system | process | steps | train s (1 thread) | NFE | Frechet | x floor | bits/dim |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        bpd = f"{r['bpd']:.3f}" if "bpd" in r else "-"
        print(f"| {r['system']} | {r['process']} | {r['steps']} | {r['train_s']:.0f} | {r['nfe']} | "
              f"{r['frechet']:.2f} | {r['x_floor']:.2f} | {bpd} |")
    print(f"floor (real half B vs real half A, {len(real_b)} vs {len(real_a)} digits): {floor:.2f}")
    return 0


if __name__ == "__main__":
    from model_code.errors import run_cli

    run_cli(main, "bench_digits.py")
