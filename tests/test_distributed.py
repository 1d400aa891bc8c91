"""Multi-process training: torchrun and srun environments, sharding, N processes == 1 process."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model_code import checkpoint
from model_code.distributed import Context, first_host, launch_environment

ROOT = Path(__file__).resolve().parents[1]
# 22 training fields in batches of 4: the last batch holds 2, so with 3 ranks one shard is empty.
TINY = ["dataset=grf", "resolution=8", "npad=0", "grf_n_train=22", "grf_n_valid=7", "batch_size=4", "epochs=3",
        "record_interval=3", "Ntest=5", "val_batch_size=4", "L=4", "T=1", "arch=fno", "d_co_domain=8",
        "n_layers=2", "n_modes=3", "embedding_dim=8", "n_plot=2", "tensorboard=false", "lr=0.01"]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def rows(run):
    return [json.loads(line) for line in (run / "results.json").read_text().splitlines()]


def test_shards_partition_every_batch_size():
    for world in (1, 2, 3, 5):
        for n in (0, 1, 2, 7, 22):
            parts = [Context(rank=r, world_size=world).shard(n) for r in range(world)]
            covered = [i for p in parts for i in range(n)[p]]
            assert covered == list(range(n))
            sizes = [p.stop - p.start for p in parts]
            assert max(sizes) - min(sizes) <= 1


def test_launch_environment_reads_torchrun_and_srun_but_not_a_plain_batch_script():
    torchrun = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "123"}
    assert launch_environment(torchrun) == {"rank": 1, "world_size": 4, "local_rank": 1, "master_addr": "h",
                                            "master_port": "123"}
    srun = {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "77",
            "SLURM_STEP_NODELIST": "gpu[03-04]", "SLURM_NTASKS": "4"}
    got = launch_environment(srun)
    assert got["rank"] == 3 and got["world_size"] == 4 and got["local_rank"] == 1
    assert got["master_addr"] == "gpu03" and got["master_port"] == str(15000 + 77)
    # A batch script under --ntasks=2 that runs python itself is one process.
    assert launch_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "5"}) is None
    assert launch_environment({"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert launch_environment({}) is None


@pytest.mark.parametrize("nodes, first", [("node1", "node1"), ("a[1-3],b2", "a1"), ("gpu[07,09]", "gpu07"),
                                          ("x-y[10-12]", "x-y10")])
def test_first_host_of_a_slurm_node_list(nodes, first):
    assert first_host(nodes) == first


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    """The single-process reference run."""
    run = tmp_path_factory.mktemp("reference") / "one"
    subprocess.run([sys.executable, "train.py", "--savedir", str(run), "--quiet", *TINY], cwd=ROOT,
                   env=clean_env(), check=True, capture_output=True)
    return run


@pytest.mark.slow
def test_three_torchrun_processes_train_like_one(tmp_path, one):
    """Same global batch -> the same losses, validation metrics and weights (float tolerance)."""
    three = tmp_path / "three"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3",
                           "train.py", "--savedir", str(three), "--quiet", *TINY], cwd=ROOT, env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(3 processes)" in proc.stdout and proc.stdout.count("done:") == 1   # rank 0 alone prints
    a, b = rows(one), rows(three)
    assert [r["epoch"] for r in b] == [1, 2, 3]
    assert a[0]["loss"] != a[-1]["loss"]              # the weights moved, so the comparison means something
    for ra, rb in zip(a, b):
        for key in ("loss", "loss_valid"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5)
    for key in ("w_var", "w_skew", "mean_l2"):
        assert b[-1][key] == pytest.approx(a[-1][key], rel=1e-4)
    wa = checkpoint.load(one / "model.pt")["model"]
    wb = checkpoint.load(three / "model.pt")["model"]
    for name in wa:
        assert torch.allclose(wa[name], wb[name], rtol=1e-4, atol=1e-6), name
    assert len(json.loads((three / "provenance.json").read_text())) == 1     # written once, by rank 0


def _spawn_srun_like(run, world, job_id, extra=()):
    """What srun gives each task: SLURM_PROCID / SLURM_STEP_NUM_TASKS / SLURM_LOCALID / node list."""
    procs = []
    for rank in range(world):
        env = clean_env(SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_STEP_NUM_TASKS=str(world),
                        SLURM_NTASKS=str(world), SLURM_JOB_ID=str(job_id), SLURM_STEP_NODELIST="localhost")
        procs.append(subprocess.Popen([sys.executable, "train.py", "--savedir", str(run), "--quiet", *TINY,
                                       *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


@pytest.mark.slow
def test_slurm_environment_of_two_tasks_trains_like_one_process(tmp_path, one):
    two = tmp_path / "two"
    procs = _spawn_srun_like(two, 2, job_id=os.getpid() % 10000 + 1)
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert "(2 processes)" in outs[0][0] and outs[1][0] == ""
    for ra, rb in zip(rows(one), rows(two)):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
        assert rb["loss_valid"] == pytest.approx(ra["loss_valid"], rel=1e-5)


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_with_one_checkpoint_and_resumes(tmp_path):
    run = tmp_path / "run"
    extra = ["epochs=30", "record_interval=1000"]
    procs = _spawn_srun_like(run, 2, job_id=os.getpid() % 10000 + 2, extra=extra)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "results.json").exists():
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGUSR1)          # rank 1 only: the stop is agreed at the next step
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [3, 3], outs[0][1][-1500:]
    state = checkpoint.load(run / "model.pt")
    assert 0 < state["step"] < 30 * 6
    procs = _spawn_srun_like(run, 2, job_id=os.getpid() % 10000 + 3, extra=extra)     # the same command
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-1500:]
    assert "resuming" in outs[0][1] and "resuming" not in outs[1][1]
    assert [r["epoch"] for r in rows(run)] == list(range(1, 31))          # each epoch once
