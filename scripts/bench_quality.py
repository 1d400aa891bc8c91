#!/usr/bin/env python
"""Quality benchmark: train on GRF data at 32 px (CPU), sample at 32 px and at 64 px.

Reports w_var and w_skew of the generated samples against real fields, as multiples of
the real-vs-real floor (W1 between two independent real sets of the same size), at the
training resolution and for super-resolution (a grid twice as fine, noise from the same
continuous kernel, ground truth drawn exactly at that resolution).

    python scripts/bench_quality.py                 # ~15 min training + sampling
    python scripts/bench_quality.py --quick         # a 1-minute smoke run
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from model_code import build  # noqa: E402  (after the sys.path line)
from model_code.samplers import SAMPLERS, network_evaluations  # noqa: E402


def sampler_setup(cfg, name, steps=None):
    """(sampler function, sigma grid, options) of build.sampler_setup's options."""
    options = build.sampler_setup(cfg, name, steps)
    return SAMPLERS[options.pop("sampler")], options.pop("sigmas"), options


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default=str(ROOT / "exps/json/grf-quality.json"), help="experiment file")
    p.add_argument("--minutes", type=float, default=15.0, help="training wall-time budget")
    p.add_argument("--n", type=int, default=512, help="samples per resolution (and size of each real set)")
    p.add_argument("--out", default=str(ROOT / "results/bench_quality"), help="output folder")
    p.add_argument("--run", default=None, help="evaluate this existing run folder instead of training")
    p.add_argument("--assets", action="store_true", help="also copy the figures into assets/ for README.org")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 minute of training, 64 samples")
    p.add_argument("--epsilon", type=float, default=None, help="override the run's Langevin step size")
    p.add_argument("--T", type=int, default=None, help="override the run's Langevin steps per level")
    p.add_argument("--samplers", default="annealed_langevin,heun_ode", help="comma-separated samplers to evaluate")
    return p.parse_args()


def train(cfg: str, run_dir: Path, minutes: float, quick: bool) -> float:
    extra = [f"max_minutes={minutes}"] + (["Ntest=32", "record_interval=1000", "L=20"] if quick else [])
    start = time.time()
    subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", cfg, "--savedir", str(run_dir), "--quiet",
                    *extra], check=True)
    return (time.time() - start) / 60


def evaluate(run_dir: Path, n: int, factor: int, out: Path, sampler_name: str, overrides: dict) -> dict:
    import torch

    from model_code import metrics, plotting
    from model_code.data.grf import PeriodicGRF
    from model_code.samplers import generate

    run = build.load_run(run_dir, "model.pt", "cpu")
    args, denoiser, noise = run.cfg, run.model, run.process.noise
    sampler, sigmas, options = sampler_setup(args, sampler_name)
    options.update({k: v for k, v in overrides.items() if k in options})
    res = args.data.resolution * factor
    field = PeriodicGRF(alpha=args.data.grf_alpha, tau=args.data.grf_tau)
    real_a = field.sample(n, res, torch.Generator().manual_seed(7_000))
    real_b = field.sample(n, res, torch.Generator().manual_seed(8_000))
    start = time.time()
    samples = generate(denoiser, noise, sigmas, n, (res, res), [30_000_000 + k for k in range(n)],
                       args.eval.batch_size, sampler=sampler, **options)
    seconds = time.time() - start
    gen = metrics.validation_metrics(real_a, samples, "real")
    floor = metrics.validation_metrics(real_a, real_b, "real")
    tag = f"{res}px_{sampler_name}"
    plotting.plot_stat_histograms(metrics.real_stats(real_a), metrics.real_stats(samples),
                                  {**gen, **metrics.relative_to_floor(gen, floor)}, out / f"final_stats_{tag}",
                                  kind="real", title=f"GRF benchmark at {res} px (trained at {args.data.resolution} px), "
                                                     f"{sampler_name}", exts=("png",))
    plotting.plot_fields(torch.cat([real_a[:4], samples[:4]]), out / f"samples_{tag}", kind="real", ncols=4,
                         titles=["real"] * 4 + ["generated"] * 4, exts=("png",))
    return {"resolution": res, "sampler": sampler_name, "n": n, "options": options,
            "nfe": network_evaluations(sampler_name, len(sigmas), options), "sampling_s": seconds,
            "n_nonfinite": gen["n_nonfinite"], "figures": [f"final_stats_{tag}.png", f"samples_{tag}.png"],
            **{k: gen[k] for k in ("w_var", "w_skew")}, **{f"floor_{k}": floor[k] for k in ("w_var", "w_skew")},
            **{f"{k}_x_floor": gen[k] / floor[k] for k in ("w_var", "w_skew")}}


def main() -> int:
    a = parse_args()
    n = 64 if a.quick else a.n
    minutes = 1.0 if a.quick else a.minutes
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.run:
        run_dir, train_minutes = Path(a.run), float("nan")
    else:
        run_dir = out / time.strftime("run-%Y%m%d-%H%M%S")
        train_minutes = train(a.cfg, run_dir, minutes, a.quick)
    overrides = {k: v for k, v in (("epsilon", a.epsilon), ("T", a.T)) if v is not None}
    rows = [evaluate(run_dir, n, factor, out, sampler, overrides)
            for sampler in a.samplers.split(",") for factor in (1, 2)]
    targets = {32: 3.0, 64: 5.0}
    print(f"\nGRF quality benchmark: run {run_dir}, training {train_minutes:.1f} min on CPU, {n} samples "
          f"against {n} real fields; floor = W1 between two independent real sets of {n}\n")
    print("| resolution | sampler | NFE | sampling s | w_var | floor | w_var / floor | w_skew | floor | w_skew / floor | target |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['resolution']} px | {r['sampler']} | {r['nfe']} | {r['sampling_s']:.0f} | {r['w_var']:.4f} | "
              f"{r['floor_w_var']:.4f} | {r['w_var_x_floor']:.2f} | {r['w_skew']:.4f} | {r['floor_w_skew']:.4f} | "
              f"{r['w_skew_x_floor']:.2f} | <= {targets.get(r['resolution'], 5):.0f}x |")
    (out / "bench_quality.json").write_text(json.dumps({"run": str(run_dir), "train_minutes": train_minutes,
                                                        "rows": rows}, indent=2) + "\n")
    if a.assets:
        import shutil
        for r in rows:
            for name in r["figures"]:
                shutil.copy(out / name, ROOT / "assets" / f"bench_quality_{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
