"""Full disks and unwritable run folders: one clear line, nothing half-written, and the same command resumes
once there is space again; results.json durable before the checkpoint it describes.

(kill -9 at any moment, inside checkpoint writes too, is in test_shared_behaviour.py, for every system.)
"""
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model_code import build, checkpoint, config, files
from model_code.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / "exps" / "json" / "ci.json"
TINY = ["resolution=8", "grf_n_train=24", "grf_n_valid=8", "batch_size=4", "epochs=3", "record_interval=100",
        "Ntest=4", "val_batch_size=4", "L=4", "T=1", "d_co_domain=8", "n_layers=2", "n_modes=3", "embedding_dim=8",
        "n_plot=2", "tensorboard=false", "lr=0.01"]


@pytest.fixture
def one_thread():
    """Training in this process: one thread, as train.py's runs in the other tests (and reproducible)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_full_disk_during_a_checkpoint_write_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch,
                                                                                          one_thread):
    """By injection (the real thing on a tmpfs is below): torch.save raises RuntimeError for a full disk."""
    trainer = build.build_trainer(config.load([CI], TINY), tmp_path, None, progress=False)
    real_save = torch.save
    calls = {"n": 0}

    def disk_fills_up(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:                            # the second model.pt (end of epoch 2)
            f.write(b"\0" * 1000)
            try:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills_up)
    with pytest.raises(files.DiskFull, match="model.pt: no space left on device.*previous model.pt is intact") as err:
        trainer.fit()
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    saved = checkpoint.load(tmp_path / "model.pt")
    assert saved["unit"] == 1 and saved["step"] == trainer.s.steps_per_unit
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_results_json_is_fsynced_before_every_checkpoint_it_describes(tmp_path, monkeypatch, one_thread):
    """After a power loss the log must not lag the checkpoint: every appended line is on disk before the next
    model*.pt is renamed into place."""
    from model_code import trainer as trainer_module

    events = []
    real_append, real_fsync, real_replace = files.append_line, os.fsync, os.replace
    monkeypatch.setattr(trainer_module.files, "append_line",
                        lambda path, line, **kw: (events.append(("append", Path(path).name)),
                                                  real_append(path, line, **kw))[1])

    def fsync(fd):
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(dst).name))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    build.build_trainer(config.load([CI], [*TINY, "record_interval=1"]), tmp_path, None, progress=False).fit()
    monkeypatch.undo()
    unsynced, checked = False, 0
    for kind, name in events:
        if (kind, name) == ("append", "results.json"):
            unsynced = True
        elif (kind, name) == ("fsync", "results.json"):
            unsynced = False
        elif kind == "replace" and name.startswith("model") and name.endswith(".pt"):
            assert not unsynced, f"{name} replaced while results.json had unsynced lines"
            checked += 1
    assert checked >= 6 and ("append", "results.json") in events


def test_results_json_writes_null_for_a_nan_and_stays_strict_json(tmp_path, one_thread):
    trainer = build.build_trainer(config.load([CI], TINY), tmp_path, None, progress=False)
    trainer.write_row({"epoch": 1, "step": 6, "loss": float("nan"), "w_total": float("inf"), "n_nonfinite": 16})

    def strict(token):
        raise ValueError(f"not JSON: {token}")

    (line,) = (tmp_path / "results.json").read_text().splitlines()
    assert json.loads(line, parse_constant=strict) == {"epoch": 1, "step": 6, "loss": None, "w_total": None,
                                                       "n_nonfinite": 16}


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


def _run_train(savedir, *extra):
    return subprocess.run([sys.executable, "train.py", "--config", str(CI), "--savedir", str(savedir), "--quiet",
                           *TINY, *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)


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


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MiB tmpfs of its own (CI runs as root); skipped where nothing can be mounted (the injection
    tests above and in test_files.py cover every writer there)."""
    if not _can_mount():
        pytest.skip("needs root and a tmpfs mount")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill the file system of `disk` up to `leave` free bytes."""
    filler = disk / "filler"
    st = os.statvfs(disk)
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def test_a_real_full_disk_during_training_and_evaluation_is_one_line_and_the_same_command_resumes(small_disk):
    run = small_disk / "run"
    wide = "d_co_domain=48"                                 # a model.pt of some MB, larger than the small files
    first = _run_train(run, "epochs=2", wide)
    assert first.returncode == 0, first.stderr
    size = (run / "model.pt").stat().st_size
    before = (run / "model.pt").read_bytes()
    filler = fill(small_disk, size - 16 * 1024)            # the small files fit, the next model.pt does not
    full = _run_train(run, "epochs=3", wide)
    assert full.returncode == 2, full.stderr
    errors = [line for line in full.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in full.stderr, full.stderr
    assert f"cannot write {run / 'model.pt'}: no space left on device" in errors[0]
    assert "previous model.pt is intact" in errors[0]
    assert (run / "model.pt").read_bytes() == before and not list(run.glob("**/.*.tmp*"))
    filler.unlink()
    again = _run_train(run, "epochs=3", wide)
    assert again.returncode == 0 and "resuming" in again.stderr, again.stderr
    assert checkpoint.load(run / "model.pt")["unit"] == 3
    assert [json.loads(line)["epoch"] for line in (run / "results.json").read_text().splitlines()] == [1, 2, 3]
    # an evaluation on the full disk: one line, nothing left in its folder; then the same command works
    evaluate = [sys.executable, "eval.py", "--exp_name", str(run), "--mode", "generate", "--Ntest", "4",
                "--quiet"]
    filler = fill(small_disk, 2 * 1024)
    proc = subprocess.run(evaluate, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("eval.py: error:")]
    assert "no space left on device" in error and str(run / "eval") in error
    assert not [p for p in (run / "eval").rglob("*") if p.is_file()]
    filler.unlink()
    proc = subprocess.run(evaluate, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
