#!/usr/bin/env python
"""What the checksum costs: a checkpoint write and load with it against a plain torch.save / torch.load.

    python scripts/bench_checkpoint.py                   # the published 120 px UNO's training state
    python scripts/bench_checkpoint.py --quick           # a tiny state, for the tests

The payload is a training state of the network a run writes (weights, EMA weights and Adam's two
moments: four copies of the parameters). Baseline: torch.save to a temporary file, fsync, rename
(what checkpoints did before the checksum) and torch.load(weights_only=True). The project:
checkpoint.atomic_save (checksum, fsync, read back from the disk and verified, rename, folder
synced) and checkpoint.load (checksum verified). Both in one process, alternating, median of
--repeat rounds; prints a markdown table and the ratios.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_code import checkpoint, config  # noqa: E402


def training_state(config_file: str, overrides=()) -> dict:
    """A payload shaped like model.pt of the config's network: weights, EMA, Adam's exp_avg / exp_avg_sq."""
    from model_code import build, memory

    cfg = config.load([ROOT / config_file], list(overrides))
    shape = memory.data_shape(cfg)                      # the grid the run trains on; no data is read
    net = build.build_net(cfg, (shape.channels, shape.height, shape.width))
    weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
    moments = {i: {"step": torch.tensor(10.0), "exp_avg": v.clone(), "exp_avg_sq": v.clone()}
               for i, v in enumerate(weights.values()) if v.is_floating_point()}
    return {"format_version": checkpoint.FORMAT_VERSION, "model": weights, "ema": {"shadow": weights},
            "optimizer": {"state": moments, "param_groups": [{"lr": 1e-3, "params": list(moments)}]},
            "step": 10, "config": config.to_dict(cfg)}


def plain_save(payload: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".plain")
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(payload: dict, folder: Path, repeat: int) -> dict:
    plain, project = folder / "plain.pt", folder / "project.pt"
    rows = {"save": ([], []), "load": ([], [])}
    for _ in range(repeat):
        rows["save"][0].append(timed(lambda: plain_save(payload, plain)))
        rows["save"][1].append(timed(lambda: checkpoint.atomic_save(payload, project)))
        rows["load"][0].append(timed(lambda: torch.load(plain, map_location="cpu", weights_only=True)))
        rows["load"][1].append(timed(lambda: checkpoint.load(project)))
    return {"bytes": project.stat().st_size,
            **{k: (statistics.median(a), statistics.median(b)) for k, (a, b) in rows.items()}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", default="exps/json/rbf-project.json",
                   help="the run whose network's state is written (default: the published 120 px settings)")
    p.add_argument("--repeat", type=int, default=5, help="rounds; the median is kept (default 5)")
    p.add_argument("--dir", default=None, help="folder on the file system to measure (default: a temporary one)")
    p.add_argument("--quick", action="store_true", help="a tiny network and 2 rounds, for the tests")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    overrides = ["net.type=fno", "net.width=8", "net.n_layers=2", "net.n_modes=4"] if args.quick else []
    payload = training_state("exps/json/quickstart.json" if args.quick else args.config, overrides)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        result = measure(payload, Path(folder), 2 if args.quick else args.repeat)
    print(f"checkpoint of {result['bytes'] / 2 ** 20:.1f} MiB ({args.config if not args.quick else 'quick'}), "
          f"median of {2 if args.quick else args.repeat}\n")
    print("| step | plain torch s | project s (checksum + verify) | ratio |")
    print("|---|---|---|---|")
    for name in ("save", "load"):
        base, ours = result[name]
        print(f"| {name} | {base:.3f} | {ours:.3f} | {ours / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
