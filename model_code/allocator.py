"""Keep the memory a training step frees inside the process, so the next step does not fault it back in.

glibc's malloc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
mmap and unmaps it again on free. A CPU training step allocates and frees activations of that
size many times per step (a (4, 128, 136, 136) float32 tensor is 38 MiB), so the kernel zeroes
and maps every page of them again at every step: the rbf-project UNO at 120 px, batch 4, took
about 10 M minor page faults and 30 % of its time in the kernel over a few steps, and its step
ran 1.16-1.49x faster with the memory kept (docs/benchmarks.md).

``keep_freed_memory()`` sets, through glibc's ``mallopt``, what ``MALLOC_MMAP_MAX_=0`` and a large
``MALLOC_TRIM_THRESHOLD_`` set at start-up: every allocation comes from the heap (no per-tensor
mmap) and the heap is never returned to the kernel, so a freed block is reused as it is. The
price is a resident size that stays at its peak plus fragmentation (+20 % on that UNO: 2.56
against 2.14 GB, steady from the second step). It changes nothing where it cannot or should
not act: not glibc (macOS, musl), another allocator preloaded (jemalloc, tcmalloc, mimalloc),
or the user's own malloc settings in the environment.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameter numbers from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# mallopt takes an int and glibc stores the threshold as a size_t, so -1 is the largest threshold
# (never trim). 2**31 - 1, the largest positive int, still returns a freed 2.5 GiB top of the heap.
NEVER_TRIM = -1

_USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def _glibc():
    """The process's C library if it is glibc (it has gnu_get_libc_version and mallopt), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        return libc
    except (OSError, AttributeError):
        return None


def reason_to_leave(env=None) -> str | None:
    """Why the allocator is left as it is (the user chose it), or None."""
    env = os.environ if env is None else env
    preload = env.get("LD_PRELOAD", "")
    for name in _OTHER_ALLOCATORS:
        if name in preload:
            return f"{name} preloaded (LD_PRELOAD)"
    for key in _USER_SETTINGS:
        if key in env:
            return f"the user's {key}"
    if "glibc.malloc" in env.get("GLIBC_TUNABLES", ""):
        return "the user's GLIBC_TUNABLES"
    return None


def keep_freed_memory(enabled: bool = True, env=None) -> dict:
    """Make glibc keep freed memory for reuse (see the module doc); {'malloc': what was done} for provenance."""
    if not enabled:
        return {"malloc": "glibc default (train.keep_freed_memory=false)"}
    reason = reason_to_leave(env)
    if reason:
        return {"malloc": f"left as set: {reason}"}
    libc = _glibc()
    if libc is None:
        return {"malloc": "left as it is: the C library is not glibc"}
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)):
        return {"malloc": "glibc default (mallopt refused the settings)"}
    version = libc.gnu_get_libc_version().decode()
    return {"malloc": f"glibc {version}: freed memory kept (M_MMAP_MAX=0, M_TRIM_THRESHOLD=SIZE_MAX)"}
