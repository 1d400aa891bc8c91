#!/usr/bin/env python
"""Train a score-based diffusion model in function space.

    python train.py --cfg exps/json/quickstart.json --savedir results/demo/1 [key=value ...]
    torchrun --nproc_per_node=N train.py ...    (or srun --ntasks=N python train.py ...)
    python train.py --config configs/digits/default_digits_configs.yaml --workdir runs/digits/heat [k=v ...]
    python train.py --config configs/toy/base_config.yaml --config configs/toy/none/specific_config.yaml
        --workdir runs/toy/none [k=v ...]          (what configs/toy/<experiment>/run.sh does)

--config runs the OmegaConf YAML systems (heat / linear-transform images, the two-atom toy
problem; `python train.py --config FILE --workdir DIR --help` lists their flags); the rest of
this help is about the function-space score models (--cfg).

The experiment file (json or yaml) overrides the documented defaults of `Arguments`
(model_code/config.py); `key=value` arguments override the file. Data comes from
$DATA_DIR. A run folder that already holds model.pt with the same config resumes.
Under torchrun or srun, N processes split each global batch (batch_size) and each
validation round between them and train exactly as one process would; rank 0 writes.
"""
import argparse
import json
import os
import sys
from pathlib import Path

from model_code import config as config_mod
from model_code.errors import UserError, run_cli


# Exit status after a stop signal (SIGUSR1 / SIGTERM) with a checkpoint written; a
# launcher may requeue the job on it.
PREEMPTED_EXIT = 3
# Keys that say how this start runs, not what is trained: they may change on resume.
RUN_SETTINGS = ("threads",)


def parse_args(argv=None):
    rows = config_mod.field_help()
    width = max(len(r[0]) for r in rows)
    epilog = "config keys (set in the --cfg file or as key=value; sigmas are standard deviations):\n" + "\n".join(
        f"  {name:<{width}}  {doc} [{typ}, default {default}]" for name, typ, default, doc in rows)
    parser = argparse.ArgumentParser(description=__doc__, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", help="experiment file (.json or .yaml); keys starting with '_' are comments")
    parser.add_argument("--savedir", required=True, help="run folder: everything the run writes goes here")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress output (bars on a terminal; plain lines, at most one a minute, in a log)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, applied last")
    return config_mod.parse_with_overrides(parser, argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    yaml_entry = _yaml_entry_point(argv)
    if yaml_entry is not None:
        return yaml_entry(argv)
    cli = parse_args(argv)
    args = config_mod.load(cli.cfg, cli.overrides)
    savedir = Path(cli.savedir)
    _check_run_folder(savedir, args)

    from model_code import build, distributed, run_dir, threads

    # CPU threads from the allocation (config `threads`, OMP_NUM_THREADS, SLURM_CPUS_PER_TASK, cores / ranks).
    cli.threads = threads.apply(args.threads)
    # torchrun / srun: join the process group (gloo on CPU, nccl on CUDA); alone: a no-op.
    device = distributed.rank_device(build.resolve_device(args.device))
    dist = distributed.initialise(device)
    try:
        # One writer per run folder: a second launch on the same --savedir stops here.
        with run_dir.claim_on_main(dist, savedir, "train.py",
                                   made_by_launcher=os.environ.get("RUN_DIR_FROM_LAUNCHER") == "1"):
            return _train(cli, args, savedir, argv, dist, device)
    finally:
        distributed.shutdown()


def _train(cli, args, savedir, argv, dist, device) -> int:
    from model_code import build, checkpoint, provenance

    from model_code.progress import enabled_for

    progress = not cli.quiet and sys.stderr.isatty() and dist.is_main
    trainer = build.build_trainer(args, savedir, os.environ.get("DATA_DIR"), progress=progress,
                                  dist=dist, device=device, log_lines=enabled_for(cli.quiet, dist.is_main))
    if dist.is_main:
        trainer.meta["code"] = provenance.record(savedir, Path(__file__).parent, [sys.argv[0], *argv],
                                                extra=cli.threads)["code"]
    latest = savedir / "model.pt"
    if latest.exists():
        trainer.load_state(checkpoint.load(latest, map_location=trainer.device))
        if dist.is_main:
            print(f"resuming {savedir} after epoch {trainer.epoch}", file=sys.stderr)
    # Every rank has read the folder before rank 0 writes to it.
    dist.barrier()
    if dist.is_main:
        config_mod.save(args, savedir / "config.json")
    from model_code.trainer import Preempted
    try:
        trainer.fit()
    except Preempted as stop:
        if dist.is_main:
            print(f"train.py: {stop}; run the same command to resume", file=sys.stderr)
        return PREEMPTED_EXIT
    if dist.is_main:
        print(f"done: {savedir}" + (f" ({dist.world_size} processes)" if dist.active else ""))
    return 0


def _yaml_entry_point(argv):
    """The OmegaConf YAML systems (`--config FILE --workdir DIR`) have their own run loop.

    The first --config file's top-level `system` key picks it: `toy` is the two-atom
    problem (model_code/toy_runs.py); anything else (the default, `levels`) is the heat /
    linear-transform image family (model_code/image_runs.py).
    """
    path = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
            break
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
            break
    if path is None:
        return None
    # One line with file, line and column for a YAML syntax error; a top level that is no mapping too.
    system = config_mod.load_yaml(path).get("system", "levels")
    if system == "toy":
        from model_code.toy_runs import train_main
    elif system == "levels":
        from model_code.image_runs import train_main
    else:
        raise UserError(f"{path}: unknown system '{system}' (toy | levels)")
    return train_main


def _check_run_folder(savedir: Path, args) -> None:
    """Refuse to mix two different experiments in one folder (nothing is overwritten)."""
    saved = savedir / "config.json"
    if (savedir / "model.pt").exists() and saved.exists():
        old = config_mod.to_dict(config_mod.from_dict(json.loads(saved.read_text()), source=str(saved)))
        new = config_mod.to_dict(args)
        diff = [k for k, v in new.items() if old[k] != v and k not in RUN_SETTINGS]
        if diff:
            raise UserError(f"{savedir} already holds a run with a different config (differs in: "
                            f"{', '.join(diff)}); choose another --savedir")


if __name__ == "__main__":
    run_cli(main, "train.py")
