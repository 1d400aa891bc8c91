"""One writer per run folder: the lock file, its take-over rules, and every training entry point."""
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model_code import files, run_dir
from model_code.errors import UserError
from model_code.run_dir import LOCK_NAME, RunFolderBusy, WriterLock
from systems import SYSTEMS

ROOT = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _plant(folder: Path, **fields) -> dict:
    """A lock file as another process would have left it."""
    now = time.time()
    holder = {"owner": "train.py", "host": socket.gethostname(), "pid": _dead_pid(), "pid_start": "1",
              "job_id": "123456", "restart": 0, "since": now - 3600, "heartbeat": now, "token": "someone-else"}
    holder.update(fields)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps(holder))
    return holder


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "123456")
    with WriterLock(tmp_path, "train.py"):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["job_id"] == "123456"
        with pytest.raises(RunFolderBusy) as err:
            WriterLock(tmp_path, "train.py").acquire()
        message = str(err.value)
        assert isinstance(err.value, UserError) and "\n" not in message
        for part in (f"pid {os.getpid()}", f"on {socket.gethostname()}", "job 123456",
                     time.strftime("%Y-%m-%d", time.localtime(holder["since"]))):
            assert part in message, part
    assert not (tmp_path / LOCK_NAME).exists()            # released on exit


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over_with_a_warning(tmp_path, capsys):
    _plant(tmp_path)
    with WriterLock(tmp_path, "train.py") as lock:
        assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == lock.token
    assert "took over the lock" in capsys.readouterr().err


def test_a_reused_pid_is_not_mistaken_for_the_holder(tmp_path):
    # Our own parent is alive, but started at another time than the holder recorded.
    _plant(tmp_path, pid=os.getppid(), pid_start="1")
    with WriterLock(tmp_path, "train.py") as lock:
        assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == lock.token


