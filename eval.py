#!/usr/bin/env python
"""Generate, super-resolve and plot from a trained run (the network is rebuilt from the checkpoint alone).

    python eval.py --exp_name RUN --mode generate   # RUN/eval/<name>/{samples.npz,metrics.json}
    python eval.py --exp_name RUN --mode superres   # same on a grid --factor times finer
    python eval.py --exp_name RUN --mode plot       # figures for every evaluation under RUN/eval

Each evaluation has its own folder under --savedir (default RUN/eval), named after its
settings: <mode>-<checkpoint>-<sampler>-<steps>[-smin<sigma_min>][-x<factor>][-raw][-seed<seed>],
e.g. generate-w_total-annealed_langevin-T2 or generate-w_total-dpm_solver_2m-steps5-smin0.05,
or --tag NAME. A folder that already holds an evaluation is never overwritten without
--overwrite. Real statistics come from the run's validation split (read from $DATA_DIR for
volcano runs); for super-resolution the same split is loaded at the finer resolution.
metrics.json gives each W1 with its multiple of the real-vs-real floor and the floor's 90%
bootstrap interval (floor_<metric>_p05 / _p95); below 100 validation fields a warning says
that the floor is too noisy to judge by.
"""
import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from model_code.errors import UserError, run_cli

MODES = ("generate", "superres", "plot")
DEFAULT_SEED = 20_000_000
FIGURES = ("samples", "mean_sample", "final_stats")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_name", required=True, help="run folder (the one holding model*.pt and config.json)")
    p.add_argument("--mode", required=True,
                   help="generate | superres | plot; elbo | fid for heat / linear-transform runs "
                        "(see `eval.py --mode elbo --help`)")
    p.add_argument("--checkpoint", default="model.w_total.pt",
                   help="checkpoint file inside the run folder (default: best w_total)")
    p.add_argument("--savedir", default=None,
                   help="folder holding the evaluation folders (default: <exp_name>/eval)")
    p.add_argument("--tag", default=None,
                   help="name of the evaluation folder under --savedir instead of the one made from the settings "
                        "(letters, digits, . _ + -); with --mode plot: plot only that evaluation")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an evaluation folder that already holds samples (default: refuse)")
    p.add_argument("--Ntest", type=int, default=None, help="number of samples, > 0 (default: the run's Ntest)")
    p.add_argument("--val_batch_size", type=int, default=None,
                   help="generation batch size, > 0 (default: the run's)")
    p.add_argument("--factor", type=int, default=2, help="superres: how many times finer the grid is (default 2)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help="sample k uses seed SEED + k (default differs from the training-time validation seeds)")
    p.add_argument("--sampler", default=None,
                   help="annealed_langevin | heun_ode | euler_ode | dpm_solver_2m | euler_maruyama | "
                        "predictor_corrector | edm_stochastic (default: the run's config 'sampler')")
    p.add_argument("--steps", type=int, default=None,
                   help="annealed_langevin: steps per level T; the others: number of sigma levels on the EDM "
                        "grid; > 0 (default: the run's T / ode_steps)")
    p.add_argument("--sigma_min", type=float, default=None,
                   help="samplers other than annealed_langevin: the last level of the EDM grid (default: the "
                        "run's sigma_L); e.g. --sampler dpm_solver_2m --steps 5 --sigma_min 0.05 matched 181-step "
                        "Langevin on the GRF benchmark")
    p.add_argument("--no_ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--quiet", action="store_true",
                   help="no progress output (bars on a terminal; plain lines, at most one a minute, in a log)")
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
    for flag in ("Ntest", "val_batch_size", "steps"):
        value = getattr(cli, flag)
        if value is not None and value <= 0:
            raise UserError(f"--{flag} must be a positive integer; got {value}")
    if cli.tag is not None and not _SAFE_NAME.fullmatch(cli.tag):
        raise UserError(f"--tag must be a folder name of letters, digits, '.', '_', '+', '-' (not starting "
                        f"with '.' or '-'); got '{cli.tag}'")
    run = Path(cli.exp_name)
    if not run.is_dir():
        raise UserError(f"run folder not found: {run}")
    from model_code.image_runs import folder_system, wrong_system_message
    system = folder_system(run)
    if system in ("levels", "toy"):
        raise UserError(wrong_system_message(run, system, f"--mode {cli.mode}"))
    out = Path(cli.savedir) if cli.savedir else run / "eval"
    if cli.mode == "plot":
        return plot(out, cli.tag)
    if cli.factor < 1:
        raise UserError(f"--factor must be >= 1; got {cli.factor}")
    return sample(cli, run, out, factor=cli.factor if cli.mode == "superres" else 1)


def evaluation_name(mode: str, checkpoint_name: str, sampler: str, n_sigmas: int, options: dict, factor: int = 1,
                    sigma_min=None, ema: bool = True, seed: int = DEFAULT_SEED) -> str:
    """The folder name of an evaluation: every setting that changes its samples, filesystem-safe.

    <mode>-<checkpoint>-<sampler>-<T<steps per level> | steps<levels>>[-smin<sigma_min>][-x<factor>][-raw]
    [-seed<seed>]; the checkpoint is its file name without 'model.' and '.pt' (model.pt: 'latest'),
    sigma_min only where the sampler uses it, -raw for --no_ema, the seed when not the default.
    """
    ckpt = Path(checkpoint_name).name
    ckpt = ckpt[:-3] if ckpt.endswith(".pt") else ckpt
    ckpt = "latest" if ckpt == "model" else ckpt[len("model."):] if ckpt.startswith("model.") else ckpt
    parts = [mode, re.sub(r"[^A-Za-z0-9._+]", "_", ckpt) or "checkpoint", sampler]
    if sampler == "annealed_langevin":
        parts.append(f"T{options['T']}")
    else:
        parts.append(f"steps{n_sigmas}")
        if sigma_min is not None:
            parts.append(f"smin{sigma_min:g}")
    if mode == "superres":
        parts.append(f"x{factor}")
    if not ema:
        parts.append("raw")
    if seed != DEFAULT_SEED:
        parts.append(f"seed{seed}")
    return "-".join(parts)


def _refuse_existing(folder: Path, cli) -> None:
    held = [name for name in ("samples.npz", "metrics.json") if (folder / name).exists()]
    if held and not cli.overwrite:
        raise UserError(f"{folder} already holds an evaluation ({', '.join(held)}); nothing was written: pass "
                        f"--overwrite to replace it, or --tag NAME to keep both")


def sample(cli, run: Path, out_root: Path, factor: int) -> int:
    from model_code import build, checkpoint, metrics, run_dir, threads
    from model_code.progress import enabled_for as progress_lines
    from model_code.files import atomic_write, atomic_write_text
    from model_code.samplers import generate

    ckpt_path = run / cli.checkpoint
    if not ckpt_path.exists():
        have = sorted(p.name for p in run.glob("model*.pt"))
        raise UserError(f"checkpoint {ckpt_path} not found" + (f" (run folder has: {', '.join(have)})" if have
                                                                else " (the run folder holds no checkpoint)"))
    threads.apply()                 # the allocation's CPU threads, not every core of the node
    device = build.resolve_device(cli.device)
    state = checkpoint.load(ckpt_path, map_location=device)
    args = build.args_from_checkpoint(state)
    sampler, sigmas, options = build.sampler_setup(args, cli.sampler, cli.steps, cli.sigma_min)
    sampler_name = cli.sampler or args.sampler
    name = cli.tag or evaluation_name(cli.mode, cli.checkpoint, sampler_name, len(sigmas), options, factor,
                                      cli.sigma_min, not cli.no_ema, cli.seed)
    out = out_root / name
    _refuse_existing(out, cli)             # before any work; again below, holding the folder
    _warn_if_code_differs(state)
    denoiser = build.denoiser_from_checkpoint(state, device, use_ema=not cli.no_ema)
    noise = build.noise_from_description(state["noise"])
    nfe = build.network_evaluations(sampler_name, len(sigmas), options)
    _, real, kind = build.build_data(args, os.environ.get("DATA_DIR"), resolution_factor=factor)
    n = cli.Ntest or args.Ntest
    resolution = tuple(real.shape[-2:])
    progress = not cli.quiet and sys.stderr.isatty()
    seeds = [cli.seed + k for k in range(n)]
    with run_dir.claim(out, owner="eval.py"):
        _refuse_existing(out, cli)
        print(f"{cli.mode}: {n} samples at {resolution[0]}x{resolution[1]} from {ckpt_path} "
              f"(epoch {state['epoch']}, {'EMA' if not cli.no_ema and state.get('ema') else 'raw'} weights, "
              f"{sampler_name}, {nfe} network evaluations per sample) -> {out}",
              file=sys.stderr)
        samples = generate(denoiser, noise, sigmas, n, resolution, seeds, cli.val_batch_size or args.val_batch_size,
                           sampler=sampler, device=device, progress=progress,
                           log_lines=progress_lines(cli.quiet), **options)
        real_stats = metrics.sample_stats(real, kind)
        gen_stats = metrics.sample_stats(samples, kind)
        values = metrics.validation_metrics(real, samples, kind, real_stats)
        floor = metrics.floor_metrics(real, kind)
        values.update(metrics.relative_to_floor(values, floor))
        values.update(metrics.floor_columns(floor, metrics.floor_interval(real, kind, real_stats_cached=real_stats)))
        # Figures of samples being replaced would describe samples that no longer exist.
        for fig in FIGURES:
            for ext in ("png", "pdf"):
                (out / f"{fig}.{ext}").unlink(missing_ok=True)
        arrays = dict(samples=samples.numpy(), var=gen_stats["var"].numpy(), skew=gen_stats["skew"].numpy(),
                      real_var=real_stats["var"].numpy(), real_skew=real_stats["skew"].numpy(),
                      real_mean=real.mean(0).numpy(), seeds=np.array(seeds))
        atomic_write(out / "samples.npz", lambda fh: np.savez_compressed(fh, **arrays))
        summary = {"name": name, "mode": cli.mode, "checkpoint": str(cli.checkpoint), "epoch": state["epoch"],
                   "n": n, "seed": cli.seed, "resolution": list(resolution), "factor": factor, "kind": kind,
                   "ema": not cli.no_ema, "n_real": len(real), "sampler": sampler_name, "sampler_options": options,
                   "nfe": nfe, "sigmas": [float(v) for v in sigmas],
                   "floor_interval": f"floor_<metric>_p05 / _p95: 5th / 95th percentiles of the real-vs-real "
                                     f"floor over {metrics.FLOOR_RESAMPLES} bootstrap resamples of the "
                                     f"{len(real)} real fields",
                   "metrics": values}
        atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in values.items()}))
    print(f"wrote {out / 'samples.npz'} and {out / 'metrics.json'}")
    return 0


