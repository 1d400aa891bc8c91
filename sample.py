#!/usr/bin/env python
"""Draw samples from a trained run in one of four modes (the model is rebuilt from the checkpoint alone).

    python sample.py --exp_name RUN [--checkpoint model.pt | N] --batch_size 9 \
        [--mode random | same_init | share_noise | interpolate --num_points 20]

Modes (sample i uses torch.Generator(seed + i), so it does not depend on the batch):
  random (default)  each sample its own initial state and its own sampling noise
  same_init         one initial state (that of seed) for every sample, each its own sampling noise
  share_noise       each its own initial state, one sampling-noise sequence (that of seed) shared by all
  interpolate       --num_points initial states on the great circle between those of seed and seed + 1
                    (each again a draw of the prior), one shared noise sequence
(--same_init, --share_noise and --interpolate are the older spellings.) The initial state is the
prior draw u_K of a levels (heat / linear map) run and the noise z ~ N(0, C) that a VE /
interpolant sampler starts from (x = sigma_1 z). same_init and share_noise mean something only
with samplers that draw noise after their start (annealed_langevin, euler_maruyama,
predictor_corrector, edm_stochastic); toy runs sample in random mode only.

Levels runs (heat dissipation, linear maps) also take the inverse-heat code's two sampling flags:
  --save_sample_freq N  keep the state of the chain every N levels: u_K, then every u_k with k a
                        multiple of N, down to u_0 (N = 1, the default: all K + 1 states). They are
                        the frames of process.mp4 and the array `process` (frames, B, C, H, W) of
                        samples.npz, with their levels in `process_levels`.
  --final_noise F       the std of the sampling noise at the end: it goes linearly from --delta at the
                        first step (k = K) to F at the last (k = 1), and the last step adds noise of std
                        F too. Without it the std is --delta at every step and the last step adds none:
                        u_0 is the mean mu(u_1, 1) of the last step.

Writes RUN/additional_samples/<mode>-<checkpoint>-<sampler or delta>[-final<F>]-seed<seed>[-raw]/ (never
over an existing folder without --overwrite): samples.npz (samples, init, seeds, ...), final.png (the
samples) and init.png (the initial states); levels runs also the sampling noise eps (B, K, C, H, W) and
the std of each step (noise_std, K values for k = K..1, the last 0 without --final_noise) in samples.npz,
and process.mp4 (u_K -> u_0); toy runs samples.png (a scatter plot) instead of the pictures. samples.json,
written last, lists them with their sizes and SHA-256: a folder without it was interrupted and the same
command replaces it.
"""
import argparse
import sys
from pathlib import Path

from model_code.errors import UserError, run_cli

