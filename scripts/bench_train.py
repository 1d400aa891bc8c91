#!/usr/bin/env python
"""Training-step benchmark: time, achieved FLOP rate and peak memory of one training step per network.

One run measures
  * the machine: the sgemm rate (a timed torch.mm of two n x n float32 matrices, 2 n^3 FLOPs) on one
    thread and on --threads threads, and the FFT rate of torch.fft.rfft2 on 128 px and 136 px grids
    (2.5 N log2 N FLOPs per real-input transform of N = H W points: half the complex 5 N log2 N);
  * every network: the training step of its config as train.py builds it (model_code.build: the
    process, the net, process.wrap(net)), on random fields of the config's shape at the batch
    size stated in the table: the process's real loss (noise draw, preconditioning, weighting),
    forward and backward (no optimiser step). The UNO rows time two forwards of the same weights,
    interleaved step by step: the reference path (neuralop's FNOBlocks.forward as it is,
    net.fused_skips = False) and the project's (the default); FNO and U-Net have one path.

FLOPs per step are counted once, on the reference path, from the shapes of the operations seen by a
TorchDispatchMode: matrix products and convolutions with torch.utils.flop_counter's formulas (complex
operands x4: a complex multiply-add is four real ones), FFTs with 2.5 N log2 N (real) or 5 N log2 N
(complex) per transform, and bicubic resampling as 16 multiply-adds per output value (forward) and
per gradient value (backward). Element-wise work (activations, FiLM, additions, copies) is not
counted. Both paths are divided by the same count, so their GFLOP/s compare like their times.
% sgemm divides that rate by the sgemm rate measured after every round of the same network's steps
(the median): a shared host's speed drifts over a run, and one sgemm timing at the start put the
same step anywhere between 63 % and 82 %.

Peak memory: the increase of the resident set size (VmHWM - VmRSS after building, Linux
/proc/self/clear_refs resets the peak) over the first training step, in a fresh subprocess per
network and path; where /proc is missing, ru_maxrss is used instead.

Allocator: --malloc keep (the default) has glibc keep freed memory, as train.py does
(train.keep_freed_memory); --malloc default leaves glibc as it is, as the published code ran. The
setting is process-wide, so both paths of one run share it; --allocator-rounds N times the project step
under both settings in fresh processes, alternating, with the minor page faults per step.

    python scripts/bench_train.py                  # every network, 1 thread (about 10 minutes)
    python scripts/bench_train.py --threads 2 --repeat 5 --json out.json
    python scripts/bench_train.py --quick          # tiny sizes, 1 repetition (the test)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import flop_registry  # noqa: E402

aten = torch.ops.aten


@dataclass
class Network:
    name: str
    config: str
    overrides: list = field(default_factory=list)
    batch: int = 4
    note: str = ""


# The networks. Batch 4 for the large UNOs keeps a repetition under a minute on one thread
# (their configs train with 16); the small ones run at their configs' batch sizes.
NETWORKS = [
    Network("fno_grf", "exps/json/grf-quality.json", batch=32, note="FNO, 32 px"),
    Network("uno_quickstart", "exps/json/quickstart.json", batch=16, note="UNO, 32 px"),
    Network("uno_64px", "exps/json/rbf-64px-scale0.1.json", batch=4, note="UNO, 60 px (+4 px padding each side)"),
    # A config choice, not the file's setting: 2 px padding each side lands the FFTs on 64 px, not 68.
    Network("uno_64px_pad2", "exps/json/rbf-64px-scale0.1.json", ["net.domain_padding=0.0333"], batch=4,
            note="UNO, 60 px padded to 64 px"),
    Network("uno_128px", "exps/json/rbf-project.json", batch=4, note="UNO, 120 px padded to 136 px"),
    # A config choice, not the published setting: 4 px padding each side lands the FFTs on 128 px.
    Network("uno_128px_pad4", "exps/json/rbf-project.json", ["net.domain_padding=0.0333"], batch=4,
            note="UNO, 120 px padded to 128 px"),
    Network("unet_digits", "configs/digits/default_digits_configs.yaml", batch=64, note="U-Net, 8 px"),
]
# Tiny versions for --quick: the same builders and paths, a fraction of the work.
QUICK = {
    "fno_grf": (["net.width=8", "net.n_modes=4", "data.resolution=16"], 4),
    "uno_quickstart": (["net.width=4", "net.n_modes=4", "data.resolution=16"], 2),
    "uno_64px": (["net.width=4", "net.n_modes=4", "data.resolution=24"], 2),
    "uno_64px_pad2": (["net.width=4", "net.n_modes=4", "data.resolution=24"], 2),
    "uno_128px": (["net.width=4", "net.n_modes=4", "data.resolution=38"], 1),
    "uno_128px_pad4": (["net.width=4", "net.n_modes=4", "data.resolution=38"], 1),
    "unet_digits": (["net.unet.model_channels=8"], 4),
}
FIELD_CHANNELS = {"volcano": 2, "grf": 1}
DEFAULT_FIELD_RES = {"volcano": 128, "grf": 32}


# ------------------------------------------------------------------ FLOP counting
def _numel(shape) -> int:
    return math.prod(int(s) for s in shape)


def _fft_flops(shape, dims, real: bool) -> float:
    n = _numel(shape[d] for d in dims)
    batch = _numel(shape) / n
    return (2.5 if real else 5.0) * n * math.log2(n) * batch if n > 1 else 0.0


class FlopCounter(TorchDispatchMode):
    """FLOPs of the dispatched operations by kind (see the module docstring for the conventions)."""

    def __init__(self):
        super().__init__()
        self.flops = {"matmul": 0.0, "fft": 0.0, "bicubic": 0.0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in flop_registry:
            count = flop_registry[packet](*args, **kwargs, out_val=out)
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            if any(t.is_complex() for t in tensors):
                count *= 4
            self.flops["matmul"] += count
        elif packet in (aten._fft_r2c, aten._fft_c2r, aten._fft_c2c):
            dims = [d % args[0].ndim for d in args[1]]
            # c2r reads the half spectrum: its real size is the output's.
            shape = out.shape if packet is aten._fft_c2r else args[0].shape
            self.flops["fft"] += _fft_flops(shape, dims, real=packet is not aten._fft_c2c)
        elif packet is aten.upsample_bicubic2d:
            self.flops["bicubic"] += 2 * 16 * out.numel()
        elif packet is aten.upsample_bicubic2d_backward:
            self.flops["bicubic"] += 2 * 16 * args[0].numel()
        return out


# ------------------------------------------------------------------ machine rates
def _best_time(fn, repeat: int, min_time: float = 0.2) -> float:
    """Best of `repeat` timings, each of enough calls to last at least min_time seconds."""
    fn()
    calls, best = 1, math.inf
    for _ in range(max(1, repeat)):
        while True:
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            elapsed = time.perf_counter() - start
            if elapsed >= min_time or calls >= 1 << 12:
                break
            calls *= 2
        best = min(best, elapsed / calls)
    return best


def sgemm_rate(threads: int, n: int, repeat: int) -> float:
    """GFLOP/s of torch.mm on two n x n float32 matrices (2 n^3 FLOPs)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        return 2 * n ** 3 / _best_time(lambda: torch.mm(a, b), repeat) / 1e9
    finally:
        torch.set_num_threads(previous)


