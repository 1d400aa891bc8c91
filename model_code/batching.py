"""Generation batch size from the memory the device has free (eval.py --val_batch_size auto).

The samples do not depend on the batch size (one generator per sample), so the batch is only a
matter of speed and memory: the largest batch whose sampling fits in a fraction of the free
memory. The memory per sample is measured, not guessed: a short run of the same sampler (its
first two levels) at a probe batch, with CUDA's peak-allocation counter on a GPU and, on a CPU,
the peak of the live tensors created during the run (a dispatch mode that counts them).
"""
from __future__ import annotations

import weakref
from pathlib import Path
from typing import Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

PROBE_BATCH = 2
FRACTION = 0.5                 # of the free memory: room for the allocator's slack and everything else
# A CPU's throughput falls once a batch's tensors leave its caches (dpm_solver_2m, 120 px UNO, one
# thread: 0.26 / 0.25 / 0.22 / 0.20 samples/s at batch 1 / 2 / 4 / 8), so there a batch also stays
# under this much live tensor memory; small grids still batch (per-call overheads dominate there).
CPU_BATCH_BYTES = 64 * 2 ** 20


def available_bytes(device) -> Optional[int]:
    """Free memory of `device` in bytes: CUDA's free memory, or the host's MemAvailable (Linux)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _probe_options(options: dict) -> Optional[dict]:
    """The sampler's options cut to its first two levels (same network, same shapes), or None."""
    if "sigmas" in options:
        return {**options, "sigmas": options["sigmas"][:2], **({"T": 1} if "T" in options else {})}
    if "n_steps" in options:
        return {**options, "n_steps": 2}
    return None


class _PeakTensorBytes(TorchDispatchMode):
    """Peak bytes of the tensors created inside the mode and still alive (storages counted once,
    freed when their storage object is collected). Exact for CPU tensors, whatever the allocator
    keeps cached: a resident-set high-water mark misses memory a warm allocator reuses."""

    def __init__(self):
        super().__init__()
        self.live, self.current, self.peak = {}, 0, 0

    def _free(self, key) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key in self.live or not storage.nbytes():
                    continue
                self.live[key] = storage.nbytes()
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
                weakref.finalize(storage, self._free, key)
        return out


def bytes_per_sample(run, shape, options: dict, device) -> Optional[float]:
    """Peak memory one sample adds while sampling with `options` (bytes), or None where it can't be measured."""
    from .processes.base import sample_in_batches

    probe = _probe_options(options)
    if probe is None:
        return None
    device = torch.device(device)
    seeds = list(range(PROBE_BATCH))

    def sample():
        sample_in_batches(run.process, run.model, seeds, shape, device, PROBE_BATCH, **probe)

    if device.type == "cuda":
        sample()                               # one-time allocations (cuFFT plans, workspaces)
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        sample()
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        counter = _PeakTensorBytes()
        with counter:
            sample()
        peak = counter.peak
    return peak / PROBE_BATCH


def auto_batch_size(run, shape, options: dict, n: int, device, fallback: int) -> tuple:
    """(batch size, how it was chosen): the largest batch <= n whose sampling fits in FRACTION of the free memory."""
    free, per_sample = available_bytes(device), bytes_per_sample(run, shape, options, device)
    if free is None or per_sample is None:
        return min(n, fallback), {"batch_size": min(n, fallback), "rule": "the run's eval.batch_size (memory could "
                                                                      "not be measured here)"}
    batch = max(1, min(n, int(FRACTION * free // per_sample)))
    rule = f"{FRACTION:g} x free memory / measured peak per sample"
    if torch.device(device).type == "cpu" and batch * per_sample > CPU_BATCH_BYTES:
        batch = max(1, int(CPU_BATCH_BYTES // per_sample))
        rule = f"CPU: at most {CPU_BATCH_BYTES // 2 ** 20} MiB of live tensors per batch / measured peak per sample"
    return batch, {"batch_size": batch, "rule": rule, "free_mib": free / 2 ** 20,
                   "peak_mib_per_sample": per_sample / 2 ** 20}
