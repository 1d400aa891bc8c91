#!/usr/bin/env python
"""Generation throughput of `eval.py --mode generate` at the published size: samples per second
of annealed Langevin and of the fast samplers, with the batch chosen from the free memory.

The run: exps/json/rbf-project.json (the project's UNO, 120 px fields padded to 136 px), its
weights as initialised (a sampler's cost does not depend on what the weights learnt), written to
OUT/run by the trainer's own checkpoint code, with synthetic volcano data (OUT/data).

For each fast sampler, `eval.py --exp_name OUT/run --mode generate --Ntest N --sampler S --steps K`
runs as a subprocess with the default batch (auto: half the free memory over the peak memory per
sample, measured on a two-level run of the sampler); the samples per second come from the
metrics.json it writes (`generation`: the sampling seconds, without loading or metrics). N is
--n (1024 on a GPU, the seed's example; a CPU takes about 0.5 s per network evaluation and
sample at this size, so --n 8 there). --batch-sizes adds runs with fixed batches.

Annealed Langevin as published (500 levels x T = 3 + 1 = 1501 network evaluations) runs the
same code in process on its first --langevin-levels levels, and its samples per second are
scaled by the number of network evaluations (each level costs the same): a full run at this
size is about 12 minutes per sample on one CPU core.

For --n 1024 the auto batch is also reported without generating (what eval.py would pick).

    python scripts/bench_generate.py                 # CPU: N = 8 (about 10 minutes on one thread)
    python scripts/bench_generate.py --n 1024        # a GPU
    python scripts/bench_generate.py --quick         # tiny network, seconds
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = "exps/json/rbf-project.json"
FAST = (("dpm_solver_2m", 10), ("heun_ode", 20), ("edm_stochastic", 20))
QUICK = ["net.width=8", "net.n_modes=4", "data.resolution=40", "process.num_levels=20"]


def make_run(out: Path, overrides: list, device: str) -> Path:
    """OUT/run/model.pt: the config's model as initialised, written as training would write it."""
    from model_code import build, config

    data_dir = out / "data"
    if not any((data_dir / "subset_128").rglob("*.int")):
        subprocess.run([sys.executable, str(ROOT / "scripts/make_volcano.py"), "--out", str(data_dir), "--n", "64",
                        "--seed", "0", "--quiet"], check=True)
    run = out / "run"
    cfg = config.load([str(ROOT / CONFIG)], [*overrides, f"train.device={device}", "train.tensorboard=false"])
    trainer = build.build_trainer(cfg, run, str(data_dir))
    run.mkdir(parents=True, exist_ok=True)
    config.save(cfg, run / "config.json")
    trainer.save(trainer.state(), run / "model.pt")
    return run


def eval_generate(run: Path, data_dir: Path, sampler: str, steps: int, n: int, batch, tag: str, device: str) -> dict:
    cmd = [sys.executable, str(ROOT / "eval.py"), "--exp_name", str(run), "--mode", "generate", "--Ntest", str(n),
           "--sampler", sampler, "--steps", str(steps), "--tag", tag, "--overwrite", "--quiet", "--device", device]
    if batch is not None:
        cmd += ["--val_batch_size", str(batch)]
    start = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "DATA_DIR": str(data_dir)},
                   stdout=subprocess.DEVNULL)
    wall = time.time() - start
    summary = json.loads((run / "eval" / tag / "metrics.json").read_text())
    g = summary["generation"]
    return {"sampler": sampler, "steps": steps, "nfe": summary.get("nfe"), "n": n, "batch_size": g["batch_size"],
            "batch_rule": summary["batching"]["rule"], "seconds": g["seconds"],
            "samples_per_second": g["samples_per_second"], "eval_py_wall_s": wall}


def langevin_rate(run_dir: Path, levels: int, n: int, device: str) -> dict:
    """Annealed Langevin's samples per second from its first `levels` levels, scaled to all of them."""
    import torch

    from model_code import batching, build, samplers
    from model_code.processes.base import sample_in_batches

    run = build.load_run(run_dir, "model.pt", device)
    options = build.sampler_setup(run.cfg)
    full = samplers.network_evaluations("annealed_langevin", len(options["sigmas"]), options)
    part = {**options, "sigmas": options["sigmas"][:levels], "final_denoise": False}
    done = samplers.network_evaluations("annealed_langevin", levels, part)
    batch, how = batching.auto_batch_size(run, run.shape, options, n, run.device, run.cfg.eval.batch_size)
    seeds = list(range(n))
    sample_in_batches(run.process, run.model, seeds[:1], run.shape, run.device, 1,
                      **{**part, "sigmas": part["sigmas"][:1]})            # warm-up
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    sample_in_batches(run.process, run.model, seeds, run.shape, run.device, batch, **part)
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) * full / done
    return {"sampler": "annealed_langevin", "steps": f"T{options['T']}", "nfe": full, "n": n, "batch_size": batch,
            "batch_rule": how["rule"], "seconds": seconds, "samples_per_second": n / seconds,
            "measured": f"first {levels} of {len(options['sigmas'])} levels ({done} of {full} network evaluations), "
                        f"time scaled by {full}/{done}"}


def auto_batch_for(run_dir: Path, n: int, device: str) -> dict:
    from model_code import batching, build

    run = build.load_run(run_dir, "model.pt", device)
    options = build.sampler_setup(run.cfg, "dpm_solver_2m", 10)
    return batching.auto_batch_size(run, run.shape, options, n, run.device, run.cfg.eval.batch_size)[1]


def table(rows: list) -> str:
    lines = ["| sampler | NFE | N | batch | how | seconds | samples / s | 1024 samples take |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        hours = 1024 / r["samples_per_second"] / 3600
        lines.append(f"| {r['sampler']} | {r['nfe']} | {r['n']} | {r['batch_size']} | {r['batch_rule']} | "
                     f"{r['seconds']:.4g} | {r['samples_per_second']:.4g} | {hours:.3g} h |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench_generate", help="run, data and json folder")
    p.add_argument("--n", type=int, default=8, help="samples per fast-sampler run (1024: the seed's example)")
    p.add_argument("--batch-sizes", default="", help="comma-separated fixed batches to compare with auto (dpm only)")
    p.add_argument("--langevin-levels", type=int, default=4, help="levels of annealed Langevin actually run")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--quick", action="store_true", help="a tiny network (a smoke run)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    run = make_run(args.out, QUICK if args.quick else [], args.device)
    rows = []
    for sampler, steps in FAST:
        rows.append(eval_generate(run, args.out / "data", sampler, steps, args.n, None, f"{sampler}-auto", args.device))
        print(f"   {sampler}: {rows[-1]['samples_per_second']:.4g} samples/s (batch {rows[-1]['batch_size']})",
              flush=True)
    for batch in [int(b) for b in args.batch_sizes.split(",") if b]:
        rows.append(eval_generate(run, args.out / "data", "dpm_solver_2m", 10, args.n, batch, f"dpm-b{batch}",
                                  args.device))
    rows.append(langevin_rate(run, args.langevin_levels, args.n, args.device))
    result = {"config": CONFIG, "rows": rows, "auto_batch_1024": auto_batch_for(run, 1024, args.device)}
    print(table(rows))
    print(f"auto batch for 1024 samples: {result['auto_batch_1024']}")
    (args.out / "bench_generate.json").write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
