#!/usr/bin/env python
"""Generate, super-resolve and plot from a trained run (the network is rebuilt from the checkpoint alone).

    python eval.py --exp_name RUN --mode generate   # RUN/eval/generate/{samples.npz,metrics.json}
    python eval.py --exp_name RUN --mode superres   # same on a grid --factor times finer
    python eval.py --exp_name RUN --mode plot       # figures for whichever of the two exist

Real statistics come from the run's validation split (read from $DATA_DIR for volcano
runs); for super-resolution the same split is loaded at the finer resolution.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from model_code.errors import UserError, run_cli

MODES = ("generate", "superres", "plot")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_name", required=True, help="run folder (the one holding model*.pt and config.json)")
    p.add_argument("--mode", required=True,
                   help="generate | superres | plot; elbo | fid for heat / linear-transform runs "
                        "(see `eval.py --mode elbo --help`)")
    p.add_argument("--checkpoint", default="model.w_total.pt",
                   help="checkpoint file inside the run folder (default: best w_total)")
    p.add_argument("--savedir", default=None, help="output folder (default: <exp_name>/eval)")
    p.add_argument("--Ntest", type=int, default=None, help="number of samples (default: the run's Ntest)")
    p.add_argument("--val_batch_size", type=int, default=None, help="generation batch size (default: the run's)")
    p.add_argument("--factor", type=int, default=2, help="superres: how many times finer the grid is (default 2)")
    p.add_argument("--seed", type=int, default=20_000_000,
                   help="sample k uses seed SEED + k (default differs from the training-time validation seeds)")
    p.add_argument("--sampler", default=None,
                   help="annealed_langevin | heun_ode | euler_ode | dpm_solver_2m | euler_maruyama | "
                        "predictor_corrector | edm_stochastic (default: the run's config 'sampler')")
    p.add_argument("--steps", type=int, default=None,
                   help="annealed_langevin: steps per level T; the others: number of sigma levels on the EDM "
                        "grid (default: the run's T / ode_steps)")
    p.add_argument("--sigma_min", type=float, default=None,
                   help="samplers other than annealed_langevin: the last level of the EDM grid (default: the "
                        "run's sigma_L); e.g. --sampler dpm_solver_2m --steps 5 --sigma_min 0.05 matched 181-step "
                        "Langevin on the GRF benchmark")
    p.add_argument("--no_ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("--mode=elbo", "--mode=fid") for a in argv) or any(
            a == "--mode" and argv[i + 1:i + 2] in (["elbo"], ["fid"]) for i, a in enumerate(argv)):
        # The heat / linear-transform image runs (--config/--workdir) have their own evaluation.
        from model_code.image_runs import eval_main
        return eval_main(argv)
    cli = parse_args(argv)
    if cli.mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}; got '{cli.mode}'")
    run = Path(cli.exp_name)
    if not run.is_dir():
        raise UserError(f"run folder not found: {run}")
    out = Path(cli.savedir) if cli.savedir else run / "eval"
    if cli.mode == "plot":
        return plot(out)
    if cli.factor < 1:
        raise UserError(f"--factor must be >= 1; got {cli.factor}")
    return sample(cli, run, out / cli.mode, factor=cli.factor if cli.mode == "superres" else 1)


def sample(cli, run: Path, out: Path, factor: int) -> int:
    from model_code import build, checkpoint, metrics
    from model_code.samplers import generate

    ckpt_path = run / cli.checkpoint
    if not ckpt_path.exists():
        have = sorted(p.name for p in run.glob("model*.pt"))
        raise UserError(f"checkpoint {ckpt_path} not found" + (f" (run folder has: {', '.join(have)})" if have
                                                                else " (the run folder holds no checkpoint)"))
    device = build.resolve_device(cli.device)
    state = checkpoint.load(ckpt_path, map_location=device)
    _warn_if_code_differs(state)
    args = build.args_from_checkpoint(state)
    denoiser = build.denoiser_from_checkpoint(state, device, use_ema=not cli.no_ema)
    noise = build.noise_from_description(state["noise"])
    sampler, sigmas, options = build.sampler_setup(args, cli.sampler, cli.steps, cli.sigma_min)
    sampler_name = cli.sampler or args.sampler
    nfe = build.network_evaluations(sampler_name, len(sigmas), options)
    _, real, kind = build.build_data(args, os.environ.get("DATA_DIR"), resolution_factor=factor)
    n = cli.Ntest or args.Ntest
    resolution = tuple(real.shape[-2:])
    progress = not cli.quiet and sys.stderr.isatty()
    seeds = [cli.seed + k for k in range(n)]
    print(f"{cli.mode}: {n} samples at {resolution[0]}x{resolution[1]} from {ckpt_path} "
          f"(epoch {state['epoch']}, {'EMA' if not cli.no_ema and state.get('ema') else 'raw'} weights, "
          f"{sampler_name}, {nfe} network evaluations per sample)",
          file=sys.stderr)
    samples = generate(denoiser, noise, sigmas, n, resolution, seeds, cli.val_batch_size or args.val_batch_size,
                       sampler=sampler, device=device, progress=progress, **options)
    real_stats = metrics.sample_stats(real, kind)
    gen_stats = metrics.sample_stats(samples, kind)
    values = metrics.validation_metrics(real, samples, kind, real_stats)
    floor = metrics.floor_metrics(real, kind)
    values.update(metrics.relative_to_floor(values, floor))
    values.update({f"floor_{k}": v for k, v in floor.items() if k in metrics.W1_NAMES})
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "samples.npz", samples=samples.numpy(), var=gen_stats["var"].numpy(),
                        skew=gen_stats["skew"].numpy(), real_var=real_stats["var"].numpy(),
                        real_skew=real_stats["skew"].numpy(), real_mean=real.mean(0).numpy(),
                        seeds=np.array(seeds))
    summary = {"mode": cli.mode, "checkpoint": str(cli.checkpoint), "epoch": state["epoch"], "n": n,
               "resolution": list(resolution), "factor": factor, "kind": kind, "ema": not cli.no_ema,
               "n_real": len(real), "sampler": sampler_name, "sampler_options": options, "nfe": nfe,
               "sigmas": [float(v) for v in sigmas],
               "metrics": values}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in values.items()}))
    print(f"wrote {out / 'samples.npz'} and {out / 'metrics.json'}")
    return 0


def _warn_if_code_differs(state: dict) -> None:
    from model_code import provenance

    then, now = state.get("code", "unknown"), provenance.fingerprint(Path(__file__).parent)
    if "unknown" not in (then, now) and then != now:
        print(f"eval.py: warning: this code ({now}) differs from the code that trained the run ({then})",
              file=sys.stderr)


def plot(out: Path) -> int:
    import torch

    from model_code import plotting

    done = [m for m in ("generate", "superres") if (out / m / "samples.npz").exists()]
    if not done:
        raise UserError(f"nothing to plot in {out}: run --mode generate (or superres) first")
    for mode in done:
        data = np.load(out / mode / "samples.npz")
        summary = json.loads((out / mode / "metrics.json").read_text())
        kind, values = summary["kind"], summary["metrics"]
        res = "x".join(map(str, summary["resolution"]))
        samples = torch.from_numpy(data["samples"])
        plotting.plot_fields(samples[:16], out / mode / "samples", kind=kind,
                             suptitle=f"{mode}: {res}, {summary['checkpoint']}")
        plotting.plot_mean_fields(torch.from_numpy(data["real_mean"]), samples.mean(0), out / mode / "mean_sample",
                                  kind=kind)
        plotting.plot_stat_histograms({"var": data["real_var"], "skew": data["real_skew"]},
                                      {"var": data["var"], "skew": data["skew"]}, values,
                                      out / mode / "final_stats", kind=kind,
                                      title=f"{mode} at {res}: real (validation) vs generated")
        print(f"wrote figures to {out / mode}: samples, mean_sample, final_stats (.png/.pdf)")
    return 0


if __name__ == "__main__":
    run_cli(main, "eval.py")