def fft_rate(side: int, threads: int, channels: int, repeat: int) -> float:
    """GFLOP/s of torch.fft.rfft2 on (channels, side, side) float32 (2.5 N log2 N per transform)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(channels, side, side)
        flops = _fft_flops(x.shape, (1, 2), real=True)
        return flops / _best_time(lambda: torch.fft.rfft2(x), repeat) / 1e9
    finally:
        torch.set_num_threads(previous)


# ------------------------------------------------------------------ training steps
class Step:
    """One network's training step: loss of the process on a fixed random batch, then backward."""

    def __init__(self, net_spec: Network, quick: bool):
        from model_code import build, config
        from model_code.data.sources import Batch

        overrides, batch = list(net_spec.overrides), net_spec.batch
        if quick:
            tiny, batch = QUICK[net_spec.name]
            overrides += tiny
        cfg = config.load([str(ROOT / net_spec.config)], overrides)
        torch.manual_seed(cfg.seed)
        d = cfg.data
        if d.dataset in FIELD_CHANNELS:
            # Fields need no files: only their shape enters the step (the data loaders crop
            # npad pixels from the resolution).
            side = (d.resolution or DEFAULT_FIELD_RES[d.dataset]) - d.npad
            data, shape = None, (FIELD_CHANNELS[d.dataset], side, side)
        else:
            data = build.build_dataset(cfg, None)
            shape = tuple(data.shape)
        noise = build.build_noise(cfg, shape[0]) if cfg.process.type in ("ve", "interpolant") else None
        self.process = build.build_process(cfg, data, noise)
        if data is not None:
            self.process.fit(data.train)
        self.net = build.build_net(cfg, shape)
        self.model = self.process.wrap(self.net)
        self.model.train()
        self.shape, self.batch_size = shape, batch
        self.x = data.train[:batch].clone() if data is not None and len(data.train) >= batch else \
            torch.randn(batch, *shape)
        self.batch = Batch(self.x)
        self.params = sum(p.numel() * (2 if p.is_complex() else 1) for p in self.net.parameters())
        self.has_reference = hasattr(self.net, "fused_skips")

    def set_path(self, path: str) -> None:
        if self.has_reference:
            self.net.fused_skips = path == "project"

    def __call__(self) -> None:
        # The same noise every call: both paths see the same sigmas and draws.
        generator = torch.Generator().manual_seed(0)
        self.model.zero_grad(set_to_none=True)
        draw = self.process.loss(self.model, self.batch, generator)
        draw.loss.backward()

    def paths(self) -> list:
        return ["reference", "project"] if self.has_reference else ["project"]

    def count_flops(self) -> dict:
        self.set_path("reference")
        counter = FlopCounter()
        with counter:
            self()
        self.set_path("project")
        return counter.flops


