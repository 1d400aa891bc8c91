"""CPU threads from the allocation: config key > OMP_NUM_THREADS > SLURM_CPUS_PER_TASK > cores / local processes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_code.threads import choose, local_processes

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("requested, env, expected", [
    (3, {"OMP_NUM_THREADS": "2", "SLURM_CPUS_PER_TASK": "4"}, (3, "config key threads")),
    (None, {"OMP_NUM_THREADS": "2", "SLURM_CPUS_PER_TASK": "4"}, (2, "OMP_NUM_THREADS")),
    (None, {"OMP_NUM_THREADS": "", "SLURM_CPUS_PER_TASK": "4"}, (4, "SLURM_CPUS_PER_TASK")),
    (None, {"OMP_NUM_THREADS": "zero"}, (16, "16 available cores / 1 process(es) on this node")),
    (None, {"LOCAL_WORLD_SIZE": "4"}, (4, "16 available cores / 4 process(es) on this node")),           # torchrun
    (None, {"SLURM_STEP_NUM_TASKS": "6", "SLURM_STEP_TASKS_PER_NODE": "3(x2)"}, (5, "16 available cores / "
                                                                                  "3 process(es) on this node")),
    (None, {"MPI_LOCALNRANKS": "32"}, (1, "16 available cores / 32 process(es) on this node")),            # never 0
])
def test_thread_count_follows_the_allocation(requested, env, expected):
    assert choose(requested, env=env, cores=16) == expected


def test_a_batch_script_without_srun_is_one_process_per_node():
    assert local_processes({"SLURM_NTASKS": "4", "SLURM_TASKS_PER_NODE": "4"}) == 1
    assert local_processes({"SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_TASKS_PER_NODE": "2,1,1"}) == 2


TINY = ["dataset=grf", "resolution=8", "npad=0", "grf_n_train=8", "grf_n_valid=4", "batch_size=4", "epochs=1",
        "record_interval=10", "Ntest=2", "val_batch_size=2", "L=2", "T=1", "arch=fno", "d_co_domain=4",
        "n_layers=1", "n_modes=2", "embedding_dim=4", "n_plot=1", "tensorboard=false", "--quiet"]


def _provenance_threads(run, env, *extra):
    env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    proc = subprocess.run([sys.executable, "train.py", "--savedir", str(run), *TINY, *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    entry = json.loads((run / "provenance.json").read_text())[-1]
    return entry["threads"], entry["threads_from"]


def test_train_py_records_the_thread_count_and_its_source_in_provenance(tmp_path):
    unset = {"OMP_NUM_THREADS": None}
    assert _provenance_threads(tmp_path / "a", {**unset, "SLURM_CPUS_PER_TASK": "1"}) == (1, "SLURM_CPUS_PER_TASK")
    assert _provenance_threads(tmp_path / "b", {"OMP_NUM_THREADS": "1", "SLURM_CPUS_PER_TASK": "2"}) == \
        (1, "OMP_NUM_THREADS")
    # The config key wins, and changing it does not stop a run from resuming.
    assert _provenance_threads(tmp_path / "b", {"OMP_NUM_THREADS": "1"}, "threads=2") == \
        (2, "config key threads")


def test_without_the_config_key_the_count_is_only_lowered(monkeypatch):
    import torch

    from model_code import threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        info = threads.apply()
        assert info["threads"] == 1 == torch.get_num_threads() and "only lowered" in info["threads_from"]
        assert threads.apply(2)["threads"] == 2 == torch.get_num_threads()      # the config key may raise it
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
        assert threads.apply() == {"threads": 1, "threads_from": "SLURM_CPUS_PER_TASK"}
    finally:
        torch.set_num_threads(before)