def _warn_if_code_differs(state: dict) -> None:
    from model_code import provenance

    then, now = state.get("code", "unknown"), provenance.fingerprint(Path(__file__).parent)
    if "unknown" not in (then, now) and then != now:
        print(f"eval.py: warning: this code ({now}) differs from the code that trained the run ({then})",
              file=sys.stderr)


def evaluations(out: Path, tag=None) -> list:
    """The evaluation folders under `out` (those holding samples.npz and metrics.json), or the one named `tag`."""
    def complete(d):
        return (d / "samples.npz").is_file() and (d / "metrics.json").is_file()

    if tag is not None:
        if not complete(out / tag):
            have = [d.name for d in evaluations(out)] if out.is_dir() else []
            raise UserError(f"no evaluation '{tag}' in {out}" + (f" (it holds: {', '.join(have)})" if have else
                                                                 ": run --mode generate (or superres) first"))
        return [out / tag]
    return sorted(d for d in out.iterdir() if d.is_dir() and complete(d)) if out.is_dir() else []


def plot(out: Path, tag=None) -> int:
    import torch

    from model_code import plotting, run_dir

    done = evaluations(out, tag)
    if not done:
        raise UserError(f"nothing to plot in {out}: run --mode generate (or superres) first")
    for folder in done:
        with run_dir.claim(folder, owner="eval.py"):
            data = np.load(folder / "samples.npz")
            summary = json.loads((folder / "metrics.json").read_text())
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
        print(f"wrote figures to {folder}: {', '.join(FIGURES)} (.png/.pdf)")
    return 0


if __name__ == "__main__":
    run_cli(main, "eval.py")
