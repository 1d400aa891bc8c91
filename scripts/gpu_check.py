#!/usr/bin/env python
"""GPU check: what bf16 autocast and torch.compile (train.precision, train.compile) buy on this machine.

For each network and each variant (fp32; bf16; bf16 + torch.compile; optionally fp32 + compile)
it builds the run exactly as train.py does (model_code.build.build_trainer: the config's process,
network, optimiser, EMA, the variant's precision / compile settings) and measures
  * the training step: median time after the first steps, training samples per second, the
    first step's time (for a compiled variant: the compilation), peak GPU memory
    (torch.cuda.max_memory_allocated; CUDA only);
  * generation with the EMA weights: samples per second of the system's fast sampler (VE:
    heun_ode on a 20-level EDM grid, 39 network evaluations; the U-Net's heat dissipation: its K
    levels), peak GPU memory; timed on a second call, after a warm-up call of the same size;
  * the loss: the mean training loss of the last steps (a quarter of them, at most 20) after
    --steps steps from the same seed on the same data, and its relative difference from fp32's.

Networks: legacy_uno_128 (exps/json/rbf-copied.json: the published UNO, 120 px fields padded to
128 px), uno_128 (exps/json/rbf-project.json: the project's UNO at the same size) and
unet_cifar10 (configs/cifar10/default_cifar10_configs.yaml: 32 px RGB heat dissipation). The data
are synthetic: volcano interferograms from model_code.data.volcano.write_synthetic_dataset and
smooth random RGB images, written to a temporary folder (or --data-dir).

    python scripts/gpu_check.py --out gpu_check.json          # on a GPU: about 5 minutes at most
    python scripts/gpu_check.py --quick --out /tmp/check.json  # tiny sizes, any machine, seconds

It runs on a CPU too and then reports CPU times (and no memory). --max-minutes bounds the run:
measurements that would start after it are left out of the table (marked "skipped").
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

try:
    import numpy as np  # noqa: E402
    import torch  # noqa: E402
except ModuleNotFoundError as missing:      # not the project's environment: say which to activate
    from model_code.errors import exit_for_missing_module
    exit_for_missing_module(missing, "gpu_check.py")


@dataclass
class Network:
    name: str
    configs: list
    data: str                              # "volcano" or "images"
    overrides: list = field(default_factory=list)
    quick: list = field(default_factory=list)
    note: str = ""


_FAST_VE = ["sampler.name=heun_ode", "sampler.steps=20"]
NETWORKS = [
    Network("legacy_uno_128", ["exps/json/rbf-copied.json"], "volcano", _FAST_VE,
            ["data.resolution=40", "net.width=4", "sampler.steps=3"], "published UNO, 120 px (+8 px)"),
    Network("uno_128", ["exps/json/rbf-project.json"], "volcano", _FAST_VE,
            ["data.resolution=40", "net.width=4", "net.n_modes=4", "sampler.steps=3"], "project UNO, 120 px"),
    Network("unet_cifar10", ["configs/cifar10/default_cifar10_configs.yaml"], "images", [],
            ["net.unet.model_channels=8", "net.unet.channel_mult=[1,2]", "net.unet.num_res_blocks=1",
             "net.unet.num_heads=1", "net.unet.attention_levels=[1]", "process.levels.K=3",
             "process.levels.prior=dct_diag"],
            "U-Net, 32 px RGB, heat"),
]
VARIANTS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16-compile": ("bf16", True),
            "fp32-compile": ("fp32", True)}
DEFAULT_VARIANTS = ["fp32", "bf16", "bf16-compile"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny networks and data, 4 steps, 2 generated samples, compile backend eager unless "
                        "--compile-backend is given: checks the script and shows the table's format in seconds")
    p.add_argument("--out", default="gpu_check.json", help="the JSON file of every measurement (default %(default)s)")
    p.add_argument("--networks", default=",".join(n.name for n in NETWORKS),
                   help="comma-separated networks to measure (default %(default)s)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated variants: {', '.join(VARIANTS)} (default %(default)s)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per variant (default 200; --quick 4); the loss compares after them")
    p.add_argument("--batch", type=int, default=None,
                   help="training batch size (default: each config's own, 16 for the UNOs and 128 for the U-Net; "
                        "--quick 2)")
    p.add_argument("--n-gen", type=int, default=None,
                   help="samples per timed generation, one batch (default 16; --quick 2)")
    p.add_argument("--compile-mode", default="default",
                   help="train.compile of the compiled variants: default, reduce-overhead or max-autotune")
    p.add_argument("--compile-backend", default=None,
                   help="train.compile_backend of the compiled variants (default inductor; --quick eager)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda[:N]")
    p.add_argument("--max-minutes", type=float, default=5.0,
                   help="stop starting new measurements after this many minutes (default %(default)s)")
    p.add_argument("--data-dir", default=None, help="where the synthetic data are written (default: a temporary "
                                                    "folder, removed at the end)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's own)")
    args = p.parse_args(argv)
    args.steps = args.steps or (4 if args.quick else 200)
    args.batch = args.batch or (2 if args.quick else None)
    args.n_gen = args.n_gen or (2 if args.quick else 16)
    args.compile_backend = args.compile_backend or ("eager" if args.quick else "inductor")
    names = {n.name for n in NETWORKS}
    args.networks = [n for n in args.networks.split(",") if n]
    args.variants = [v for v in args.variants.split(",") if v]
    bad = [n for n in args.networks if n not in names] + [v for v in args.variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown network or variant: {', '.join(bad)} (networks: {', '.join(sorted(names))}; "
                f"variants: {', '.join(VARIANTS)})")
    if args.steps < 2 or args.n_gen < 1:
        p.error("--steps must be >= 2 and --n-gen >= 1")
    return args


# ------------------------------------------------------------------------ data
def write_images(folder: Path, n: int, size: int = 32, seed: int = 0) -> None:
    """n smooth random RGB images: 4x4 random colours, bicubically enlarged, plus a little texture."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
        img = np.asarray(coarse.resize((size, size), Image.BICUBIC), dtype=np.float64)
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:05d}.png")