MODES = ("random", "same_init", "share_noise", "interpolate")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_name", "--workdir", dest="exp_name", required=True, help="the run folder")
    p.add_argument("--checkpoint", default="model.pt",
                   help="checkpoint file in the run folder, or N for snapshots/model.N.pt (0: model.pt, the default)")
    p.add_argument("--mode", default=None, choices=MODES, help="sampling mode (default random)")
    old = p.add_mutually_exclusive_group()
    old.add_argument("--same_init", action="store_true", help="= --mode same_init")
    old.add_argument("--share_noise", action="store_true", help="= --mode share_noise")
    old.add_argument("--interpolate", action="store_true", help="= --mode interpolate")
    p.add_argument("--batch_size", type=int, default=9, help="number of samples (default 9)")
    p.add_argument("--num_points", type=int, default=10, help="interpolate: number of points (default 10)")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed + i (default 0)")
    p.add_argument("--delta", type=float, default=None, help="levels: sampling noise std (default: the run's)")
    p.add_argument("--save_sample_freq", type=int, default=None, metavar="N",
                   help="levels: keep the chain's state every N levels (u_K, then u_k for k a multiple of N, down "
                        "to u_0) for process.mp4 and samples.npz's `process` (default 1: every level)")
    p.add_argument("--final_noise", type=float, default=None, metavar="F",
                   help="levels: sampling noise std at the end: linear from --delta at the first step to F at the "
                        "last, which then adds noise of std F too (default: --delta throughout and no noise on "
                        "the last step, so u_0 is the mean of the last step)")
    p.add_argument("--sampler", default=None, help="VE / interpolant / toy: the sampler (default: the run's)")
    p.add_argument("--steps", type=int, default=None,
                   help="annealed_langevin: steps per level T; the others: levels of the EDM grid; toy: steps")
    p.add_argument("--label", type=int, default=None,
                   help="class-conditional runs: the class of every sample (default: sample i gets class i mod C)")
    p.add_argument("--config", default=None, help=argparse.SUPPRESS)   # older spelling: the checkpoint has it
    p.add_argument("--no_ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return p.parse_args(argv)


def chosen_mode(args) -> str:
    old = "same_init" if args.same_init else "share_noise" if args.share_noise else \
        "interpolate" if args.interpolate else None
    if old and args.mode and args.mode != old:
        raise UserError(f"--mode {args.mode} and --{old} contradict each other; give one")
    return args.mode or old or "random"


def main(argv=None) -> int:
    from model_code import build, files, run_dir, threads
    from model_code.eval_common import (Staging, checkpoint_file, checkpoint_word, labels_for, refuse_existing,
                                        sampler_options)

    args = parse_args(sys.argv[1:] if argv is None else argv)
    mode = chosen_mode(args)
    threads.apply()                 # the allocation's CPU threads, not every core of the node
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {args.batch_size}")
    if mode == "interpolate" and args.num_points < 2:
        raise UserError(f"--num_points must be >= 2, got {args.num_points}")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if args.save_sample_freq is not None and args.save_sample_freq < 1:
        raise UserError(f"--save_sample_freq must be >= 1, got {args.save_sample_freq}")
    if args.final_noise is not None and not args.final_noise >= 0:
        raise UserError(f"--final_noise must be >= 0, got {args.final_noise}")
    if args.config is not None:
        print(f"sample.py: note: --config is not needed (the checkpoint holds the config); {args.config} is not "
              f"read", file=sys.stderr)
    folder = Path(args.exp_name)
    ckpt = checkpoint_file(args.checkpoint)
    run = build.load_run(folder, ckpt, args.device, use_ema=not args.no_ema)
    options = sampler_options(run, args.sampler, args.steps, None, args.delta)
    process = run.process.name
    if process == "wrapped_ve" and mode != "random":
        raise UserError(f"--mode {mode} does not apply to the toy run {folder}: its samples are points on the "
                        f"torus with no prior state or noise field worth holding fixed; use --mode random "
                        f"(eval.py --mode score analyses them)")
    if process in ("ve", "interpolant", "adversarial"):
        from model_code.sampling_modes import check_mode

        check_mode(mode, options)
    if process != "levels":
        given = [f for f, v in (("--save_sample_freq", args.save_sample_freq), ("--final_noise", args.final_noise))
                 if v is not None]
        if given:
            raise UserError(f"{' and '.join(given)} apply to levels runs (heat dissipation, linear maps) only; "
                            f"{folder} is a {process} run")
    sampler, word = build.sampler_label(options)
    if args.final_noise is not None:
        word += f"-final{args.final_noise:g}"          # it changes the samples: a folder of its own
    setting = word if process == "levels" else f"{sampler}-{word}"
    out = folder / "additional_samples" / "-".join(
        [mode, checkpoint_word(ckpt), setting, f"seed{args.seed}"] + (["raw"] if args.no_ema else []))
    how = "another --seed to keep both"
    marker = dict(marker="samples.json", what="samples", marker_optional=True)
    refuse_existing(out, args.overwrite, how, **marker)
    n = args.num_points if mode == "interpolate" else args.batch_size
    seeds = [args.seed, args.seed + 1] if mode == "interpolate" else [args.seed + i for i in range(n)]
    labels = labels_for(run, [args.seed] * n if mode == "interpolate" else seeds, args.label)
    progress = not args.quiet and sys.stderr.isatty()
    with run_dir.claim(out, owner="sample.py"):
        files.sweep_temporaries(out)
        refuse_existing(out, args.overwrite, how, announce=False, **marker)
        draw = {"levels": levels_samples, "wrapped_ve": toy_samples}.get(process, field_samples)
        # samples.json, written last, lists the files: until it is in place the folder is incomplete
        with Staging(out, "samples.json") as stage:
            note = draw(run, mode, seeds, n, options, args, labels, progress, stage.path)
            stage.commit({"mode": mode, "run": str(folder), "checkpoint": ckpt, "step": int(run.state.get("step", 0)),
                          "sampler": sampler, "steps": word, "seeds": seeds, "ema": not args.no_ema})
    print(f"{mode}: {n} samples of {folder} ({process}, step {run.state.get('step', 0)}, {sampler} {word}) -> "
          f"{out}{note}")
    return 0


def _save(out, **arrays) -> None:
    import numpy as np

    from model_code.files import atomic_write

    atomic_write(out / "samples.npz", lambda fh: np.savez_compressed(fh, **arrays))


def _pictures(run, out, samples, init, nrow) -> None:
    """final.png and init.png: image grids, or field plots (channel 0; phase as its angle)."""
    from model_code import plotting, plotting_images

    if run.kind == "image":
        plotting_images.save_grid(samples.clamp(0, 1), out / "final.png", nrow)
        lo = init.flatten(1).min(1)[0].view(-1, 1, 1, 1)
        hi = init.flatten(1).max(1)[0].view(-1, 1, 1, 1)
        plotting_images.save_grid((init - lo) / (hi - lo).clamp_min(1e-12), out / "init.png", nrow)
        return
    plotting.plot_fields(samples, out / "final", kind=run.kind, ncols=nrow, exts=("png",))
    plotting.plot_fields(init, out / "init", kind="real", ncols=nrow, exts=("png",))


def noise_schedule(delta: float, final_noise, K: int):
    """The std of the noise added at each step k = K..1 (K values, float64).

    Without final_noise: delta at every step but the last, which adds none. With it: linear from delta
    at k = K to final_noise at k = 1, the last step included.
    """
    import torch

    if final_noise is None:
        std = torch.full((K,), float(delta), dtype=torch.float64)
        std[-1] = 0.0
        return std
    if K == 1:
        return torch.full((1,), float(final_noise), dtype=torch.float64)
    frac = torch.arange(K, dtype=torch.float64) / (K - 1)              # 0 at k = K, 1 at k = 1
    return float(delta) + (float(final_noise) - float(delta)) * frac


def kept_levels(K: int, every: int) -> list:
    """Indices into the trajectory u_K .. u_0 (index i is level K - i) kept by --save_sample_freq."""
    return [i for i in range(K + 1) if i == 0 or (K - i) % every == 0]


def levels_samples(run, mode, seeds, n, options, args, labels, progress, out) -> str:
    import numpy as np

    from model_code import plotting_images
    from model_code.processes.base import check_labels
    from model_code.processes.levels import initial_and_noise, sample_levels

    process, K = run.process, run.process.K
    delta = options["delta"]
    std = noise_schedule(delta, args.final_noise, K)
    u_K, noise = initial_and_noise(mode, process.prior, K, seeds, args.num_points)
    labels = check_labels(labels, len(u_K))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = lambda it: tqdm(it, desc="levels", leave=False)  # noqa: E731
    # noise[:, j] is the eps of step k = K - j; sample_levels adds delta * noise[:, j] for k > 1, so the
    # per-step std goes into the noise it is given and its delta is 1. It never adds noise on the last
    # step, so that one is added here (zero unless --final_noise).
    scaled = noise * std.float().view(1, K, *([1] * (noise.dim() - 2)))
    samples, frames = sample_levels(run.model, u_K, scaled, 1.0, K, True, run.device, bar, labels)
    samples, frames = samples.float() + scaled[:, K - 1], frames.float()
    frames[-1] = samples
    keep = kept_levels(K, args.save_sample_freq or 1)
    frames = frames[keep]
    nrow = n if mode == "interpolate" else None
    plotting_images.save_grid(samples, out / "final.png", nrow)
    plotting_images.save_grid(u_K, out / "init.png", nrow)
    _save(out, samples=samples.numpy(), init=u_K.float().numpy(), noise=noise.numpy(), noise_std=std.numpy(),
          process=frames.numpy(), process_levels=np.array([K - i for i in keep]), seeds=np.array(seeds),
          mode=mode, delta=delta, final_noise=np.nan if args.final_noise is None else args.final_noise,
          forward=process.fmap.name, step=int(run.state.get("step", 0)),
          **({} if labels is None else {"labels": labels.numpy()}))
    plotting_images.save_mp4(frames, out / "process.mp4", nrow)
    return f" ({len(keep)} states in process.mp4)"


def field_samples(run, mode, seeds, n, options, args, labels, progress, out) -> str:
    import numpy as np

    from model_code.sampling_modes import sample_modes

    samples, init = sample_modes(run.process, run.model, mode, seeds, run.shape, run.device, options,
                                 args.num_points, labels, progress)
    _pictures(run, out, samples, init, n if mode == "interpolate" else None)
    _save(out, samples=samples.numpy(), init=init.numpy(), seeds=np.array(seeds), mode=mode,
          sampler=options.get("sampler", "generator"), sigmas=np.asarray(options.get("sigmas", []), dtype=np.float64),
          step=int(run.state.get("step", 0)), **({} if labels is None else {"labels": labels.numpy()}))
    return ""


def toy_samples(run, mode, seeds, n, options, args, labels, progress, out) -> str:
    import numpy as np

    from model_code.eval_common import generate
    from model_code.toy_analysis import scatter, toy_parts

    data = toy_parts(run.cfg)[0]
    call = {**options, "data": data} if getattr(run.process, "prior", "uniform") == "exact" else options
    samples = generate(run, seeds, run.shape, call, len(seeds), progress)
    scatter(out, samples, data, f"{out.name}")
    _save(out, samples=samples.numpy(), seeds=np.array(seeds), mode=mode, step=int(run.state.get("step", 0)))
    return ""


if __name__ == "__main__":
    run_cli(main, "sample.py")
