"""The launchers on a real Slurm controller (scripts/local_slurm.sh starts one on this machine).

CI (.ci/run sets REQUIRE_SLURM_TESTS=1) runs these as root: the fixture installs and
starts the local cluster when no controller answers, and stops only what it started.
Elsewhere, without root or Slurm, they are skipped with the reason.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model_code import checkpoint

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _controller_answers() -> bool:
    return shutil.which("scontrol") is not None and subprocess.run(
        ["scontrol", "ping"], capture_output=True, text=True).stdout.count("UP") > 0


@pytest.fixture(scope="module")
def cluster():
    started = False
    if not _controller_answers():
        why = None
        if os.geteuid() != 0:
            why = "no Slurm controller answers and starting the local one needs root"
        elif shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
            why = "no Slurm controller answers and Slurm cannot be installed here (no apt-get)"
        if why is not None:
            if os.environ.get("REQUIRE_SLURM_TESTS") == "1":
                pytest.fail(why)
            pytest.skip(why)
        subprocess.run(["bash", str(ROOT / "scripts/local_slurm.sh"), "start"], check=True, timeout=300)
        started = True
    yield
    if started:
        subprocess.run(["bash", str(ROOT / "scripts/local_slurm.sh"), "stop"], check=False, timeout=120)


def job_env(savedir):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env.update(SAVEDIR=str(savedir), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    return env


def submit(args, savedir, logs) -> str:
    # --gres=none: this node has no GPUs and the launchers' header asks for one.
    out = subprocess.run(["sbatch", "--parsable", "--gres=none", "-o", str(logs / "slurm-%j.out"), *args],
                         cwd=ROOT, env=job_env(savedir), capture_output=True, text=True, check=True)
    return out.stdout.strip().split(";")[0]


def job(job_id) -> dict:
    text = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


def wait_for(job_id, states, timeout=300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = job(job_id)
        if info.get("JobState") in states:
            return info
        if info.get("JobState") in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            break
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} is {job(job_id).get('JobState')}, waited for {states}")


def _node_state() -> str:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True).stdout.split()
    return out[0] if out else ""


def log(logs, job_id) -> str:
    path = logs / f"slurm-{job_id}.out"
    return path.read_text() if path.exists() else ""


def results(run):
    return [json.loads(line) for line in (run / "results.json").read_text().splitlines()]


@pytest.fixture(scope="module")
def ci_run(cluster, tmp_path_factory):
    """sbatch launch_exp.sh sbgm ci json/ci.json, then a launch_eval.sh job after it."""
    base = tmp_path_factory.mktemp("slurm")
    savedir, logs = base / "results", base / "logs"
    logs.mkdir()
    train = submit(["exps/launch_exp.sh", "sbgm", "ci", "json/ci.json", "--quiet"], savedir, logs)
    evaluate = submit([f"--dependency=afterok:{train}", "exps/launch_eval.sh", "sbgm", f"ci/{train}",
                       "--mode=generate", "--Ntest=8", "--quiet"], savedir, logs)
    info = wait_for(train, ("COMPLETED",))
    assert info["ExitCode"] == "0:0", log(logs, train)
    info = wait_for(evaluate, ("COMPLETED",))
    assert info["ExitCode"] == "0:0", log(logs, evaluate)
    return {"run": savedir / "ci" / train, "logs": logs, "train": train, "eval": evaluate}


EVAL = "eval/generate-w_total-annealed_langevin-T1"      # eval.py's folder for json/ci.json's defaults


def test_ci_experiment_and_its_evaluation_run_as_slurm_jobs(ci_run):
    run = ci_run["run"]
    for name in ("config.json", "model.pt", "model.w_total.pt", "provenance.json", "git_commit.txt",
                 "code/train.py", "samples/4.png", f"{EVAL}/metrics.json", f"{EVAL}/samples.npz"):
        assert (run / name).exists(), name
    assert [r["epoch"] for r in results(run)] == [1, 2, 3, 4]
    metrics = json.loads((run / EVAL / "metrics.json").read_text())["metrics"]
    assert metrics["n_nonfinite"] == 0 and metrics["w_total"] > 0
    assert f"run folder: {run}" in log(ci_run["logs"], ci_run["train"])


def test_usr1_checkpoints_requeues_and_the_job_resumes_exactly(cluster, tmp_path):
    savedir, logs = tmp_path / "results", tmp_path / "logs"
    logs.mkdir()
    extra = ["epochs=16", "record_interval=100", "--quiet"]
    job_id = submit(["exps/launch_exp.sh", "sbgm", "pre", "json/ci.json", *extra], savedir, logs)
    run = savedir / "pre" / job_id
    deadline = time.time() + 240
    while time.time() < deadline and not ((run / "results.json").exists() and len(results(run)) >= 2):
        time.sleep(0.3)
    assert (run / "results.json").exists(), log(logs, job_id)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
    # The job writes model.pt, exits 3 and requeues itself; Slurm then holds it ~2 minutes.
    info = wait_for(job_id, ("PENDING",), timeout=120)
    assert int(info.get("Restarts", "0")) == 1
    stopped = checkpoint.load(run / "model.pt")
    assert 0 < stopped["epoch"] < 16
    # Release the hold only once the node has finished cleaning up the first run (slurmd
    # refuses to relaunch a job id it is still tearing down: "already killed").
    deadline = time.time() + 60
    while time.time() < deadline and _node_state() not in ("idle", "mix"):
        time.sleep(0.5)
    time.sleep(2)
    assert not (run / "writer.lock").exists()           # the stopped job released its folder
    # As if the first run had been killed before it could release it (kill -9, node failure).
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (run / "writer.lock").write_text(json.dumps({
        "owner": "train.py", "host": socket.gethostname(), "pid": gone.pid, "pid_start": "1", "job_id": job_id,
        "restart": 0, "since": time.time() - 60, "heartbeat": time.time(), "token": "first-run"}))
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True)
    info = wait_for(job_id, ("COMPLETED",), timeout=300)
    text = log(logs, job_id)
    assert info["ExitCode"] == "0:0", text
    assert "requeued" in text and f"resuming {run} after epoch {stopped['epoch']}" in text
    assert f"took over the lock of {run} from train.py, pid {gone.pid}" in text
    assert not (run / "writer.lock").exists()
    assert [r["epoch"] for r in results(run)] == list(range(1, 17))          # each epoch once
    assert len(json.loads((run / "provenance.json").read_text())) == 2     # one entry per start

    # The same configuration without interruption ends with the same weights (CPU, deterministic).
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "train.py", "--cfg", "exps/json/ci.json", "--savedir", str(reference),
                    *extra], cwd=ROOT, env=job_env(savedir), check=True, capture_output=True)
    a = checkpoint.load(reference / "model.pt")
    b = checkpoint.load(run / "model.pt")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for name in a["ema"]["shadow"]:
        assert torch.equal(a["ema"]["shadow"][name], b["ema"]["shadow"][name]), name
    assert [r["loss"] for r in results(reference)] == [r["loss"] for r in results(run)]


def test_two_tasks_through_sbatch_train_like_one_process(ci_run, tmp_path):
    savedir, logs = tmp_path / "results", tmp_path / "logs"
    logs.mkdir()
    job_id = submit(["--ntasks=2", "exps/launch_exp.sh", "sbgm", "two", "json/ci.json", "--quiet"], savedir, logs)
    info = wait_for(job_id, ("COMPLETED",), timeout=300)
    text = log(logs, job_id)
    assert info["ExitCode"] == "0:0", text
    assert "starting 2 processes with srun" in text and "(2 processes)" in text
    assert text.count("done:") == 1                                      # rank 0 alone prints
    one, two = results(ci_run["run"]), results(savedir / "two" / job_id)
    assert [r["epoch"] for r in two] == [1, 2, 3, 4]
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["loss_valid"] == pytest.approx(a["loss_valid"], rel=1e-5)
    assert two[-1]["w_total"] == pytest.approx(one[-1]["w_total"], rel=1e-3)
