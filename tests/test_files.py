"""model_code/files.py, the writes every part goes through: temporaries named after their writer and swept
only when it is gone, the user's umask, a full disk as one line whatever writes, and JSON without NaN."""
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from model_code import checkpoint, files
from model_code.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

# A writer that stops in the middle of an atomic write until the file `go` appears.
SLOW_WRITER = """
import sys, time
from pathlib import Path
from model_code.files import atomic_write
target, go = Path(sys.argv[1]), Path(sys.argv[2])
def write(fh):
    fh.write(b"x" * 1000)
    fh.flush()
    print("writing", flush=True)
    while not go.exists():
        time.sleep(0.02)
    fh.write(b"y")
atomic_write(target, write)
print("done", flush=True)
"""


def start_slow_writer(target: Path, go: Path):
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target), str(go)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def temporaries(folder: Path) -> list:
    return sorted(p for p in folder.glob("**/.*.tmp*"))


# ------------------------------------------------------------------ item 1: whose temporary is it
def test_a_temporary_names_its_writer_and_is_swept_only_when_the_writer_is_gone(tmp_path):
    live, dead = tmp_path / "live.npz", tmp_path / "sub" / "dead.pt"
    dead.parent.mkdir()
    writer = start_slow_writer(live, tmp_path / "go")
    victim = start_slow_writer(dead, tmp_path / "never")
    victim.kill()
    victim.wait()
    (tmp, ), (stale, ) = temporaries(tmp_path / "sub"), [t for t in temporaries(tmp_path) if t.parent == tmp_path]
    assert f"~{writer.pid}~" in stale.name and f"~{victim.pid}~" in tmp.name
    assert socket.gethostname().replace("~", "-") in stale.name
    removed = files.sweep_temporaries(tmp_path)
    assert removed == [tmp] and stale.exists()
    (tmp_path / "go").touch()
    assert writer.wait(30) == 0 and writer.stdout.read().strip() == "done"
    assert live.read_bytes() == b"x" * 1000 + b"y" and not temporaries(tmp_path)


def test_another_hosts_temporary_is_swept_once_untouched_for_the_stale_time(tmp_path):
    fresh = tmp_path / ".a.npz~node7~123~456~ab12cd34.tmp"
    old = tmp_path / ".b.npz~node7~123~456~ab12cd35.tmp"
    unnamed = tmp_path / ".model.pt.k2j3h4.tmp"                  # tempfile.mkstemp's name, before writers had one
    staging = tmp_path / ".staging~node7~9~9~00000000.tmp"
    own = tmp_path / ".notes.tmpl"                               # not a temporary of the project's
    for path in (fresh, old, unnamed, own):
        path.write_bytes(b"1")
    staging.mkdir()
    (staging / "samples.npz").write_bytes(b"2")
    past = time.time() - files.STALE_SECONDS - 10
    for path in (old, unnamed, own, staging / "samples.npz", staging):
        os.utime(path, (past, past))
    assert sorted(files.sweep_temporaries(tmp_path)) == sorted([old, unnamed, staging])
    assert fresh.exists() and own.exists()
    # a staging folder whose writer still touches a file inside it stays
    staging.mkdir()
    (staging / "samples.npz").write_bytes(b"3")
    os.utime(staging, (past, past))
    assert files.sweep_temporaries(tmp_path) == [] and staging.is_dir()


def test_a_resuming_training_leaves_an_evaluation_writing_beside_it_alone(tmp_path, trained):
    """The requeued job's resume sweeps the run folder while eval.py is writing its samples.npz there."""
    import train
    from systems import train_args

    run = tmp_path / "run"
    shutil.copytree(trained("interpolant_grf"), run)
    evaluation = run / "eval" / "generate-latest"
    evaluation.mkdir(parents=True)
    writer = start_slow_writer(evaluation / "samples.npz", tmp_path / "go")
    crashed = start_slow_writer(run / "model.pt.copy", tmp_path / "never")
    crashed.kill()
    crashed.wait()
    torch.set_num_threads(1)
    assert train.main(train_args("interpolant_grf", run, "train.threads=1", "epochs=4")) == 0
    assert [t.parent for t in temporaries(run)] == [evaluation]          # the crashed writer's one went
    (tmp_path / "go").touch()
    assert writer.wait(30) == 0
    assert (evaluation / "samples.npz").stat().st_size == 1001


