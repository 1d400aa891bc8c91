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
# Exit status after a Ctrl-C, with or without a checkpoint: the shell's 128 + SIGINT, so that a launcher
# does not requeue a run its user stopped.
INTERRUPTED_EXIT = 130
# How a run executes, not what it trains: may change between a stop and its resume.
RUN_SETTINGS = ("train.threads", "train.max_minutes", "train.device", "train.epochs", "train.steps",
                "train.tensorboard", "train.precision", "train.tf32", "train.compile", "train.compile_backend",
                "train.pin_memory", "train.keep_freed_memory")


# The keys a first run is most likely to set, one line each in --help; --help-config lists every key.
COMMON_KEYS = {
    "data.dataset": "training data",
    "data.resolution": "pixels per side (null: the data's own size)",
    "data.max_examples": "only the first N training examples (quick runs)",
    "train.epochs": "passes over the data (null: count train.steps instead)",
    "train.steps": "optimiser steps, when train.epochs is null",
    "train.batch_size": "global batch size",
    "train.max_minutes": "stop after this many minutes, with a checkpoint",
    "train.device": "auto, cpu, cuda or cuda:N",
    "train.tensorboard": "write TensorBoard events into <savedir>/tb",
    "optim.lr": "peak learning rate",
    "net.type": "backbone",
    "process.type": "forward process",
    "eval.n_samples": "samples generated per evaluation",
    "seed": "seed of initialisation, data order and training noise",
}


class _PrintAndExit(argparse.Action):
    """A flag that prints `text()` to stdout and exits 0, like --help (so --config is not required)."""

    def __init__(self, option_strings, dest, text, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.text = text

    def __call__(self, parser, namespace, values, option_string=None):
        print(self.text())
        parser.exit()


def _config_reference() -> str:
    """Every config key with its help and default (--help-config; docs/config.md is the same list)."""
    from model_code import config

    rows = [r for r in config.field_help() if r[1] != "group"]
    width = max(len(r[0]) for r in rows)
    merging = "Config files" + __doc__.partition("\nConfig files")[2].rstrip() + (
        "\nThe inverse-heat code's command lines work too, each with a note line: --config X.py reads the X.yaml\n"
        "(or .yml / .json) beside it, and config.KEY=VALUE or --config.KEY=VALUE is the override KEY=VALUE.")
    return merging + "\n\nconfig keys (in a --config file or as key=value; docs/config.md has the same list):\n" + \
        "\n".join(f"  {name:<{width}}  {doc} [default {default}]" for name, typ, default, doc in rows)


def _common_keys() -> str:
    from model_code import config

    rows = {name: (default, doc) for name, typ, default, doc in config.field_help()}
    width = max(map(len, COMMON_KEYS))
    lines = []
    for key, text in COMMON_KEYS.items():
        default, doc = rows[key]
        # field_help ends the help of a key with fixed values in "(one of: a, b, ...)".
        choices = doc.rpartition("(one of: ")[2].rstrip(")") if "(one of: " in doc else None
        lines.append(f"  {key:<{width}}  {text}{': ' + choices if choices else ''} [default {default}]")
    return "\n".join(lines)


def _note(text: str) -> None:
    """One line on stderr from the first process only: parse_args runs before the process group exists."""
    from model_code import distributed
    from model_code.errors import UserError

    try:
        launch = distributed.launch_environment()
    except UserError:
        launch = None           # main stops on the same contradiction, with its own message
    if launch is None or launch["rank"] == 0:
        print(f"config: {text}", file=sys.stderr)


def _settings_flags(argv: list, notes: list) -> list:
    """The heat code's spellings of an override, --config.KEY=VALUE (ml_collections) and config.KEY=VALUE
    (its README; no schema group is called config), as the override KEY=VALUE; a note for each in `notes`."""
    from model_code.errors import UserError

    out = []
    for i, arg in enumerate(argv):
        prefix = "--config." if arg.startswith("--config.") else "config." if arg.startswith("config.") else None
        key, eq, value = arg[len(prefix or ""):].partition("=")
        if prefix == "--config." and not (eq and key):
            # `--config.KEY VALUE`: the next word could as well be a config file or a flag, so it is not taken.
            typed = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") else "VALUE"
            raise UserError(f"{arg}: write the override as {key or 'KEY'}={typed} (key=value, one word)")
        if prefix is None or not (eq and key):
            out.append(arg)
            continue
        out.append(f"{key}={value}")
        notes.append(f"{arg} is the override {key}={value} here")
    return out


def parse_args(argv=None):
    from model_code import config, config_files

    argv = sys.argv[1:] if argv is None else list(argv)
    notes = []
    description, _, _ = __doc__.partition("\nConfig files")
    epilog = ("common config keys (key=value on the command line, or in a --config file):\n" + _common_keys() +
              "\n\nevery key, and the older spellings accepted: python train.py --help-config (or docs/config.md)")
    parser = argparse.ArgumentParser(description=description.rstrip(), epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--help-config", action=_PrintAndExit, text=_config_reference,
                        help="list every config key with its default and exit")
    parser.add_argument("--config", "--cfg", dest="config", nargs="+", action="append", required=True,
                        metavar="FILE", help="experiment file(s), .json or .yaml, merged in order; may be repeated "
                                             "(keys starting with '_' are comments)")
    parser.add_argument("--savedir", "--workdir", dest="savedir", required=True,
                        help="run folder: everything the run writes goes here")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress output (bars on a terminal; plain lines, at most one a minute, in a log)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, applied last")
    args = config.parse_with_overrides(parser, _settings_flags(argv, notes))
    files = [f for group in args.config for f in group]
    # nargs='+' also swallows the key=value arguments that follow the files.
    args.config = [f for f in files if "=" not in f or Path(f).suffix in (".json", ".yaml", ".yml")]
    args.overrides = [f for f in files if f not in args.config] + args.overrides
    resolved = [config_files.resolve_path(f) for f in args.config]
    args.config = [path for path, _ in resolved]
    # The files' notes first, then one per old spelling in the order typed.
    for note in [note for _, note in resolved if note] + notes:
        _note(note)
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
        # What was free before this run took any: after its first steps the run says if it took most of it.
        cli.memory_at_start = (memory.available_bytes(device), memory.held_bytes(device))
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
    if dist.is_main and cfg.train.tensorboard:
        # The toy seed's README shows `tensorboard --logdir output`; here the events are in the run folder.
        print(f"tensorboard: tensorboard --logdir {savedir / 'tb'}", file=sys.stderr)
    trainer.memory_at_start = cli.memory_at_start
    if dist.is_main:
        trainer.meta["code"] = provenance.record(savedir, Path(__file__).parent, [sys.argv[0], *argv],
                                                extra={**cli.start_settings,
                                                       "data_dir": trainer.meta["data_dir"]})["code"]
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
        return INTERRUPTED_EXIT if stop.interrupted else PREEMPTED_EXIT
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
