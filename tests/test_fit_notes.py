"""train.py says after its first steps, in one line, when the run took most of the memory that was free at
its start (a GPU-sized config on a CPU was killed beside another job without a word before)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model_code import memory
from systems import train_args

ROOT = Path(__file__).resolve().parents[1]


def test_the_note_is_given_above_the_share_and_only_then():
    gb = 10 ** 9
    assert memory.tight_memory_note(int(0.8 * 10 * gb), 10 * gb, "cpu") is None
    note = memory.tight_memory_note(9 * gb, 10 * gb, "cpu")
    assert note.startswith("this run holds 9.0 GB after its first steps, 90% of the 10.0 GB this machine had "
                           "free at its start: beside another job it may be killed for memory")
    assert "cuda:0 had free" in memory.tight_memory_note(9 * gb, 10 * gb, "cuda:0")
    # Unknown on either side: no verdict.
    assert memory.tight_memory_note(None, 10 * gb, "cpu") is None
    assert memory.tight_memory_note(9 * gb, None, "cpu") is None


def test_the_peak_counts_an_allocation_this_process_touched():
    before = memory.peak_bytes("cpu")
    block = torch.ones(64 * 2 ** 20 // 4 * 4)          # 256 MiB touched: the resident peak must grow past it
    after = memory.peak_bytes("cpu")
    del block
    assert after >= before and after >= 256 * 2 ** 20


# A run whose machine had (as far as the check knows) FREE bytes free at its start.
RUNNER = ("import runpy, sys; import model_code.memory as m; free = int(sys.argv[1]); "
          "m.available_bytes = lambda *a, **k: free; sys.argv = sys.argv[2:]; runpy.run_path('train.py', "
          "run_name='__main__')")


@pytest.mark.parametrize("free, noted", [(2 * 10 ** 6, True), (10 ** 13, False)], ids=["2MB-free", "10TB-free"])
def test_training_notes_a_run_that_took_most_of_the_free_memory(tmp_path, free, noted):
    args = train_args("interpolant_grf", tmp_path / "run", "train.threads=1")
    done = subprocess.run([sys.executable, "-c", RUNNER, str(free), "train.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "after its first steps" in line]
    assert len(lines) == (1 if noted else 0), done.stderr
    if noted:
        assert lines[0].startswith("note: this run holds ") and "of the 2.0 MB this machine had free" in lines[0]
