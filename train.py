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


def parse_args(argv=None):
    rows = config_mod.field_help()
    width = max(len(r[0]) for r in rows)
    epilog = "config keys (set in the --cfg file or as key=value; sigmas are standard deviations):\n" + "\n".join(
        f"  {name:<{width}}  {doc} [{typ}, default {default}]" for name, typ, default, doc in rows)
    parser = argparse.ArgumentParser(description=__doc__, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", help="experiment file (.json or .yaml); keys starting with '_' are comments")
    parser.add_argument("--savedir", required=True, help="run folder: everything the run writes goes here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, applied last")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    yaml_entry = _yaml_entry_point(argv)
    if yaml_entry is not None:
        return yaml_entry(argv)
    cli = parse_args(argv)
    args = config_mod.load(cli.cfg, cli.overrides)
    savedir = Path(cli.savedir)
    _check_run_folder(savedir, args)
    _make_writable_folder(savedir)

    from model_code import build, checkpoint, distributed, provenance

    # torchrun / srun: join the process group (gloo on CPU, nccl on CUDA); alone: a no-op.
    device = distributed.rank_device(build.resolve_device(args.device))
    dist = distributed.initialise(device)
    try:
        return _train(cli, args, savedir, argv, dist, device)
    finally:
        distributed.shutdown()


def _train(cli, args, savedir, argv, dist, device) -> int:
    from model_code import build, checkpoint, provenance

    progress = not cli.quiet and sys.stderr.isatty() and dist.is_main
    trainer = build.build_trainer(args, savedir, os.environ.get("DATA_DIR"), progress=progress,
                                  dist=dist, device=device)
    if dist.is_main:
        trainer.meta["code"] = provenance.record(savedir, Path(__file__).parent, [sys.argv[0], *argv])["code"]
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


def _make_writable_folder(savedir: Path) -> None:
    """Create the run folder and prove it takes a file (a read-only mount fools os.access for root)."""
    import tempfile

    try:
        savedir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=savedir):
            pass
    except OSError as err:
        raise UserError(f"run folder {savedir} is not writable: {err.strerror or err}") from None


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
    if not Path(path).is_file():
        raise UserError(f"config file not found: {path}")
    from omegaconf import OmegaConf
    try:
        system = OmegaConf.load(path).get("system", "levels")
    except Exception as err:  # a YAML syntax error is the user's, not ours
        raise UserError(f"cannot read {path}: {str(err).splitlines()[0]}")
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
        if old != new:
            diff = [k for k, v in new.items() if old[k] != v]
            raise UserError(f"{savedir} already holds a run with a different config (differs in: "
                            f"{', '.join(diff)}); choose another --savedir")


if __name__ == "__main__":
    run_cli(main, "train.py")
