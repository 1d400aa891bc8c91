#!/usr/bin/env python
"""Analyse the two-atom toy experiments against the analytic solution.

For "analytical" (the exact score, no run needed) and for every trained experiment in
RUNS_DIR/<name>/model.pt (a run folder of train.py, loaded with build.load_run) it:
  1. draws samples with the reverse SDE, the predictor-corrector sampler (reverse-SDE predictor and
     Langevin corrector) or the probability-flow ODE, plots them and saves them (samples.npz);
  2. measures the mode balance (fraction nearest to mu = (0.25, 0.75); exact: 1/2) and
     its binomial standard error;
  3. tests the distance to the nearest mode against the Rayleigh law of the final
     noise level (scale sqrt(sigma_d^2 + sigma_min^2) after the SDE, sigma_d after the ODE's
     final denoising step): KS distance and p-value, the width ratio sqrt(E r^2 / 2) / scale
     (1 when exact), plus a histogram;
  4. computes the p_t-weighted score error E_{x~p_t} sigma^2 |s - s*|^2 (and the relative
     error E|s - s*|^2 / E|s*|^2 at t = 0 and, summed over the t grid, sum_t E sigma^2|s - s*|^2 /
     sum_t E sigma^2|s*|^2) on a grid of t, with exact draws from p_t;
  5. compares the marginal of the atom positions with the analytic one (marginal.png: p_t(y) over t,
     and the samples' histogram against the exact marginal where they end; total-variation distance);
  6. writes a video (mp4) and a GIF of the learned and analytic score vector fields over t.
Results, as the seed lays them out (one folder per experiment under generated_artifacts/):
OUT/results.json, OUT/table.org (an org table), OUT/score_error.png (all experiments) and
OUT/<name>/: samples.npz, samples.png, radial.png, marginal.png, score_field.mp4, score_field.gif.
Every draw is seeded (--seed; sample k uses seed + k).
The measures are those of eval.py --mode score (model_code/toy_analysis.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

EXPERIMENTS = ["none", "analytic_regression", "fokker_planck", "consistency", "consistency_analytic"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "toy"),
                   help="folder holding one run folder per experiment (default: runs/toy)")
    p.add_argument("--experiments", nargs="+", default=["analytical", *EXPERIMENTS],
                   help="names to analyse; 'analytical' uses the exact score, any other name the run "
                        "RUNS_DIR/NAME (default: analytical and the five experiments)")
    p.add_argument("--base-config", default=str(ROOT / "configs" / "toy" / "base_config.yaml"),
                   help="config giving data and process parameters for 'analytical' "
                        "(default: configs/toy/base_config.yaml)")
    p.add_argument("--out", default=str(ROOT / "generated_artifacts"),
                   help="output folder: results.json, table.org and one folder per experiment "
                        "(default: generated_artifacts)")
    p.add_argument("--n-samples", type=int, default=5000, help="samples drawn per experiment (default 5000)")
    p.add_argument("--sampler", default="euler_maruyama",
                   choices=["euler_maruyama", "predictor_corrector", "heun_ode", "euler_ode"],
                   help="reverse-time sampler: the reverse SDE (euler_maruyama), predictor_corrector (a reverse-SDE "
                        "step then Langevin corrector steps at each level) or the probability-flow ODE (heun_ode, "
                        "euler_ode) (default euler_maruyama)")
    p.add_argument("--snr", type=float, default=0.16,
                   help="predictor_corrector: Langevin step eps = 2 snr^2 sigma^2 (default 0.16)")
    p.add_argument("--corrector-steps", type=int, default=1,
                   help="predictor_corrector: Langevin steps per level (default 1)")
    p.add_argument("--n-steps", type=int, default=500, help="sampler steps on the sigma(t) grid (default 500)")
    p.add_argument("--n-times", type=int, default=21, help="t values in [0, 1] for the score error (default 21)")
    p.add_argument("--n-error", type=int, default=4000, help="draws from p_t per t for the score error (default 4000)")
    p.add_argument("--frames", "--gif-frames", dest="frames", type=int, default=16,
                   help="frames (values of t) of the score-field video and GIF (default 16; 0: neither)")
    p.add_argument("--no-gif", action="store_true", help="write the score-field video (mp4) without the GIF")
    p.add_argument("--marginal-bins", type=int, default=100,
                   help="bins of the atom-position histogram in marginal.png and its TV distance (default 100)")
    p.add_argument("--grid", type=int, default=17, help="grid points per axis of the score-field plots (default 17)")
    p.add_argument("--batch", type=int, default=1000, help="samples drawn per sampler call (default 1000)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return p.parse_args(argv)


def analyse_one(name, args, out: Path, base_cfg):
    import numpy as np
    import torch

    from model_code import build, plotting_toy
    from model_code import toy_analysis as ta
    from model_code.files import atomic_write

    if name == "analytical":
        cfg = base_cfg
        process, model = ta.exact_model(cfg)
        score = model
    else:
        run_dir = Path(args.runs_dir) / name
        if not (run_dir / "model.pt").is_file():
            raise FileNotFoundError(f"{run_dir}/model.pt")
        run = build.load_run(run_dir, "model.pt", device="cpu", use_ema=not args.no_ema)
        if run.kind != "atoms":
            from model_code.errors import UserError

            raise UserError(f"{run_dir} is not a toy run (its data are {run.kind})")
        cfg, process, model = run.cfg, run.process, run.model
        score = ta.as_score(model)
    data, analytic, sched = ta.toy_parts(cfg)
    n_atoms = len(cfg.data.atoms.mu)
    t0 = time.time()
    options = {"sampler": args.sampler, "n_steps": args.n_steps}
    data_arg = data if getattr(process, "prior", "uniform") == "exact" else None
    if data_arg is not None:
        options["data"] = data_arg
    seeds = [args.seed + k for k in range(args.n_samples)]
    chunks = [seeds[i:i + args.batch] for i in range(0, len(seeds), args.batch)]
    if args.sampler == "predictor_corrector":
        x = torch.cat([ta.pc_samples(process, model, c, n_atoms, args.n_steps, args.snr, args.corrector_steps,
                                     data_arg) for c in chunks]).double()
    else:
        x = torch.cat([process.sample(model, c, (n_atoms,), "cpu", **options) for c in chunks]).double()
    sigma_end = ta.final_sigma(sched, args.sampler)
    stats, r = ta.sample_analysis(x, data, sigma_end)
    marginal = ta.marginal_analysis(x, data, sigma_end, args.marginal_bins)
    ts = np.linspace(0.0, 1.0, args.n_times)
    errors = ta.score_analysis(score, analytic, data, sched, ts, args.n_error,
                               torch.Generator().manual_seed(args.seed + 1))
    res = {"name": name, "sampler": args.sampler, "n_steps": args.n_steps,
           **({"snr": args.snr, "corrector_steps": args.corrector_steps}
              if args.sampler == "predictor_corrector" else {}), **stats, **marginal, **errors}
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    atomic_write(d / "samples.npz", lambda fh: np.savez_compressed(
        fh, samples=x.numpy(), seeds=np.array(seeds), sampler=args.sampler, n_steps=args.n_steps,
        mu=np.array(data.mu), sigma_d=data.sigma_d, sigma_end=sigma_end))
    balance, ks = stats["mode_balance"], stats["ks_distance"]
    ta.scatter(d, x.float(), data, f"{name}: balance {balance:.3f}")
    plotting_toy.radial_histogram(r.numpy(), stats["rayleigh_scale"], d / "radial", f"{name}: KS D={ks:.3f}")
    y = (np.arange(400) + 0.5) / 400
    t_rows = np.linspace(0.0, 1.0, 60)
    over_t = np.stack([ta.atom_marginal(y, data.mu, data.sigma_d ** 2 + float(sched.sigma(torch.tensor(t))) ** 2)
                       for t in t_rows])
    plotting_toy.marginal_figure(x.numpy().reshape(-1) % 1.0, np.linspace(0, 1, args.marginal_bins + 1), y,
                                 ta.atom_marginal(y, data.mu, marginal["marginal_variance"]), t_rows, over_t,
                                 d / "marginal",
                                 f"{name} ({args.sampler}): TV {marginal['marginal_tv']:.3f} "
                                 f"(sampling alone ~{marginal['marginal_tv_expected']:.3f})")
    if args.frames and n_atoms == 2:
        tg = np.linspace(1.0, 0.0, args.frames)
        sig = [float(sched.sigma(torch.tensor(t, dtype=torch.float64))) for t in tg]
        grid, exact = ta.score_field_arrays(analytic, sig, args.grid)
        fields = {"analytic": exact}
        if name != "analytical":
            fields = {f"learned ({name})": ta.score_field_arrays(score, sig, args.grid)[1], **fields}
        plotting_toy.score_field_video(grid, fields, sig, tg, data.modes().numpy(), d / "score_field",
                                       gif=not args.no_gif)
    res["seconds"] = round(time.time() - t0, 1)
    return res


def org_table(results) -> str:
    lines = ["| experiment | mean_t E sigma^2 abs(s-s*)^2 | rel. error (t=0) | rel. error (all t) "
             "| mode balance (+- s.e.) | KS distance (p) | width ratio | marginal TV (sampling alone) |",
             "|---+---+---+---+---+---+---+---|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['score_error_mean']:.2e} | {r['relative_error_t0']:.2e} "
                     f"| {r['relative_error_overall']:.2e} | {r['mode_balance']:.3f} +- {r['mode_balance_se']:.3f} "
                     f"| {r['ks_distance']:.4f} ({r['ks_pvalue']:.2g}) | {r['width_ratio']:.3f} "
                     f"| {r['marginal_tv']:.3f} ({r['marginal_tv_expected']:.3f}) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    from model_code import config, plotting_toy
    from model_code.errors import UserError

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.n_samples < 2 or args.n_steps < 1 or args.n_times < 2 or args.n_error < 1 or args.batch < 1:
        raise UserError("--n-samples >= 2, --n-steps >= 1, --n-times >= 2, --n-error >= 1, --batch >= 1 are required")
    if args.frames < 0 or args.marginal_bins < 2 or args.corrector_steps < 0 or not args.snr > 0:
        raise UserError("--frames >= 0, --marginal-bins >= 2, --corrector-steps >= 0 and --snr > 0 are required")
    base_cfg = config.load([args.base_config], [])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, missing = [], []
    for name in args.experiments:
        try:
            res = analyse_one(name, args, out, base_cfg)
        except FileNotFoundError as err:
            missing.append(name)
            print(f"analyse_toy.py: skipping {name}: no checkpoint {err}", file=sys.stderr)
            continue
        results.append(res)
        print(f"{name:22s} score err {res['score_error_mean']:.3e}  rel(t=0) {res['relative_error_t0']:.3e}  "
              f"balance {res['mode_balance']:.3f}+-{res['mode_balance_se']:.3f}  "
              f"KS {res['ks_distance']:.4f} (p={res['ks_pvalue']:.3g})  [{res['seconds']} s]", flush=True)
    if not results:
        raise UserError(f"nothing to analyse: no checkpoints under {args.runs_dir} for {', '.join(missing)}")
    ts = [e["t"] for e in results[0]["score_error_per_t"]]
    curves = {r["name"]: np.array([e["weighted"] for e in r["score_error_per_t"]])
              for r in results if r["name"] != "analytical"}
    if curves:
        plotting_toy.score_error_curves(ts, curves, out / "score_error")
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "table.org").write_text(org_table(results))
    print(org_table(results))
    return 0


if __name__ == "__main__":
    from model_code.errors import run_cli

    run_cli(main, "analyse_toy.py")
