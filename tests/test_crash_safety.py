"""Full disks and unwritable run folders: one clear line, nothing half-written.

(kill -9 at any moment, inside checkpoint writes too, is in test_shared_behaviour.py, for every system.)
"""
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model_code import build, checkpoint, config
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
    from model_code.trainer import CheckpointWriteFailed

    trainer = build.build_trainer(config.load([CI], TINY), tmp_path, None, progress=False)
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
    saved = checkpoint.load(tmp_path / "model.pt")
    assert saved["unit"] == 1 and saved["step"] == trainer.s.steps_per_unit
    assert not list(tmp_path.glob("**/.*.tmp"))


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
    return subprocess.run([sys.executable, "train.py", "--config", str(CI), "--savedir", str(savedir), "--quiet",
                           *TINY], cwd=ROOT, capture_output=True, text=True, timeout=120)


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
