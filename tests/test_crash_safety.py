"""kill -9 at random moments (and inside checkpoint writes), full disks, unwritable run folders."""
import errno
import io
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model_code import build, checkpoint, config
from model_code.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["dataset=grf", "resolution=8", "npad=0", "grf_n_train=24", "grf_n_valid=8", "batch_size=4", "epochs=10",
        "record_interval=3", "Ntest=4", "val_batch_size=4", "L=4", "T=1", "arch=fno", "d_co_domain=8",
        "n_layers=2", "n_modes=3", "embedding_dim=8", "n_plot=2", "tensorboard=false", "lr=0.01"]


def _train_in_child(savedir: str, slow_writes: bool) -> None:
    """Forked child: train.py's main, optionally with every torch.save split by a pause."""
    torch.set_num_threads(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    if slow_writes:
        real_save = torch.save
        marker = Path(savedir) / "WRITING"

        def save_in_two_halves(obj, f, *args, **kwargs):
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[:len(data) // 2])
            f.flush()
            marker.touch()              # the parent kills now: half a checkpoint is on disk
            time.sleep(0.3)
            f.write(data[len(data) // 2:])

        torch.save = save_in_two_halves
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    import train
    # Training, not start-up, takes most of the time, so kills land at every stage of a run.
    # threads=1: a forked child must not raise the thread count of the parent's OpenMP pool (it hangs).
    os._exit(train.main(["--savedir", savedir, "--quiet", *TINY, "epochs=25", "record_interval=10", "threads=1"]))


def start(savedir: Path, slow_writes=False):
    proc = multiprocessing.get_context("fork").Process(target=_train_in_child, args=(str(savedir), slow_writes))
    proc.start()
    return proc


def kill9(proc) -> None:
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
    proc.join()


@pytest.mark.slow
def test_kill_9_at_random_moments_and_inside_checkpoint_writes_never_breaks_resume(tmp_path):
    reference = tmp_path / "reference"
    began = time.time()
    proc = start(reference)
    proc.join(300)
    assert proc.exitcode == 0
    run_seconds = time.time() - began            # kill moments scale with this machine's speed

    run = tmp_path / "run"
    rng = random.Random(20261124)
    inside_writes = killed = trials = dead_locks = 0
    # Until 20 kills (6 inside writes) and a killed run left a checkpoint for the last start.
    while (killed < 20 or inside_writes < 6 or not (run / "model.pt").exists()) and trials < 80:
        during_write = trials % 3 == 0
        trials += 1
        fresh = not run.exists()
        proc = start(run, slow_writes=during_write)
        started = time.time()
        marker = run / "WRITING"
        if during_write:
            deadline = time.time() + 60
            while time.time() < deadline and proc.is_alive() and not marker.exists():
                time.sleep(0.005)
            inside_writes += marker.exists() and proc.is_alive()
        else:
            time.sleep(rng.uniform(0.1, 1.0) * run_seconds)
        killed += proc.is_alive()
        kill9(proc)
        assert proc.exitcode in (0, -signal.SIGKILL), f"a start failed on its own (exit {proc.exitcode})"
        marker.unlink(missing_ok=True)
        lock = run / "writer.lock"
        if lock.exists():                              # the killed writer's lock: the next start takes it over
            holder = json.loads(lock.read_text() or "{}")
            dead_locks += holder.get("pid") == proc.pid
        if (run / "model.pt").exists():                # whole, or the previous whole one
            state = checkpoint.load(run / "model.pt")
            assert state["format_version"] == checkpoint.FORMAT_VERSION
        if proc.exitcode == 0:                        # it finished before the kill: start over
            shutil.rmtree(run)
            # The reference may have run on a busier machine: aim the kills within a whole run's time.
            if fresh:
                run_seconds = min(run_seconds, time.time() - started)
    print(f"kill -9 trials: {trials}, killed alive: {killed}, inside writes: {inside_writes}, "
          f"locks of killed writers taken over: {dead_locks}, run {run_seconds:.1f} s")
    assert killed >= 20 and inside_writes >= 6, (killed, inside_writes, trials)
    assert dead_locks >= 10, dead_locks                # the lock never stopped a restart after kill -9
    assert (run / "model.pt").exists()                 # the last start resumes a killed run

    proc = start(run)                                  # the last start runs to the end
    proc.join(300)
    assert proc.exitcode == 0
    assert not list(run.glob(".*.tmp"))                # interrupted writes were cleaned up
    assert not (run / "writer.lock").exists()          # released by the run that finished
    rows = [json.loads(line) for line in (run / "results.json").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 26))
    a, b = checkpoint.load(reference / "model.pt"), checkpoint.load(run / "model.pt")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for name in a["ema"]["shadow"]:
        assert torch.equal(a["ema"]["shadow"][name], b["ema"]["shadow"][name]), name


def test_full_disk_during_a_checkpoint_write_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from model_code.trainer import CheckpointWriteFailed

    trainer = build.build_trainer(config.load(None, TINY + ["epochs=3", "record_interval=100"]), tmp_path, None,
                                  progress=False)
    real_save = torch.save
    calls = {"n": 0}

    def disk_fills_up(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:                            # the second model.pt (end of epoch 2)
            f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills_up)
    with pytest.raises(CheckpointWriteFailed, match="No space left on device.*previous model.pt is intact") as err:
        trainer.fit()
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    assert checkpoint.load(tmp_path / "model.pt")["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def _can_mount() -> bool:
    if os.geteuid() != 0:
        return False
    probe = Path("/tmp") / f"fsd-mount-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(probe)],
                        capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(probe)], check=True)
    probe.rmdir()
    return ok


def _run_train(savedir):
    return subprocess.run([sys.executable, "train.py", "--savedir", str(savedir), "--quiet", *TINY], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_run_folder_below_a_file_is_one_line_error(tmp_path):
    (tmp_path / "file").write_text("keep me\n")
    proc = _run_train(tmp_path / "file" / "run")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "is not writable" in proc.stderr
    assert (tmp_path / "file").read_text() == "keep me\n"


@pytest.mark.skipif(not _can_mount() and os.geteuid() == 0,
                    reason="root ignores permissions and this machine does not allow a read-only mount")
def test_unwritable_run_folder_is_one_line_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:          # root writes through permissions: a read-only filesystem stops it
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], check=True)
    else:
        folder.chmod(0o555)
    try:
        proc = _run_train(folder / "run")
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().count("\n") == 0 and "is not writable" in proc.stderr
        assert not any(folder.iterdir())
        proc = _run_train(folder)
        assert proc.returncode == 2 and "is not writable" in proc.stderr
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(folder)], check=False)
        else:
            folder.chmod(0o755)
