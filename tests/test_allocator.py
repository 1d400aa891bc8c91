"""glibc keeps the memory a step frees (model_code/allocator.py), unless told otherwise or another allocator runs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_code import allocator

ROOT = Path(__file__).resolve().parents[1]

# Allocates and frees two 64 MiB tensors per round, as a training step allocates and frees its
# activations, and prints the minor page faults of each of the last 8 of 16 rounds (the first rounds grow
# the heap) and the pages the 8 rounds write, in this machine's page size.
ROUNDS = """
import json, resource, sys, torch
from model_code import allocator
done = allocator.keep_freed_memory(sys.argv[1] == "keep")
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
per_round = []
for _ in range(16):
    start = faults()
    x = torch.ones(16 * 2**20)
    y = x * 2
    del x, y
    per_round.append(faults() - start)
print(json.dumps({"done": done["malloc"], "rounds": per_round[-8:],
                  "pages": 8 * 2 * 64 * 2**20 // resource.getpagesize()}))
"""

needs_glibc = pytest.mark.skipif(allocator._glibc() is None, reason="the C library is not glibc")


def _rounds(choice: str, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in allocator._USER_SETTINGS and k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", ROUNDS, choice], capture_output=True, text=True, cwd=ROOT,
                          env={**clean, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **env}, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_glibc
def test_kept_memory_is_reused_without_faulting_pages_back_in():
    kept = _rounds("keep")
    assert kept["done"].startswith("glibc ") and "kept" in kept["done"]
    # With the memory kept the pages are already mapped. Usually no round faults; seen once: one 64 MiB
    # tensor of the last six rounds still landed on new heap (8 % of their pages).
    assert sum(kept["rounds"]) < 0.25 * kept["pages"], kept


@needs_glibc
@pytest.mark.parametrize("choice, env, said", [
    ("default", {}, "glibc default (train.keep_freed_memory=false)"),
    ("keep", {"MALLOC_TOP_PAD_": "131072"}, "left as set: the user's MALLOC_TOP_PAD_"),
])
def test_otherwise_every_round_faults_its_tensors_in_again(choice, env, said):
    """Without the setting (turned off, or the user's own malloc settings respected) glibc maps and
    unmaps every 64 MiB tensor, so each round faults its pages in again: the behaviour the setting removes."""
    left = _rounds(choice, **env)
    assert left["done"] == said
    # Every round faults; at least 2 x 32 times even where transparent huge pages map 2 MiB per fault
    # (with 4 KiB pages and no huge pages, this machine: every page, 32768 per round).
    assert min(left["rounds"]) >= 2 * 64 // 2, left


@pytest.mark.parametrize("env, reason", [
    ({}, None),
    ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, "jemalloc preloaded (LD_PRELOAD)"),
    ({"LD_PRELOAD": "libtcmalloc_minimal.so.4"}, "tcmalloc preloaded (LD_PRELOAD)"),
    ({"LD_PRELOAD": "libfoo.so"}, None),
    ({"MALLOC_MMAP_MAX_": "65536"}, "the user's MALLOC_MMAP_MAX_"),
    ({"MALLOC_TRIM_THRESHOLD_": "0"}, "the user's MALLOC_TRIM_THRESHOLD_"),
    ({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"}, "the user's GLIBC_TUNABLES"),
    ({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"}, None),
])
def test_the_users_own_allocator_settings_are_left_alone(env, reason):
    assert allocator.reason_to_leave(env) == reason
    if reason:
        assert allocator.keep_freed_memory(True, env=env) == {"malloc": f"left as set: {reason}"}
