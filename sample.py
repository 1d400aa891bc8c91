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

Writes RUN/additional_samples/<mode>-<checkpoint>-<sampler or delta>-seed<seed>[-raw]/ (never over
an existing folder without --overwrite): samples.npz (samples, init, seeds, ...), final.png (the
samples) and init.png (the initial states); levels runs also the sampling noise (B, K, C, H, W) in
samples.npz, process.gif (u_K -> u_0) and process.mp4 where opencv is installed; toy runs
samples.png (a scatter plot) instead of the pictures.
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
    from model_code import build, run_dir, threads
    from model_code.eval_common import checkpoint_file, checkpoint_word, labels_for, refuse_existing, sampler_options

    args = parse_args(sys.argv[1:] if argv is None else argv)
    mode = chosen_mode(args)
    threads.apply()                 # the allocation's CPU threads, not every core of the node
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {args.batch_size}")
    if mode == "interpolate" and args.num_points < 2:
        raise UserError(f"--num_points must be >= 2, got {args.num_points}")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
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
    sampler, word = build.sampler_label(options)
    setting = word if process == "levels" else f"{sampler}-{word}"
    out = folder / "additional_samples" / "-".join(
        [mode, checkpoint_word(ckpt), setting, f"seed{args.seed}"] + (["raw"] if args.no_ema else []))
    how = "another --seed to keep both"
    refuse_existing(out, args.overwrite, how, held=("samples.npz", "final.png"), what="samples")
    n = args.num_points if mode == "interpolate" else args.batch_size
    seeds = [args.seed, args.seed + 1] if mode == "interpolate" else [args.seed + i for i in range(n)]
    labels = labels_for(run, [args.seed] * n if mode == "interpolate" else seeds, args.label)
    progress = not args.quiet and sys.stderr.isatty()
    with run_dir.claim(out, owner="sample.py"):
        refuse_existing(out, args.overwrite, how, held=("samples.npz", "final.png"), what="samples")
        for stale in ("final.png", "init.png", "process.gif", "process.mp4", "samples.png"):
            (out / stale).unlink(missing_ok=True)
        draw = {"levels": levels_samples, "wrapped_ve": toy_samples}.get(process, field_samples)
        note = draw(run, mode, seeds, n, options, args, labels, progress, out)
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


def levels_samples(run, mode, seeds, n, options, args, labels, progress, out) -> str:
    import numpy as np

    from model_code import plotting_images
    from model_code.processes.levels import initial_and_noise

    delta = options["delta"]
    samples, frames = run.process.sample(run.model, seeds, run.shape, run.device, labels=labels, progress=progress,
                                         mode=mode, delta=delta, num_points=args.num_points, keep_trajectory=True)
    _, noise = initial_and_noise(mode, run.process.prior, run.process.K, seeds, args.num_points)
    nrow = n if mode == "interpolate" else None
    plotting_images.save_grid(samples, out / "final.png", nrow)
    plotting_images.save_grid(frames[0], out / "init.png", nrow)
    _save(out, samples=samples.numpy(), init=frames[0].numpy(), noise=noise.numpy(), seeds=np.array(seeds),
          mode=mode, delta=delta, forward=run.process.fmap.name, step=int(run.state.get("step", 0)),
          **({} if labels is None else {"labels": labels.numpy()}))
    plotting_images.save_gif(frames, out / "process.gif", nrow)
    mp4 = plotting_images.save_mp4(frames, out / "process.mp4", nrow)
    return "" if mp4 else " (no mp4: opencv not installed)"


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
