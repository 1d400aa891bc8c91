"""The launchers on a real Slurm controller (scripts/local_slurm.sh starts one on this machine):
every system of tests/systems.py as a job, an evaluation job, USR1 + requeue + exact resume,
and a job of two tasks.

CI (.ci/run sets REQUIRE_SLURM_TESTS=1) runs these as root: the fixture installs and
starts the local cluster when no controller answers, and stops only what it started.
Elsewhere, without root or Slurm, they are skipped with the reason.
"""
import json
import math
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

from model_code import checkpoint, config
from systems import SYSTEMS, method

ROOT = Path(__file__).resolve().parents[1]
NAMES = sorted(SYSTEMS)
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


def job_env(savedir, **extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env.update(SAVEDIR=str(savedir), PYTHON=sys.executable, OMP_NUM_THREADS="1", **extra)
    return env


def submit(args, savedir, logs, **env) -> str:
    # --gres=none: this node has no GPUs and the launchers' header asks for one.
    out = subprocess.run(["sbatch", "--parsable", "--gres=none", "-o", str(logs / "slurm-%j.out"), *args],
                         cwd=ROOT, env=job_env(savedir, **env), capture_output=True, text=True, check=True)
    return out.stdout.strip().split(";")[0]


def job(job_id) -> dict:
    text = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


def wait_for(job_id, states, timeout=300, fail=True) -> dict:
    """The job's record once it is in one of `states`; a job that ended otherwise (or the timeout)
    raises, or with fail=False returns the record as it is then (a module fixture's jobs are judged
    one by one by the tests)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = job(job_id)
        if info.get("JobState") in states:
            return info
        if info.get("JobState") in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "DEADLINE"):
            break
        time.sleep(0.5)
    if not fail:
        return job(job_id)
    raise AssertionError(f"job {job_id} is {job(job_id).get('JobState')}, waited for {states}")


def _node_state() -> str:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True).stdout.split()
    return out[0] if out else ""


def log(logs, job_id) -> str:
    path = logs / f"slurm-{job_id}.out"
    return path.read_text() if path.exists() else ""


def results(run):
    return [json.loads(line) for line in (run / "results.json").read_text().splitlines()]


# Per job: 1 core (threads=1, every run reproducible) and little memory, so that all the jobs of
# the module run side by side on the small node; the launcher's header asks for more.
RESOURCES = ["--cpus-per-task=1", "--mem=2G"]


def expected_units(cfg) -> list:
    """The units (epochs or steps) that get a results.json line: every log or record interval and the last."""
    t = cfg.train
    length = t.epochs if t.epochs is not None else t.steps
    return [u for u in range(1, length + 1) if u % t.log_interval == 0 or u % t.record_interval == 0 or u == length]


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory, volcano_dir):
    """Every system of tests/systems.py as `sbatch launch_exp.sh sbgm NAME <its config files> <overrides>`,
    all submitted at once, and a launch_eval.sh job after the VE run."""
    base = tmp_path_factory.mktemp("slurm")
    savedir, logs = base / "results", base / "logs"
    logs.mkdir()
    jobs = {}
    for name in NAMES:
        files, overrides = SYSTEMS[name]
        jobs[name] = submit([*RESOURCES, "exps/launch_exp.sh", method(name), name, *files, *overrides, "--quiet"],
                            savedir, logs, DATA_DIR=str(volcano_dir))
    evaluate = submit([*RESOURCES, f"--dependency=afterok:{jobs['ve_volcano']}", "exps/launch_eval.sh", "sbgm",
                       f"ve_volcano/{jobs['ve_volcano']}", "--mode=generate", "--Ntest=8", "--quiet"], savedir, logs,
                      DATA_DIR=str(volcano_dir))
    superres = submit([*RESOURCES, f"--dependency=afterok:{jobs['gano_grf']}", "exps/launch_eval.sh", "gano",
                       f"gano_grf/{jobs['gano_grf']}", "--mode=superres", "--factor=2", "--Ntest=8", "--quiet"],
                      savedir, logs)
    states = {name: wait_for(job_id, ("COMPLETED",), timeout=600, fail=False) for name, job_id in jobs.items()}
    states["eval"] = wait_for(evaluate, ("COMPLETED",), timeout=300, fail=False)
    states["superres"] = wait_for(superres, ("COMPLETED",), timeout=300, fail=False)
    return {"savedir": savedir, "logs": logs, "jobs": {**jobs, "eval": evaluate, "superres": superres},
            "states": states}


@pytest.mark.parametrize("system", NAMES)
def test_every_system_trains_as_a_slurm_job(runs, system):
    job_id = runs["jobs"][system]
    text = log(runs["logs"], job_id)
    info = runs["states"][system]
    assert info.get("JobState") == "COMPLETED" and info["ExitCode"] == "0:0", text[-3000:]
    run = runs["savedir"] / system / job_id
    assert f"run folder: {run}" in text and f"done: {run}" in text
    files, overrides = SYSTEMS[system]
    cfg = config.load([ROOT / f for f in files], overrides)
    assert json.loads((run / "config.json").read_text()) == config.to_dict(cfg)
    unit = "epoch" if cfg.train.epochs is not None else "step"
    lines = results(run)
    assert [r[unit] for r in lines] == expected_units(cfg)
    assert all(math.isfinite(r["loss"]) for r in lines if "loss" in r)
    assert checkpoint.load(run / "model.pt")["step"] == lines[-1]["step"]
    # The job ran a copy of the code, config files included.
    for name in ("provenance.json", "git_commit.txt", "code/train.py", "code/model_code/trainer.py",
                 *(f"code/{f}" for f in files)):
        assert (run / name).exists(), name
    assert not (run / "writer.lock").exists()


EVAL = "eval/generate-w_total-annealed_langevin-T1"      # eval.py's folder for the VE run's sampler settings


def test_an_evaluation_job_after_the_ve_run(runs):
    info = runs["states"]["eval"]
    assert info.get("JobState") == "COMPLETED" and info["ExitCode"] == "0:0", log(runs["logs"], runs["jobs"]["eval"])
    run = runs["savedir"] / "ve_volcano" / runs["jobs"]["ve_volcano"]
    for name in ("model.w_total.pt", "samples/3.png", f"{EVAL}/metrics.json", f"{EVAL}/samples.npz"):
        assert (run / name).exists(), name
    metrics = json.loads((run / EVAL / "metrics.json").read_text())["metrics"]
    assert metrics["n_nonfinite"] == 0 and metrics["w_total"] > 0


def test_a_gano_superresolution_job_after_the_gano_run(runs):
    """`launch_eval.sh gano RUN --mode=superres --factor=2`: one generator evaluation per sample on a twice finer grid."""
    info = runs["states"]["superres"]
    assert info.get("JobState") == "COMPLETED" and info["ExitCode"] == "0:0", \
        log(runs["logs"], runs["jobs"]["superres"])
    run = runs["savedir"] / "gano_grf" / runs["jobs"]["gano_grf"]
    (folder,) = (run / "eval").glob("superres-*")
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["nfe"] == 1 and summary["resolution"] == [16, 16]
    assert summary["metrics"]["n_nonfinite"] == 0


CI = ["exps/json/ci.json", "resolution=8", "grf_n_train=32", "grf_n_valid=16", "L=6", "Ntest=8", "val_batch_size=8"]


def test_usr1_checkpoints_requeues_and_the_job_resumes_exactly(cluster, tmp_path):
    savedir, logs = tmp_path / "results", tmp_path / "logs"
    logs.mkdir()
    extra = ["epochs=30", "record_interval=100", "--quiet"]
    job_id = submit([*RESOURCES, "exps/launch_exp.sh", "sbgm", "pre", *CI, *extra], savedir, logs)
    run = savedir / "pre" / job_id
    deadline = time.time() + 240
    while time.time() < deadline and not ((run / "results.json").exists() and len(results(run)) >= 2):
        time.sleep(0.1)
    assert (run / "results.json").exists(), log(logs, job_id)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
    # The job writes model.pt, exits 3 and requeues itself; Slurm then holds it ~2 minutes.
    info = wait_for(job_id, ("PENDING",), timeout=120)
    assert int(info.get("Restarts", "0")) == 1
    stopped = checkpoint.load(run / "model.pt")
    assert 0 < stopped["unit"] < 30
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
    assert "requeued" in text and f"resuming {run} at step {stopped['step']}" in text
    assert f"took over the lock of {run} from train.py, pid {gone.pid}" in text
    assert not (run / "writer.lock").exists()
    assert [r["epoch"] for r in results(run)] == list(range(1, 31))          # each epoch once
    assert len(json.loads((run / "provenance.json").read_text())) == 2     # one entry per start

    # The same configuration without interruption ends with the same weights (CPU, deterministic).
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "train.py", "--cfg", CI[0], "--savedir", str(reference), *CI[1:], *extra],
                   cwd=ROOT, env=job_env(savedir), check=True, capture_output=True)
    a = checkpoint.load(reference / "model.pt")
    b = checkpoint.load(run / "model.pt")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for name in a["ema"]["shadow"]:
        assert torch.equal(a["ema"]["shadow"][name], b["ema"]["shadow"][name]), name
    assert [r["loss"] for r in results(reference)] == [r["loss"] for r in results(run)]


def test_two_tasks_through_sbatch_train_like_one_process(runs, tmp_path):
    system = "interpolant_grf"
    files, overrides = SYSTEMS[system]
    savedir, logs = tmp_path / "results", tmp_path / "logs"
    logs.mkdir()
    job_id = submit([*RESOURCES, "--ntasks=2", "exps/launch_exp.sh", "sbgm", "two", *files, *overrides, "--quiet"],
                    savedir, logs)
    info = wait_for(job_id, ("COMPLETED",), timeout=300)
    text = log(logs, job_id)
    assert info["ExitCode"] == "0:0", text
    assert "starting 2 processes with srun" in text and "2 processes)" in text
    assert text.count("done:") == 1                                      # rank 0 alone prints
    one, two = results(runs["savedir"] / system / runs["jobs"][system]), results(savedir / "two" / job_id)
    assert [r["epoch"] for r in two] == [r["epoch"] for r in one]
    for a, b in zip(one, two):
        for key, value in a.items():
            if key not in ("time", "eval_time") and isinstance(value, float) and not key.startswith("floor"):
                assert b[key] == pytest.approx(value, rel=1e-4, abs=1e-7), key
