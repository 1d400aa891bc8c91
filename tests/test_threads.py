"""CPU threads from the allocation: config key > OMP_NUM_THREADS > SLURM_CPUS_PER_TASK > cores / local processes."""
import json
from pathlib import Path

import pytest

from model_code.threads import choose, local_processes

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("requested, env, expected", [
    (3, {"OMP_NUM_THREADS": "2", "SLURM_CPUS_PER_TASK": "4"}, (3, "config key train.threads")),
    (None, {"OMP_NUM_THREADS": "2", "SLURM_CPUS_PER_TASK": "4"}, (2, "OMP_NUM_THREADS")),
    (None, {"OMP_NUM_THREADS": "", "SLURM_CPUS_PER_TASK": "4"}, (4, "SLURM_CPUS_PER_TASK")),
    (None, {"OMP_NUM_THREADS": "zero"}, (16, "16 available cores / 1 process(es) on this node")),
    (None, {"LOCAL_WORLD_SIZE": "4"}, (4, "16 available cores / 4 process(es) on this node")),           # torchrun
    (None, {"SLURM_STEP_NUM_TASKS": "6", "SLURM_STEP_TASKS_PER_NODE": "3(x2)"}, (5, "16 available cores / "
                                                                                  "3 process(es) on this node")),
    (None, {"MPI_LOCALNRANKS": "32"}, (1, "16 available cores / 32 process(es) on this node")),            # never 0
    (None, {"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, (8, "16 available cores / 2 process(es) on this node")),  # Open MPI
    (None, {"PALS_LOCAL_SIZE": "8"}, (2, "16 available cores / 8 process(es) on this node")),            # Cray PALS
    (None, {"MV2_COMM_WORLD_LOCAL_SIZE": "4"}, (4, "16 available cores / 4 process(es) on this node")),   # MVAPICH
])
def test_thread_count_follows_the_allocation(requested, env, expected):
    assert choose(requested, env=env, cores=16) == expected


def test_a_batch_script_without_srun_is_one_process_per_node():
    assert local_processes({"SLURM_NTASKS": "4", "SLURM_TASKS_PER_NODE": "4"}) == 1
    assert local_processes({"SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_TASKS_PER_NODE": "2,1,1"}) == 2


TINY = ["--config", str(ROOT / "exps/json/ci.json"), "resolution=8", "grf_n_train=8", "grf_n_valid=4", "batch_size=4",
        "epochs=1", "record_interval=10", "Ntest=2", "val_batch_size=2", "L=2", "d_co_domain=4", "n_layers=1",
        "n_modes=2", "embedding_dim=4", "n_plot=1", "--quiet"]


def _provenance(run, monkeypatch, env, *extra) -> dict:
    """train.py's main in this process (a start costs no interpreter), with `env` set: its provenance entry."""
    import train

    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    assert train.main(["--savedir", str(run), *TINY, *extra]) == 0
    return json.loads((run / "provenance.json").read_text())[-1]


def _provenance_threads(run, monkeypatch, env, *extra):
    entry = _provenance(run, monkeypatch, env, *extra)
    return entry["threads"], entry["threads_from"]


def test_train_py_records_its_allocator_setting(tmp_path, monkeypatch):
    from model_code import allocator

    off = _provenance(tmp_path / "a", monkeypatch, {"OMP_NUM_THREADS": "1"}, "train.keep_freed_memory=false")
    assert off["malloc"] == "glibc default (train.keep_freed_memory=false)"
    # The key is a run setting: turning it on does not stop the run from resuming.
    on = _provenance(tmp_path / "a", monkeypatch, {"OMP_NUM_THREADS": "1", "MALLOC_TOP_PAD_": None})
    assert on["malloc"] == allocator.keep_freed_memory()["malloc"] != off["malloc"]


def test_train_py_records_the_thread_count_and_its_source_in_provenance(tmp_path, monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)         # what a fresh process on two cores starts with
        unset = {"OMP_NUM_THREADS": None}
        assert _provenance_threads(tmp_path / "a", monkeypatch, {**unset, "SLURM_CPUS_PER_TASK": "1"}) == \
            (1, "SLURM_CPUS_PER_TASK")
        assert _provenance_threads(tmp_path / "b", monkeypatch, {"OMP_NUM_THREADS": "1", "SLURM_CPUS_PER_TASK": "2"}) \
            == (1, "OMP_NUM_THREADS")
        # The config key wins, and changing it does not stop a run from resuming.
        assert _provenance_threads(tmp_path / "b", monkeypatch, {"OMP_NUM_THREADS": "1"}, "train.threads=2") == \
            (2, "config key train.threads")
        assert len(json.loads((tmp_path / "b" / "provenance.json").read_text())) == 2     # one entry per start
        # The published flat spelling of the key still works.
        assert _provenance_threads(tmp_path / "c", monkeypatch, {"OMP_NUM_THREADS": "1"}, "threads=1") == \
            (1, "config key train.threads")
    finally:
        torch.set_num_threads(before)


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