# ------------------------------------------------------------------ item 7: modes
def test_every_file_of_a_run_and_an_evaluation_gets_the_mode_of_the_users_umask(tmp_path):
    """Run in a child with a project group's umask (002: group-writable): a training (checkpoints, config.json, results.json, provenance.json,
    figures) and an evaluation (samples.npz, metrics.json)."""
    run, umask = tmp_path / "run", 0o002
    code = f"""
import os, sys
os.umask({umask})
sys.path[:0] = [{str(ROOT / 'tests')!r}, {str(ROOT)!r}]
import torch
torch.set_num_threads(1)
import train, eval as ev
from systems import train_args
assert train.main(train_args("interpolant_grf", {str(run)!r}, "train.threads=1", "epochs=2", "record_interval=2")) == 0
assert ev.main(["--exp_name", {str(run)!r}, "--mode", "generate", "--Ntest", "2", "--steps", "2", "--quiet"]) == 0
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    written = [p for p in run.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"model.pt", "config.json", "results.json", "provenance.json", "samples.npz", "metrics.json"} <= names
    assert any(p.suffix == ".png" for p in written)
    wrong = {str(p.relative_to(run)): oct(p.stat().st_mode & 0o777) for p in written
             if p.stat().st_mode & 0o777 != 0o666 & ~umask}
    assert not wrong, f"expected {oct(0o666 & ~umask)}"


def test_atomic_write_creates_with_the_umask_and_leaves_no_temporary_on_error(tmp_path):
    old = os.umask(0o027)
    try:
        files.atomic_write_text(tmp_path / "a.json", "{}")
        with pytest.raises(ZeroDivisionError):
            files.atomic_write(tmp_path / "a.json", lambda fh: 1 / 0)
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "a.json").read_text() == "{}" and not temporaries(tmp_path)


# ------------------------------------------------------------------ item 4: a full disk, by injection
class FullDisk:
    """Every file opened for writing through builtins.open / os.open holds at most `room` bytes more."""

    def __init__(self, monkeypatch, room: int):
        self.room = room
        real_open = open

        def limited_open(file, mode="r", *args, **kwargs):
            fh = real_open(file, mode, *args, **kwargs)
            return fh if set(mode) & set("wxa+") == set() else _Limited(fh, self)

        monkeypatch.setattr("builtins.open", limited_open)


class _Limited:
    def __init__(self, fh, disk):
        self._fh, self._disk = fh, disk

    def write(self, data):
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        if size > self._disk.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), getattr(self._fh, "name", None))
        self._disk.room -= size
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()
        return False

    def __iter__(self):
        return iter(self._fh)


def _figure(path):
    import matplotlib.pyplot as plt

    from model_code import plotting

    fig = plt.figure()
    plt.imshow(np.random.default_rng(0).random((64, 64)))
    plotting.save(fig, path.with_suffix(""), exts=("png",))


def _video(path):
    from model_code.video import write_mp4

    write_mp4((np.full((32, 32, 3), i, np.uint8) for i in range(8)), path)


WRITERS = {
    "checkpoint": ("model.pt", lambda p: checkpoint.atomic_save({"format_version": 2, "w": torch.randn(4096)}, p)),
    "json": ("metrics.json", lambda p: files.atomic_write_text(p, files.json_text({"x": list(range(3000))}))),
    "npz": ("samples.npz", lambda p: files.atomic_write(p, lambda fh: np.savez(fh, x=np.arange(4096.0)))),
    "figure": ("samples.png", _figure),
    "log line": ("results.json", lambda p: files.append_line(p, "y" * 5000)),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_full_disk_in_any_write_is_one_line_naming_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, kind):
    name, write = WRITERS[kind]
    path = tmp_path / name
    path.write_bytes(b"previous\n")
    FullDisk(monkeypatch, room=1000)
    with pytest.raises(files.DiskFull) as err:
        write(path)
    monkeypatch.undo()
    message = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in message
    assert str(path) in message and "no space left" in message
    assert path.read_bytes().startswith(b"previous\n") and not temporaries(tmp_path)


def test_torch_reports_a_full_disk_as_a_runtime_error_and_the_chain_still_says_so(tmp_path, monkeypatch):
    """torch.save turns the OSError of the file's write into RuntimeError('... unexpected pos ...')."""
    FullDisk(monkeypatch, room=1000)
    with pytest.raises(RuntimeError) as err, open(tmp_path / "raw.pt", "wb") as fh:
        torch.save({"w": torch.randn(4096)}, fh)
    monkeypatch.undo()
    assert not isinstance(err.value, OSError) and files.is_disk_full(err.value)
    assert not files.is_disk_full(RuntimeError("unexpected pos 1 vs 2"))
    assert files.is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))


def test_a_full_disk_where_no_wrapper_named_the_file_is_still_one_line(capsys):
    from model_code.errors import run_cli

    def main():
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/somewhere/tb/events.out")
        except OSError as err:
            raise RuntimeError("writer thread failed") from err

    with pytest.raises(SystemExit) as stop:
        run_cli(main, "train.py")
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1
    assert "/somewhere/tb/events.out" in lines[0] and "no space left" in lines[0]


def test_a_video_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    """opencv reports nothing but False from write(); the free space tells a full disk from other failures."""
    pytest.importorskip("cv2")
    from model_code import video

    monkeypatch.setattr(video, "_out_of_space", lambda folder: True)
    with pytest.raises(files.DiskFull, match="no space left"):
        _video(tmp_path / "process.mp4")
    assert not (tmp_path / "process.mp4").exists() and not temporaries(tmp_path)
    monkeypatch.undo()
    _video(tmp_path / "process.mp4")
    assert (tmp_path / "process.mp4").stat().st_size > 0


# ------------------------------------------------------------------ item 8: JSON for other tools
def test_json_text_writes_null_for_non_finite_numbers_and_is_strict_json():
    row = {"loss": float("nan"), "w": [1.0, float("inf"), -float("inf")], "n": np.float32("nan"), "k": 3,
           "ok": np.float64(0.5), "nested": {"a": float("nan")}}
    text = files.json_text(row)
    assert "NaN" not in text and "Infinity" not in text

    def strict(token):
        raise ValueError(token)

    assert json.loads(text, parse_constant=strict) == {"loss": None, "w": [1.0, None, None], "n": None, "k": 3,
                                                        "ok": 0.5, "nested": {"a": None}}


def test_trim_jsonl_repairs_old_nan_lines_and_drops_damaged_bytes(tmp_path):
    path = tmp_path / "results.json"
    path.write_bytes(b'{"epoch": 1, "loss": NaN}\n{"epoch": 2, "loss": 0.5}\n\xff\xfe garbage\n'
                     b'{"epoch": 3, "loss": 0.4}\n{"epoch": 4, "lo')
    assert files.trim_jsonl(path, "epoch", 3) == 2
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"epoch": 1, "loss": None}, {"epoch": 2, "loss": 0.5}, {"epoch": 3, "loss": 0.4}]