def time_steps(step: Step, repeat: int, gemm_rate=None) -> tuple:
    """Median seconds per step of every path, the paths interleaved step by step after a warm-up; and the
    median of gemm_rate() measured after every round (None without it), so that the step's share of the
    sgemm rate is taken against the machine as it ran at the same minutes (a shared host drifts)."""
    times, rates = {p: [] for p in step.paths()}, []
    for p in step.paths():
        step.set_path(p)
        step()
    for _ in range(repeat):
        for p in step.paths():
            step.set_path(p)
            start = time.perf_counter()
            step()
            times[p].append(time.perf_counter() - start)
        if gemm_rate is not None:
            rates.append(gemm_rate())
    step.set_path("project")
    return {p: statistics.median(t) for p, t in times.items()}, (statistics.median(rates) if rates else None)


# ------------------------------------------------------------------ memory (subprocess)
def _rss_kib(field_name: str):
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def memory_child(name: str, path: str, quick: bool, threads: int, malloc: str) -> dict:
    """Peak resident-set increase of the first training step of one network and path (MiB)."""
    set_malloc(malloc)
    torch.set_num_threads(threads)
    step = Step(next(n for n in NETWORKS if n.name == name), quick)
    step.set_path(path)
    before = _rss_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")     # resets VmHWM to the current RSS
        method = "VmHWM"
    except OSError:
        method = "ru_maxrss"
    step()
    peak = _rss_kib("VmHWM") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if before is None or peak is None:
        return {"peak_mib": None, "method": "unavailable"}
    return {"peak_mib": (peak - before) / 1024, "method": method}


