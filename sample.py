#!/usr/bin/env python
"""Sample from a trained heat-dissipation / linear-transform run (any forward process).

    python sample.py --config configs/mnist/default_mnist_configs.yaml --workdir runs/mnist/default \
        --checkpoint 0 --batch_size 9 [--same_init | --share_noise | --interpolate --num_points 20]

Modes (sample i always uses torch.Generator(seed + i), so it does not depend on the batch):
  random (default)  each sample its own prior state u_K and its own sampling noise
  --same_init       one prior state u_K for all samples, different sampling noise
  --share_noise     different prior states, one sampling-noise sequence shared by all
  --interpolate     --num_points prior states on the great circle between two random ones
                    (each again a prior draw), one shared noise sequence

Writes under <workdir>/additional_samples/checkpoint_<N>/<mode>_delta<delta>_seed<seed>/:
final.png (the samples), init.png (the prior states u_K), samples.npz (samples, init, the sampling
noise (B, K, C, H, W) of steps K..1, seeds),
process.gif (u_K -> u_0) and process.mp4 where opencv is installed.
"""
import argparse
import sys
from pathlib import Path

from model_code.errors import UserError, run_cli


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None,
                   help="the run's YAML file (optional: the checkpoint holds the config; a different forward "
                        "process or K is reported)")
    p.add_argument("--workdir", required=True, help="the run's work folder")
    p.add_argument("--checkpoint", type=int, default=0, help="0 = latest (checkpoints-meta), N = snapshot N")
    p.add_argument("--batch_size", type=int, default=9, help="number of samples (default 9)")
    p.add_argument("--delta", type=float, default=None, help="sampling noise std (default: the run's model.delta)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--same_init", action="store_true", help="share the prior state u_K")
    mode.add_argument("--share_noise", action="store_true", help="share the sampling noise")
    mode.add_argument("--interpolate", action="store_true", help="interpolate between two prior states")
    p.add_argument("--num_points", type=int, default=10, help="--interpolate: number of points (default 10)")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed + i (default 0)")
    p.add_argument("--no_ema", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from model_code import image_runs, plotting_images, threads
    from model_code.levels import initial_and_noise, sample_levels

    args = parse_args(sys.argv[1:] if argv is None else argv)
    threads.apply()                 # the allocation's CPU threads, not every core of the node
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.interpolate and args.num_points < 2:
        raise UserError(f"--num_points must be >= 2, got {args.num_points}")
    run = image_runs.load_run(args.workdir, args.checkpoint, args.device, use_ema=not args.no_ema,
                              config_path=args.config)
    delta = run.cfg.model.delta if args.delta is None else args.delta
    if delta < 0:
        raise UserError(f"--delta must be >= 0, got {delta}")
    mode = "same_init" if args.same_init else "share_noise" if args.share_noise else \
        "interpolate" if args.interpolate else "random"
    n = args.num_points if args.interpolate else args.batch_size
    seeds = [args.seed, args.seed + 1] if mode == "interpolate" else [args.seed + i for i in range(n)]
    u_K, noise = initial_and_noise(mode, run.prior, run.fmap.K, seeds, num_points=args.num_points)
    progress = None if args.quiet or not sys.stderr.isatty() else (lambda it: tqdm(it, desc="levels", leave=False))
    samples, frames = sample_levels(run.model, u_K, noise, delta, run.fmap.K, keep_trajectory=True,
                                    device=run.device, progress=progress)
    out = Path(args.workdir) / "additional_samples" / f"checkpoint_{args.checkpoint}" / \
        f"{mode}_delta{delta:g}_seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    nrow = n if mode == "interpolate" else None
    plotting_images.save_grid(samples, out / "final.png", nrow)
    plotting_images.save_grid(u_K, out / "init.png", nrow)
    np.savez_compressed(out / "samples.npz", samples=samples.numpy(), init=u_K.numpy(), noise=noise.numpy(),
                        seeds=np.array(seeds), mode=mode, delta=delta, forward=run.cfg.model.forward,
                        step=run.step)
    plotting_images.save_gif(frames, out / "process.gif", nrow)
    mp4 = plotting_images.save_mp4(frames, out / "process.mp4", nrow)
    print(f"{mode}: {n} samples of {run.cfg.model.forward} (step {run.step}, delta {delta:g}) -> {out}"
          + ("" if mp4 else " (no mp4: opencv not installed)"))
    return 0


if __name__ == "__main__":
    run_cli(main, "sample.py")
