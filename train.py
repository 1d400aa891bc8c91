#!/usr/bin/env python
"""Train any system of the project from its config: a forward process, a network, one loop.

    python train.py --config FILE [FILE ...] --savedir DIR [key=value ...]
    torchrun --nproc_per_node=N train.py ...       (or srun --ntasks=N python train.py ...,
                                                    or mpiexec -n N python train.py ...)
    bash exps/main.sh NAME FILE [key=value ...]    (workstation: RUN_LOCAL=1; Slurm: sbatch exps/launch_exp.sh)

Examples:
    python train.py --config exps/json/quickstart.json --savedir results/demo/1
    python train.py --config configs/starter/rectified_flow_digits.yaml --savedir runs/starter/rf
    python train.py --config configs/digits/default_digits_configs.yaml --savedir runs/digits/heat
    python train.py --config configs/toy/base_config.yaml configs/toy/none/specific_config.yaml --savedir runs/toy/none

Config files (JSON or YAML) are merged in order over the documented schema (docs/config.md,
or the list below), then the key=value overrides. The published flat JSON keys (L, Ntest,
d_co_domain, ...; sigma_1 / sigma_L are the published variances, converted with a note), the
older heat YAML (model.forward, training.n_iters, ...) and toy
YAML (train.lr, regularizer.kind, ...) are accepted as aliases. The older flag spellings
--cfg and --workdir still work. A run folder that already holds model.pt with the same
config resumes exactly where it stopped. Under torchrun, srun or mpiexec / mpirun, N processes
split each global batch and each evaluation and train exactly as one process would; rank 0
writes.
"""
import argparse
import os
import sys
from pathlib import Path

from model_code.errors import run_cli

# Exit status after a stop signal (SIGUSR1 / SIGTERM) with a checkpoint written; a launcher may requeue on it.
PREEMPTED_EXIT = 3
# How a run executes, not what it trains: may change between a stop and its resume.
RUN_SETTINGS = ("train.threads", "train.max_minutes", "train.device", "train.epochs", "train.steps",
                "train.tensorboard", "train.precision", "train.tf32", "train.compile", "train.compile_backend",
                "train.pin_memory", "train.keep_freed_memory")


def parse_args(argv=None):
    from model_code import config

    rows = [r for r in config.field_help() if r[1] != "group"]
    width = max(len(r[0]) for r in rows)
    epilog = "config keys (in a --config file or as key=value; docs/config.md has the same list):\n" + "\n".join(
        f"  {name:<{width}}  {doc} [default {default}]" for name, typ, default, doc in rows)
    parser = argparse.ArgumentParser(description=__doc__, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "--cfg", dest="config", nargs="+", action="append", required=True,
                        metavar="FILE", help="experiment file(s), .json or .yaml, merged in order; may be repeated "
                                             "(keys starting with '_' are comments)")
    parser.add_argument("--savedir", "--workdir", dest="savedir", required=True,
                        help="run folder: everything the run writes goes here")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress output (bars on a terminal; plain lines, at most one a minute, in a log)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, applied last")
    args = config.parse_with_overrides(parser, argv)
    files = [f for group in args.config for f in group]
    # nargs='+' also swallows the key=value arguments that follow the files.
    args.config = [f for f in files if "=" not in f or Path(f).suffix in (".json", ".yaml", ".yml")]
    args.overrides = [f for f in files if f not in args.config] + args.overrides
    return args


def main(argv=None) -> int:
    from model_code import config

    argv = sys.argv[1:] if argv is None else list(argv)
    cli = parse_args(argv)
    cfg = config.load(cli.config, cli.overrides)
    savedir = Path(cli.savedir)
    check_run_folder(savedir, cfg)

    from model_code import allocator, build, distributed, memory, run_dir, threads

    # CPU threads from the allocation (train.threads, OMP_NUM_THREADS, SLURM_CPUS_PER_TASK, cores / ranks),
    # and glibc told to keep freed memory before the first tensor of a step is allocated.
    cli.start_settings = {**threads.apply(cfg.train.threads), **allocator.keep_freed_memory(cfg.train.keep_freed_memory)}
    # torchrun / srun / mpiexec: join the process group (gloo on CPU, nccl on CUDA); alone: a no-op.
    device = distributed.rank_device(build.resolve_device(cfg.train.device))
    dist = distributed.initialise(device)
    try:
        # A run that cannot fit stops here, before its data set and network exist and before its folder does.
        memory.check_training(cfg, device, dist, os.environ.get("DATA_DIR"))
        # One writer per run folder: a second launch on the same --savedir stops here.
        with run_dir.claim_on_main(dist, savedir, "train.py",
                                   made_by_launcher=os.environ.get("RUN_DIR_FROM_LAUNCHER") == "1"):
            return _train(cli, cfg, savedir, argv, dist, device)
    finally:
        distributed.shutdown()


def _train(cli, cfg, savedir, argv, dist, device) -> int:
    from model_code import build, checkpoint, config, provenance
    from model_code.progress import enabled_for
    from model_code.trainer import Preempted

    check_run_folder(savedir, cfg, warn=dist.is_main)    # again, now that this process holds the folder
    trainer = build.build_trainer(cfg, savedir, os.environ.get("DATA_DIR"), dist=dist, device=device,
                                  progress=not cli.quiet and sys.stderr.isatty() and dist.is_main,
                                  log_lines=enabled_for(cli.quiet, dist.is_main))
    if dist.is_main:
        trainer.meta["code"] = provenance.record(savedir, Path(__file__).parent, [sys.argv[0], *argv],
                                                extra=cli.start_settings)["code"]
    latest = savedir / "model.pt"
    if latest.exists():
        state = checkpoint.load(latest, map_location=device)
        checkpoint.require(state, checkpoint.RESUME_KEYS, latest, "a resume")
        with checkpoint.fitting(latest):
            trainer.load_state(state)
        if dist.is_main:
            print(f"resuming {savedir} at step {trainer.step}", file=sys.stderr)
            trainer.set_aside_damaged_best()
    # Every rank has read the folder before rank 0 writes to it.
    dist.barrier()
    if dist.is_main:
        config.save(cfg, savedir / "config.json")
        # A published config file is read as it is; say what was converted or ignored.
        for key, note in cfg.mapped_keys.items():
            print(f"config: {note}", file=sys.stderr)
    try:
        trainer.fit()
    except Preempted as stop:
        if dist.is_main:
            print(f"train.py: {stop}; run the same command to resume", file=sys.stderr)
        return PREEMPTED_EXIT
    # Leave together: a rank that tears its process group down while rank 0 still writes the last
    # checkpoints can abort inside gloo (seen once: "terminate called without an active exception").
    dist.barrier()
    if dist.is_main:
        print(f"done: {savedir} (step {trainer.step}" + (f", {dist.world_size} processes)" if dist.active else ")"))
    return 0


def check_run_folder(savedir: Path, cfg, warn: bool = False) -> None:
    """Refuse to mix two different experiments in one folder (nothing is overwritten)."""
    from model_code import config, run_dir

    run_dir.refuse_other_config(savedir, config.to_dict(cfg), ignore=RUN_SETTINGS, warn=warn)


if __name__ == "__main__":
    run_cli(main, "train.py")