def prepare_data(root: Path, quick: bool) -> dict:
    from model_code.data.volcano import write_synthetic_dataset

    write_synthetic_dataset(root / "volcano", 24 if quick else 160, seed=0, overwrite=True)
    write_images(root / "images", 16 if quick else 512)
    return {"volcano": root / "volcano", "images": root / "images"}


# ------------------------------------------------------------------ measuring
def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device):
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 3) if device.type == "cuda" else None


def _reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def load_config(net: Network, args, data: dict, variant: str):
    from model_code import config

    precision, compiled = VARIANTS[variant]
    overrides = list(net.overrides) + (list(net.quick) if args.quick else [])
    overrides += ["train.epochs=null", f"train.steps={args.steps}", "train.tensorboard=false", "eval.evaluators=[]",
                  f"eval.batch_size={args.n_gen}", f"train.device={args.device}", f"train.precision={precision}",
                  f"train.compile={args.compile_mode if compiled else 'null'}",
                  f"train.compile_backend={args.compile_backend}"]
    if args.batch:
        overrides.append(f"train.batch_size={args.batch}")
    if net.data == "images":
        overrides += ["data.dataset=folder", f"data.root={data['images']}", "data.max_examples=null"]
    return config.load([str(ROOT / f) for f in net.configs], overrides)