def _child(args: list, threads: int) -> dict:
    """This script run as a fresh process with `args`: the JSON line it prints, or {'failed': why}."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args, "--threads", str(threads)],
                          capture_output=True, text=True, env=env, cwd=str(ROOT))
    if done.returncode != 0:
        return {"failed": " ".join(done.stderr.strip().splitlines()[-1:])}
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_memory(name: str, path: str, quick: bool, threads: int, malloc: str) -> dict:
    out = _child(["--memory-child", name, "--path", path, "--malloc", malloc] + (["--quick"] if quick else []),
                 threads)
    return {"peak_mib": None, "method": f"failed: {out['failed']}"} if "failed" in out else out


# ------------------------------------------------------------------ allocator A/B (subprocesses)
def allocator_child(name: str, quick: bool, threads: int, malloc: str, repeat: int) -> dict:
    """Median project step of one network in this process under one allocator setting, and its minor page
    faults per step (the kernel mapping pages in again)."""
    set_malloc(malloc)
    torch.set_num_threads(threads)
    step = Step(next(n for n in NETWORKS if n.name == name), quick)
    step.set_path("project")
    step()
    times, start_faults = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start_faults
    return {"step_s": statistics.median(times), "faults_per_step": faults / repeat}


def allocator_ab(names: list, quick: bool, threads: int, repeat: int, rounds: int) -> list:
    """The project step of every network with glibc keeping freed memory and with glibc's defaults, each in
    fresh processes, the two settings alternating for `rounds` rounds (the setting is process-wide, so the
    two cannot share a process); per setting the median over its rounds."""
    results = {(n, m): [] for n in names for m in ("keep", "default")}
    for _ in range(rounds):
        for name in names:
            for malloc in ("keep", "default"):
                out = _child(["--allocator-child", name, "--malloc", malloc, "--repeat", str(repeat)]
                             + (["--quick"] if quick else []), threads)
                if "failed" in out:
                    raise SystemExit(f"allocator A/B of {name} ({malloc}) failed: {out['failed']}")
                results[(name, malloc)].append(out)
    rows = []
    for name in names:
        row = {"network": name}
        for malloc in ("keep", "default"):
            runs = results[(name, malloc)]
            row[malloc] = {k: statistics.median(r[k] for r in runs) for k in ("step_s", "faults_per_step")}
        row["speedup"] = row["default"]["step_s"] / row["keep"]["step_s"]
        rows.append(row)
    return rows


def allocator_table(rows: list) -> str:
    lines = ["| network | step s, kept | step s, glibc default | speed-up | page faults / step, kept | "
             "page faults / step, default |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['network']} | {_fmt(r['keep']['step_s'])} | {_fmt(r['default']['step_s'])} | "
                     f"{r['speedup']:.2f}x | {r['keep']['faults_per_step']:.0f} | "
                     f"{r['default']['faults_per_step']:.0f} |")
    return "\n".join(lines)


def set_malloc(choice: str) -> str:
    """The allocator of this process's steps, as train.py sets it (keep) or glibc's own (default)."""
    from model_code import allocator

    return allocator.keep_freed_memory(choice == "keep")["malloc"]


# ------------------------------------------------------------------ table
def _fmt(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}"


def table(rows: list, machine: dict) -> str:
    lines = [
        f"sgemm (torch.mm {machine['gemm_n']}^2): {machine['sgemm_1']:.1f} GFLOP/s on 1 thread, "
        f"{machine['sgemm_t']:.1f} on {machine['threads']}; rfft2 (2.5 N log2 N): "
        + ", ".join(f"{s} px {machine[f'fft_{s}']:.1f}" for s in (128, 136)) + " GFLOP/s on 1 thread",
        "% sgemm: against the sgemm rate on the steps' threads measured after every round of the same network's "
        "steps (the median; column sgemm)",
        f"malloc: {machine['malloc']}",
        "",
        "| network | config | input | batch | params | path | step s | GFLOP / step | GFLOP/s | sgemm | % sgemm "
        "| peak MiB | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rate = r["gflop"] / r["step_s"]
        sgemm = r.get("sgemm_alongside") or (machine["sgemm_1"] if machine["threads"] == 1 else machine["sgemm_t"])
        speedup = "" if r.get("speedup") is None else f"{r['speedup']:.2f}x"
        lines.append(
            f"| {r['network']} | {r['config']} | {'x'.join(map(str, r['shape']))} | {r['batch']} | "
            f"{r['params'] / 1e6:.2f} M | {r['path']} | {_fmt(r['step_s'])} | {_fmt(r['gflop'])} | {rate:.1f} | "
            f"{sgemm:.1f} | {100 * rate / sgemm:.0f} | {_fmt(r.get('peak_mib'))} | "
            f"{speedup} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ main
def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 repetition (for the tests)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the steps (default 1)")
    ap.add_argument("--repeat", type=int, default=None, help="timed steps per path (default 3; --quick 1)")
    ap.add_argument("--networks", nargs="*", default=None, help="a subset of: " +
                    ", ".join(n.name for n in NETWORKS))
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--malloc", choices=("keep", "default"), default="keep",
                    help="keep: glibc keeps freed memory, as train.py does by default (train.keep_freed_memory); "
                         "default: glibc's own settings (as train.keep_freed_memory=false, or the published code)")
    ap.add_argument("--allocator-rounds", type=int, default=0,
                    help="also time the project step of every network with and without kept memory (--malloc "
                         "keep / default), in fresh processes alternating for this many rounds (0: skip)")
    ap.add_argument("--json", default=None, help="write machine rates and rows to this file")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--allocator-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", default="project", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.path, args.quick, args.threads, args.malloc)))
        return {}
    repeat = args.repeat or (1 if args.quick else 3)
    if args.allocator_child:
        print(json.dumps(allocator_child(args.allocator_child, args.quick, args.threads, args.malloc, repeat)))
        return {}
    names = args.networks or [n.name for n in NETWORKS]
    unknown = sorted(set(names) - {n.name for n in NETWORKS})
    if unknown:
        raise SystemExit(f"unknown networks: {', '.join(unknown)}")
    malloc = set_malloc(args.malloc)
    gemm_n = 256 if args.quick else 2048
    machine = {"malloc": malloc, "threads": args.threads, "gemm_n": gemm_n, "torch": torch.__version__,
               "sgemm_1": sgemm_rate(1, gemm_n, repeat),
               "sgemm_t": sgemm_rate(args.threads, gemm_n, repeat),
               **{f"fft_{s}": fft_rate(s, 1, 4 if args.quick else 64, repeat) for s in (128, 136)}}
    torch.set_num_threads(args.threads)
    rows = []
    for spec in (n for n in NETWORKS if n.name in names):
        step = Step(spec, args.quick)
        flops = step.count_flops()
        gflop = sum(flops.values()) / 1e9
        times, sgemm_alongside = time_steps(step, repeat, lambda: sgemm_rate(args.threads, gemm_n, 1))
        for path, seconds in times.items():
            row = {"network": spec.name, "config": spec.config + "".join(f" {o}" for o in spec.overrides),
                   "note": spec.note, "shape": list(step.shape), "batch": step.batch_size, "params": step.params,
                   "path": path, "step_s": seconds, "gflop": gflop, "sgemm_alongside": sgemm_alongside,
                   "gflop_by_kind": {k: v / 1e9 for k, v in flops.items()},
                   "speedup": times["reference"] / seconds if path == "project" and "reference" in times else None}
            if not args.no_memory:
                row.update(measure_memory(spec.name, path, args.quick, args.threads, args.malloc))
            rows.append(row)
        del step
    print(table(rows, machine))
    result = {"machine": machine, "rows": rows, "repeat": repeat, "quick": args.quick}
    if args.allocator_rounds > 0:
        result["allocator"] = allocator_ab(names, args.quick, args.threads, repeat, args.allocator_rounds)
        print(f"\nThe project step with freed memory kept (train.py's default) and with glibc's defaults, "
              f"{args.allocator_rounds} alternating rounds of fresh processes, median of {repeat} steps each:\n")
        print(allocator_table(result["allocator"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