def test_a_live_holder_on_this_host_is_refused(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = files.process_start(sleeper.pid)
        _plant(tmp_path, pid=sleeper.pid, pid_start=start, job_id=None)
        with pytest.raises(RunFolderBusy, match=f"pid {sleeper.pid}"):
            WriterLock(tmp_path, "train.py").acquire()
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == sleeper.pid    # untouched
    finally:
        sleeper.kill()
        sleeper.wait()


def test_another_hosts_lock_counts_by_its_heartbeat(tmp_path):
    _plant(tmp_path, host="some-other-node", pid=1, heartbeat=time.time())
    with pytest.raises(RunFolderBusy, match="some-other-node"):
        WriterLock(tmp_path, "train.py", stale_after=60).acquire()
    _plant(tmp_path, host="some-other-node", pid=1, heartbeat=time.time() - 120)
    with WriterLock(tmp_path, "train.py", stale_after=60) as lock:
        assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == lock.token


def test_a_torn_lock_file_is_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text('{"owner": "train.py", "ho')
    with WriterLock(tmp_path, "train.py") as lock:
        assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == lock.token


def test_the_heartbeat_is_refreshed_while_held(tmp_path):
    with WriterLock(tmp_path, "train.py", heartbeat=0.05):
        first = json.loads((tmp_path / LOCK_NAME).read_text())["heartbeat"]
        time.sleep(0.4)
        later = json.loads((tmp_path / LOCK_NAME).read_text())["heartbeat"]
    assert later > first


def test_a_requeued_job_waits_for_its_predecessor_then_takes_over(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    old = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    _plant(tmp_path, pid=old.pid, pid_start=files.process_start(old.pid), job_id="777", restart=0)
    began = time.time()
    with WriterLock(tmp_path, "train.py", predecessor_wait=30):
        waited = time.time() - began
    old.wait()
    assert 0.5 < waited < 30
    # A copy that is not a later restart of the same job is refused at once.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _plant(tmp_path, pid=other.pid, pid_start=files.process_start(other.pid), job_id="777", restart=1)
        with pytest.raises(RunFolderBusy):
            WriterLock(tmp_path, "train.py", predecessor_wait=30).acquire()
    finally:
        other.kill()
        other.wait()


def _contend(folder, results):
    try:
        lock = WriterLock(folder, "train.py").acquire()
        results.put("won")
        time.sleep(1.0)                       # hold it while the others decide
        lock.release()
    except RunFolderBusy:
        results.put("refused")


def test_of_several_processes_taking_over_a_dead_lock_exactly_one_wins(tmp_path):
    _plant(tmp_path)
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(tmp_path, results)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    outcome = sorted(results.get(timeout=5) for _ in procs)
    assert outcome == ["refused"] * 5 + ["won"]


def test_claim_removes_only_what_it_created_when_the_start_fails(tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(UserError):
        with run_dir.claim(existing, "train.py"):
            raise UserError("no data")
    assert existing.is_dir() and not any(existing.iterdir())
    fresh = tmp_path / "a" / "b" / "run"
    with pytest.raises(UserError):
        with run_dir.claim(fresh, "train.py"):
            raise UserError("no data")
    assert not (tmp_path / "a").exists()
    # Once the run has written something, a failure keeps the folder.
    with pytest.raises(UserError):
        with run_dir.claim(fresh, "train.py"):
            (fresh / "model.pt").write_text("x")
            raise UserError("diverged")
    assert (fresh / "model.pt").exists() and not (fresh / LOCK_NAME).exists()


# ------------------------------------------------------------------ train.py
def _long(system: str) -> list:
    """train.py's arguments for a run of `system` (tests/systems.py) that lasts until it is killed."""
    files, overrides = SYSTEMS[system]
    unit = ["epochs=100000"] if system == "ve_volcano" else ["train.steps=1000000"]
    return ["train.py", "--config", *files, *overrides, *unit, "--savedir"]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and p.name != LOCK_NAME and not p.name.endswith(".tmp")}


@pytest.mark.slow
@pytest.mark.parametrize("system", ["ve_volcano", "toy"])        # an epoch-counted and a step-counted run
def test_a_second_train_py_on_the_same_folder_stops_at_once_and_writes_nothing(system, tmp_path, volcano_dir):
    run, log_name = tmp_path / "run", "results.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DATA_DIR": str(volcano_dir), "SLURM_JOB_ID": "123456"}
    cmd = [sys.executable, *_long(system), str(run), "--quiet"]
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not ((run / log_name).exists() and (run / log_name).read_text()):
            assert first.poll() is None, first.communicate()[1][-2000:]
            time.sleep(0.2)
        before = _snapshot(run)
        began = time.time()
        second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
        for part in ("is in use by", f"pid {first.pid}", socket.gethostname(), "job 123456", "since"):
            assert part in lines[0], (part, lines[0])
        assert time.time() - began < 60
        first.send_signal(signal.SIGSTOP)            # freeze the holder: what changes now is the second's doing
        frozen = _snapshot(run)
        second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert _snapshot(run) == frozen
        assert set(before) <= set(frozen)
        first.send_signal(signal.SIGCONT)
    finally:
        first.kill()
        first.wait()


def test_a_first_start_without_data_leaves_no_run_folder(tmp_path):
    run = tmp_path / "results" / "demo" / "1"
    proc = subprocess.run([sys.executable, "train.py", "--cfg", "exps/json/quickstart.json", "--savedir", str(run)],
                          cwd=ROOT, env={**os.environ, "DATA_DIR": str(tmp_path / "no-data")}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("run_local", ["1", "0"])
def test_a_failed_first_start_through_main_sh_leaves_no_run_folder(run_local, tmp_path):
    """exps/main.sh, in place (RUN_LOCAL=1) and with its code copy: nothing is left of a start without data."""
    env = {**os.environ, "RUN_LOCAL": run_local, "SAVEDIR": str(tmp_path / "results"), "PYTHON": sys.executable,
           "DATA_DIR": str(tmp_path / "no-data"), "NO_VENV_ACTIVATE": "1", "SLURM_JOB_ID": "42"}
    proc = subprocess.run(["bash", "exps/main.sh", "sbgm", "nodata", "json/quickstart.json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "does not exist" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "results" / "nodata" / "42").exists()