def measure(net: Network, variant: str, args, data: dict, deadline: float, progress) -> dict:
    from model_code import build

    cfg = load_config(net, args, data, variant)
    device = build.resolve_device(cfg.train.device)
    import torch._dynamo

    torch._dynamo.reset()
    _reset_peak(device)
    with tempfile.TemporaryDirectory() as savedir:
        trainer = build.build_trainer(cfg, savedir, str(data["volcano"]) if net.data == "volcano" else None,
                                      device=device)
        n_params = sum(p.numel() * (2 if p.is_complex() else 1) for p in trainer.model.parameters())
        batches = trainer.source.batches(cfg.train.batch_size, trainer.generator)
        times, losses = [], []
        for step in range(args.steps):
            if time.time() > deadline and step >= 2:
                break
            batch = next(batches)
            _sync(device)
            start = time.perf_counter()
            terms, n = trainer.train_step(batch)
            _sync(device)
            times.append(time.perf_counter() - start)
            losses.append(terms["loss"] / n)
            if step == 0 or (step + 1) % max(1, args.steps // 4) == 0:
                progress(f"{net.name} {variant}: step {step + 1}/{args.steps} {times[-1] * 1e3:.1f} ms "
                         f"loss {losses[-1]:.4g}")
        train_peak = _peak_gib(device)
        warm = min(len(times) - 1, max(1, len(times) // 10))
        step_time = statistics.median(times[warm:])
        _reset_peak(device)
        trainer.generate(args.n_gen)                   # warm-up (and compilation) of generation
        _sync(device)
        start = time.perf_counter()
        trainer.generate(args.n_gen)
        _sync(device)
        gen_time = time.perf_counter() - start
        gen_peak = _peak_gib(device)
        progress(f"{net.name} {variant}: generation {args.n_gen} samples in {gen_time:.2f} s")
    tail = max(1, min(20, len(losses) // 4))
    row = dict(network=net.name, note=net.note, variant=variant, precision=cfg.train.precision,
               compile=cfg.train.compile, compile_backend=cfg.train.compile_backend if cfg.train.compile else None,
               parameters=n_params, batch=cfg.train.batch_size, steps=len(times),
               step_ms=round(step_time * 1e3, 3), first_step_s=round(times[0], 3),
               train_samples_per_s=round(cfg.train.batch_size / step_time, 2),
               gen_samples_per_s=round(args.n_gen / gen_time, 3), gen_batch=args.n_gen,
               sampler=build.sampler_label(build.sampler_setup(cfg)), train_peak_gib=train_peak,
               gen_peak_gib=gen_peak, loss=float(np.mean(losses[-tail:])), loss_tail=tail,
               finite=all(math.isfinite(v) for v in losses))
    del trainer
    gc.collect()
    _reset_peak(device)
    return row


# ------------------------------------------------------------------ report
COLUMNS = [("network", "network"), ("variant", "variant"), ("step ms", "step_ms"),
           ("train samples/s", "train_samples_per_s"), ("first step s", "first_step_s"),
           ("gen samples/s", "gen_samples_per_s"), ("train peak GiB", "train_peak_gib"),
           ("gen peak GiB", "gen_peak_gib"), ("loss", "loss"), ("loss vs fp32", "loss_vs_fp32")]


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(rows: list) -> str:
    lines = ["| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for _, key in COLUMNS) + " |")
    return "\n".join(lines)


def machine() -> dict:
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.time()
    deadline = began + 60 * args.max_minutes

    def progress(message: str) -> None:
        print(f"[{time.time() - began:6.1f} s] {message}", file=sys.stderr, flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data_dir) if args.data_dir else Path(tmp)
        progress(f"writing synthetic data to {root}")
        data = prepare_data(root, args.quick)
        for net in [n for n in NETWORKS if n.name in args.networks]:
            for variant in args.variants:
                if time.time() > deadline:
                    progress(f"{net.name} {variant}: skipped (--max-minutes {args.max_minutes} reached)")
                    rows.append(dict(network=net.name, variant=variant, skipped=True))
                    continue
                rows.append(measure(net, variant, args, data, deadline, progress))
    for row in rows:
        base = next((r for r in rows if r["network"] == row["network"] and r["variant"] == "fp32"
                     and not r.get("skipped")), None)
        if base is not None and not row.get("skipped") and row["variant"] != "fp32":
            row["loss_vs_fp32"] = f"{100 * (row['loss'] / base['loss'] - 1):+.2f} %"
    info = machine()
    header = (f"device: {info.get('gpu', 'cpu')}; torch {info['torch']}, CUDA {info['cuda']}, "
              f"{info['threads']} CPU threads; {args.steps} steps" + (" (--quick)" if args.quick else ""))
    print(header)
    print(table(rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": info, "quick": args.quick, "steps": args.steps,
                                          "minutes": round((time.time() - began) / 60, 2), "rows": rows},
                                         indent=2) + "\n")
    progress(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    from model_code.errors import run_cli

    run_cli(main, "gpu_check.py")
