"""Benchmark: our GRF sampler against the dense-Cholesky baseline.

    python scripts/bench_noise.py            # 32, 64, 128 px (dense + ours), ours alone at 256 and 1024
    python scripts/bench_noise.py --quick    # 32 and 64 px only (smoke test)

Field: rbf kernel, length scale 0.05, eps 0.01, 2 channels; one "sample" is one (2, n, n) field.

* dense (the published method): build the dense (n^2 x n^2) covariance K + eps^2 I, Cholesky
  factor L, then sample L @ z for a batch of z (one column per sample and channel).
* ours: GaussianRandomField.prepare (two 1-D eigendecompositions) then
  U_y (sqrt(a b^T + eps^2) * Z) U_x^T, batched with matmul.

Set-up = build + factorise. ms/sample = median over repeats of (time for a batch) / batch.
Peak MiB = increase of the process's peak RSS (ru_maxrss) during set-up and sampling; every
configuration runs in its own fresh subprocess so the peaks do not mix. The dense baseline is
skipped where its estimated memory exceeds 40% of the available RAM (float32 is tried first
when float64 would not fit).
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

LENGTH_SCALE = 0.05
EPS = 0.01
CHANNELS = 2
MEMORY_FRACTION = 0.4


# --------------------------------------------------------------------------- worker (subprocess)


def _peak_rss_mib() -> float:
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kb / 1024.0


def _worker(cfg: dict) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from model_code.noise import GaussianRandomField

    n, method, batch, repeats = cfg["res"], cfg["method"], cfg["batch"], cfg["repeats"]
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg["dtype"]]
    gen = torch.Generator().manual_seed(0)
    torch.randn(8, 8) @ torch.randn(8, 8)  # initialise the BLAS thread pool before the baseline
    rss0 = _peak_rss_mib()

    if method in ("ours", "ours-exp"):
        kernel = "rbf" if method == "ours" else "exponential"
        setups = []
        for _ in range(max(1, repeats)):  # cheap: median over fresh objects (no cache)
            grf = GaussianRandomField(channels=CHANNELS, kernel=kernel, length_scale=LENGTH_SCALE, eps=EPS)
            t0 = time.perf_counter()
            grf.prepare(n, dtype=dtype)
            setups.append(time.perf_counter() - t0)
        setup = float(np.median(setups))

        def draw():
            return grf.sample(batch, n, generator=gen, dtype=dtype)
    else:  # dense Cholesky baseline
        t0 = time.perf_counter()
        idx = torch.arange(n * n)
        pts = torch.stack([(idx // n).to(dtype) / n, (idx % n).to(dtype) / n], dim=1)
        cov = torch.cdist(pts, pts)  # (n^2, n^2)
        del pts, idx
        cov.square_().mul_(-1.0 / (2 * LENGTH_SCALE ** 2)).exp_()
        cov.diagonal().add_(EPS ** 2)
        chol, info = torch.linalg.cholesky_ex(cov)
        del cov
        setup = time.perf_counter() - t0
        if int(info) != 0:
            return {"error": f"Cholesky failed in {cfg['dtype']} (matrix not numerically PD)",
                    "setup_s": setup, "peak_mib": _peak_rss_mib() - rss0}

        def draw():
            z = torch.randn(n * n, batch * CHANNELS, generator=gen, dtype=dtype)
            return (chol @ z).T.reshape(batch, CHANNELS, n, n)

    x = draw()  # warm-up (and a sanity check of the variance)
    var = float(x.double().pow(2).mean())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        x = draw()
        times.append(time.perf_counter() - t0)
    del x
    per_sample_ms = 1e3 * float(np.median(times)) / batch
    return {"setup_s": setup, "ms_per_sample": per_sample_ms, "peak_mib": _peak_rss_mib() - rss0,
            "variance": var}


# --------------------------------------------------------------------------- driver


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 8 * 2 ** 30


def _dense_estimate_bytes(n: int, itemsize: int) -> int:
    """Covariance + its Cholesky factor alive at once (cdist's output is reused in place)."""
    return 2 * (n * n) ** 2 * itemsize


def _run_config(cfg: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"worker failed: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(v, spec):
    return "—" if v is None else format(v, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only 32 and 64 px (smoke test)")
    ap.add_argument("--batch", type=int, default=64, help="samples per timed batch (default 64)")
    ap.add_argument("--repeats", type=int, default=5, help="timed batches per configuration (median)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads in every configuration (default: torch's default)")
    ap.add_argument("--timeout", type=float, default=480.0, help="seconds per configuration")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    avail = _available_bytes()
    budget = MEMORY_FRACTION * avail
    compared = [32, 64] if args.quick else [32, 64, 128]
    alone = [] if args.quick else [256, 1024]

    configs = []
    common = dict(repeats=args.repeats, threads=args.threads)
    for n in compared:
        dense_dtype = None
        for name, size in (("float64", 8), ("float32", 4)):
            if _dense_estimate_bytes(n, size) <= budget:
                dense_dtype = name
                break
        configs.append(dict(res=n, method="dense", dtype=dense_dtype, batch=args.batch, **common))
        configs.append(dict(res=n, method="ours", dtype="float32", batch=args.batch, **common))
    for n in alone:
        batch = min(args.batch, 16) if n >= 1024 else args.batch
        configs.append(dict(res=n, method="ours", dtype="float32", batch=batch, **common))
    if not args.quick:  # the non-separable kernel through circulant embedding, for reference
        for n in (128, 1024):
            batch = min(args.batch, 16) if n >= 1024 else args.batch
            configs.append(dict(res=n, method="ours-exp", dtype="float32", batch=batch, **common))

    print(f"# bench_noise: rbf l={LENGTH_SCALE}, eps={EPS}, {CHANNELS} channels; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {avail / 2**30:.1f} GiB available",
          file=sys.stderr)
    results = []
    t_start = time.perf_counter()
    for i, cfg in enumerate(configs, 1):
        label = f"{cfg['res']} px {cfg['method']} ({cfg['dtype'] or '-'})"
        print(f"[{i}/{len(configs)}] {label} ...", file=sys.stderr, end="", flush=True)
        if cfg["dtype"] is None:
            need = _dense_estimate_bytes(cfg["res"], 4) / 2 ** 30
            res = {"error": f"skipped (memory): needs ~{need:.1f} GiB even in float32, "
                            f"budget {budget / 2**30:.1f} GiB"}
        else:
            t0 = time.perf_counter()
            res = _run_config(cfg, args.timeout)
            print(f" {time.perf_counter() - t0:.1f} s", file=sys.stderr, end="")
        print("", file=sys.stderr, flush=True)
        results.append((cfg, res))
    print(f"# total {time.perf_counter() - t_start:.0f} s", file=sys.stderr)
    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load = "?"
    print(f"\nrbf l={LENGTH_SCALE}, eps={EPS}, {CHANNELS} channels (one sample = one {CHANNELS}-channel field); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average at the end {load}")

    dense_by_res = {cfg["res"]: r for cfg, r in results if cfg["method"] == "dense" and "error" not in r}
    print("| resolution | method | dtype | batch | set-up s | ms/sample | peak MiB | set-up ratio dense/ours "
          "| per-sample ratio dense/ours |")
    print("|---|---|---|---|---|---|---|---|---|")
    names = {"dense": "dense Cholesky (baseline)", "ours": "ours (separable eigh, rbf)",
             "ours-exp": "ours (circulant, exponential kernel)"}
    for cfg, r in results:
        row = [f"{cfg['res']}x{cfg['res']}", names[cfg["method"]], cfg["dtype"] or "—", str(cfg["batch"])]
        if "error" in r:
            row += [_fmt(r.get("setup_s"), ".3g"), r["error"], _fmt(r.get("peak_mib"), ".0f"), "—", "—"]
        else:
            ratio_setup = ratio_sample = None
            d = dense_by_res.get(cfg["res"])
            if cfg["method"] == "ours" and d is not None:
                ratio_setup = d["setup_s"] / max(r["setup_s"], 1e-9)
                ratio_sample = d["ms_per_sample"] / max(r["ms_per_sample"], 1e-9)
            row += [f"{r['setup_s']:.3g}", f"{r['ms_per_sample']:.3g}", f"{r['peak_mib']:.0f}",
                    _fmt(ratio_setup, ".0f") if ratio_setup is None or ratio_setup >= 10 else f"{ratio_setup:.2g}",
                    _fmt(ratio_sample, ".3g")]
        print("| " + " | ".join(row) + " |")
    bad = [(cfg, r) for cfg, r in results if "variance" in r and abs(r["variance"] - (1 + EPS ** 2)) > 0.2]
    for cfg, r in bad:
        print(f"warning: {cfg['res']} px {cfg['method']}: pooled variance {r['variance']:.3f}, "
              f"expected {1 + EPS ** 2:.4f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
