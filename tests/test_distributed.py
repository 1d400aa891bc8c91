"""Multi-process training: torchrun and srun environments, sharding, N processes == 1 process.

The 2-process runs here start real processes (torchrun, or srun's environment) and compare them
with the 1-process runs of the `trained` fixture (conftest.py). test_shared_behaviour.py checks
the same for every system with forked children in torchrun's environment.
"""
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model_code import checkpoint
from model_code.distributed import Context, first_host, launch_environment
from helpers import assert_trains_like_one, rows
from systems import train_args

ROOT = Path(__file__).resolve().parents[1]


# Launcher variables of whatever started pytest (an sbatch job, an mpiexec) must not leak into the runs it starts.
LAUNCHER_PREFIXES = ("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_", "PMI_", "PMIX_", "OMPI_", "MV2_",
                     "PALS_", "MPI_LOCAL", "HYDRA_", "MPIEXEC_")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


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
    assert launch_environment(torchrun) == {"launcher": "torchrun", "rank": 1, "world_size": 4, "local_rank": 1,
                                            "master_addr": "h", "master_port": "123"}
    srun = {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "77",
            "SLURM_STEP_NODELIST": "gpu[03-04]", "SLURM_NTASKS": "4"}
    got = launch_environment(srun)
    assert got["launcher"] == "srun" and got["rank"] == 3 and got["world_size"] == 4 and got["local_rank"] == 1
    assert got["master_addr"] == "gpu03" and got["master_port"] == str(15000 + 77)
    # A batch script under --ntasks=2 that runs python itself is one process.
    assert launch_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "5"}) is None
    assert launch_environment({"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert launch_environment({}) is None


@pytest.mark.parametrize("nodes, first", [("node1", "node1"), ("a[1-3],b2", "a1"), ("gpu[07,09]", "gpu07"),
                                          ("x-y[10-12]", "x-y10")])
def test_first_host_of_a_slurm_node_list(nodes, first):
    assert first_host(nodes) == first


@pytest.mark.slow
def test_two_torchrun_processes_train_like_one(tmp_path, trained):
    """A real torchrun launch of the starter digits run: rank 0 alone prints, the run equals 1 process."""
    two = tmp_path / "two"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "train.py", *train_args("starter_digits", two, "train.threads=1")], cwd=ROOT,
                          env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done:") == 1 and "2 processes)" in proc.stdout, proc.stdout
    assert_trains_like_one(trained("starter_digits"), two)


def _free_job_id() -> int:
    """A job id whose srun port (15000 + id, distributed.launch_environment) is free now."""
    for _ in range(100):
        job_id = random.randrange(1, 20000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", 15000 + job_id))
            except OSError:
                continue
        return job_id
    raise RuntimeError("no free port")


def _spawn_srun_like(system, run, world, extra=(), data_dir=None):
    """What srun gives each task: SLURM_PROCID / SLURM_STEP_NUM_TASKS / SLURM_LOCALID / node list."""
    job_id = _free_job_id()
    procs = []
    for rank in range(world):
        env = clean_env(SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_STEP_NUM_TASKS=str(world),
                        SLURM_NTASKS=str(world), SLURM_JOB_ID=str(job_id), SLURM_STEP_NODELIST="localhost")
        if data_dir is not None:
            env["DATA_DIR"] = str(data_dir)
        procs.append(subprocess.Popen([sys.executable, "train.py", *train_args(system, run, *extra)], cwd=ROOT,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


@pytest.mark.slow
def test_slurm_environment_of_two_tasks_trains_like_one_process(tmp_path, trained):
    two = tmp_path / "two"
    procs = _spawn_srun_like("heat_digits", two, 2)
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert "(step 12, 2 processes)" in outs[0][0] and outs[1][0] == ""
    assert_trains_like_one(trained("heat_digits"), two)


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_with_one_checkpoint_and_resumes(tmp_path):
    run = tmp_path / "run"
    steps = 200
    # Plain score matching (the toy's cheapest step), so the stop lands in the middle of the run.
    extra = [f"train.steps={steps}", "train.log_interval=20", "train.record_interval=100000",
             "train.checkpoint_interval=100000", "objective.regularizer.kind=none"]
    procs = _spawn_srun_like("toy", run, 2, extra)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "results.json").exists() and procs[1].poll() is None:
        time.sleep(0.02)
    procs[1].send_signal(signal.SIGUSR1)          # rank 1 only: the stop is agreed at the next step
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [3, 3], outs[0][1][-1500:] + outs[1][1][-1500:]
    state = checkpoint.load(run / "model.pt")
    assert 0 < state["step"] < steps
    assert not (run / "writer.lock").exists()
    procs = _spawn_srun_like("toy", run, 2, extra)     # the same command
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-1500:] + outs[1][1][-1500:]
    assert f"resuming {run} at step {state['step']}" in outs[0][1] and "resuming" not in outs[1][1]
    assert [r["step"] for r in rows(run)] == list(range(20, steps + 1, 20))          # each line once
    assert checkpoint.load(run / "model.pt")["step"] == steps
