#!/usr/bin/env python
"""Train a score-based diffusion model in function space.

    python train.py --cfg exps/json/quickstart.json --savedir results/demo/1 [key=value ...]

The experiment file (json or yaml) overrides the documented defaults of `Arguments`
(model_code/config.py); `key=value` arguments override the file. Data comes from
$DATA_DIR. A run folder that already holds model.pt with the same config resumes.
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
    cli = parse_args(argv)
    args = config_mod.load(cli.cfg, cli.overrides)
    savedir = Path(cli.savedir)
    _check_run_folder(savedir, args)
    savedir.mkdir(parents=True, exist_ok=True)
    if not os.access(savedir, os.W_OK):
        raise UserError(f"run folder {savedir} is not writable")

    from model_code import build, checkpoint, provenance

    progress = not cli.quiet and sys.stderr.isatty()
    trainer = build.build_trainer(args, savedir, os.environ.get("DATA_DIR"), progress=progress)
    trainer.meta["code"] = provenance.record(savedir, Path(__file__).parent, argv or sys.argv)["code"]
    latest = savedir / "model.pt"
    if latest.exists():
        trainer.load_state(checkpoint.load(latest, map_location=trainer.device))
        print(f"resuming {savedir} after epoch {trainer.epoch}", file=sys.stderr)
    config_mod.save(args, savedir / "config.json")
    from model_code.trainer import Preempted
    try:
        trainer.fit()
    except Preempted as stop:
        print(f"train.py: {stop}; run the same command to resume", file=sys.stderr)
        return PREEMPTED_EXIT
    print(f"done: {savedir}")
    return 0


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
