"""What every system does the same way, one test each, parametrised over the systems of tests/systems.py:
exact mid-run resume, stop signals, kill -9 at any moment, and N processes training like one.

Runs are forked from the test process (imports are already done, so a start takes a fraction of
a second) with one thread each: a forked child must not raise the thread count of the parent's
OpenMP pool, and one thread makes every run bit-for-bit reproducible.
"""
import io
import multiprocessing
import os
import random
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest
import torch

from model_code import build, checkpoint, config
from helpers import assert_trains_like_one, rows, same_rows
from systems import ROOT, SYSTEMS, train_args

NAMES = sorted(SYSTEMS)


def unit_of(run: Path) -> str:
    return "epoch" if "epoch" in rows(run)[0] else "step"


def _child(savedir, system, data_dir, extra, env, slow_writes):
    """Forked child: train.py's main in `savedir`; exit status as train.py's (a UserError is 2)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.environ.update(env)
    os.environ["DATA_DIR"] = str(data_dir)
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
    import train
    from model_code.errors import UserError

    try:
        code = train.main(train_args(system, savedir, "train.threads=1", *extra))
    except UserError:
        code = 2
    os._exit(code)


def start(savedir, system, data_dir, *extra, env=None, slow_writes=False):
    proc = multiprocessing.get_context("fork").Process(
        target=_child, args=(str(savedir), system, data_dir, extra, env or {}, slow_writes))
    proc.start()
    return proc


def longer(system: str) -> list:
    """Overrides that make the tiny run long enough to be stopped in the middle."""
    files, overrides = SYSTEMS[system]
    epochs = any(o.startswith(("epochs=", "train.epochs=")) and not o.endswith("null") for o in overrides)
    return ["epochs=300"] if epochs else ["train.steps=3000"]


def wait_until(condition, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and not condition():
        time.sleep(0.05)
    return condition()


# ---------------------------------------------------------------- exact resume
@pytest.mark.parametrize("system", NAMES)
def test_a_stopped_run_resumes_exactly(system, tmp_path, volcano_dir):
    """Stopped mid-run (mid-epoch where the run counts epochs) and resumed: the same weights, EMA and
    results.json lines as the run that never stopped."""
    from model_code.trainer import Preempted

    torch.set_num_threads(1)
    files, overrides = SYSTEMS[system]
    cfg = config.load([ROOT / f for f in files], overrides)

    def trainer(folder):
        return build.build_trainer(cfg, folder, str(volcano_dir))

    reference = trainer(tmp_path / "ref")
    reference.fit()
    total = reference.step
    cut = trainer(tmp_path / "cut")
    stop_at = total // 2 - 1 if total > 4 else 1          # not on an epoch boundary for epoch runs
    step = cut.train_step

    def step_then_stop(batch):
        if cut.step == stop_at:
            cut.request_stop()
        return step(batch)

    cut.train_step = step_then_stop
    with pytest.raises(Preempted):
        cut.fit()
    saved = checkpoint.load(tmp_path / "cut" / "model.pt")
    assert saved["step"] == stop_at + 1
    resumed = trainer(tmp_path / "cut")
    resumed.load_state(saved)
    resumed.fit()
    assert resumed.step == total
    for a, b in ((reference.model, resumed.model), (reference.ema.shadow, resumed.ema.shadow)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name
    same_rows(tmp_path / "ref", tmp_path / "cut")


# ---------------------------------------------------------------- stop signals
@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGUSR1, 3), (signal.SIGINT, 130)], ids=["sigusr1", "ctrl-c"])
@pytest.mark.parametrize("system", NAMES)
def test_a_stop_signal_stops_with_a_checkpoint_and_the_same_command_resumes(system, sig, code, tmp_path,
                                                                            volcano_dir):
    """Slurm's SIGUSR1 (exit 3: requeue) and a Ctrl-C (exit 130: not requeued) both write model.pt."""
    run = tmp_path / "run"
    extra = longer(system)
    proc = start(run, system, volcano_dir, *extra)
    assert wait_until(lambda: (run / "results.json").exists()), "no results.json line"
    os.kill(proc.pid, sig)
    proc.join(120)
    assert proc.exitcode == code                       # train.py's "stopped, checkpoint written"
    state = checkpoint.load(run / "model.pt")
    done = state["step"]
    assert done > 0
    assert not (run / "writer.lock").exists()         # released at the stop
    unit = unit_of(run)
    before = len(rows(run))
    proc = start(run, system, volcano_dir, *extra)      # the same command resumes
    assert wait_until(lambda: len(rows(run)) > before), "the resumed run wrote no line"
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(120)
    assert proc.exitcode == 3
    units = [r[unit] for r in rows(run)]
    assert units == sorted(set(units)), units         # each line once, in order
    assert checkpoint.load(run / "model.pt")["step"] > done


# ---------------------------------------------------------------- kill -9
@pytest.mark.slow
@pytest.mark.parametrize("system", NAMES)
def test_kill_9_at_any_moment_never_breaks_resume(system, tmp_path, volcano_dir):
    """kill -9 inside checkpoint writes (half a file on disk) and at a random moment after the first
    checkpoint; the last start finishes with exactly the weights of a run that was never killed."""
    reference = tmp_path / "reference"
    proc = start(reference, system, volcano_dir)
    proc.join(300)
    assert proc.exitcode == 0
    run = tmp_path / "run"
    rng = random.Random(20261130)
    killed = inside_writes = trials = 0
    while (killed < 3 or inside_writes < 2) and trials < 12:
        during_write = trials % 3 != 2
        trials += 1
        had = (run / "model.pt").exists()
        proc = start(run, system, volcano_dir, slow_writes=during_write)
        marker = run / "WRITING"
        if during_write:
            wait_until(lambda: marker.exists() or not proc.is_alive(), 120)
            inside_writes += marker.exists() and proc.is_alive()
        else:
            # A random moment once the run is past its start (it holds the folder and trains).
            wait_until(lambda: not proc.is_alive() or (run / "model.pt").exists() and
                       (not had or (run / "model.pt").stat().st_mtime > time.time() - 1), 120)
            time.sleep(rng.uniform(0.0, 0.5))
        killed += proc.is_alive()
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        assert proc.exitcode in (0, -signal.SIGKILL), f"a start failed on its own (exit {proc.exitcode})"
        marker.unlink(missing_ok=True)
        if (run / "model.pt").exists():                # whole, or the previous whole one
            assert checkpoint.load(run / "model.pt")["format_version"] == checkpoint.FORMAT_VERSION
        if proc.exitcode == 0:                        # finished before the kill: start over
            shutil.rmtree(run)
    assert killed >= 3 and inside_writes >= 2, (killed, inside_writes, trials)
    proc = start(run, system, volcano_dir)
    proc.join(300)
    assert proc.exitcode == 0
    assert not list(run.glob("**/.*.tmp")) and not (run / "writer.lock").exists()
    a, b = checkpoint.load(reference / "model.pt"), checkpoint.load(run / "model.pt")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    unit = unit_of(run)
    assert [r[unit] for r in rows(run)] == [r[unit] for r in rows(reference)]


# ---------------------------------------------------------------- N processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("system", NAMES)
def test_two_processes_train_like_one(system, tmp_path, trained, volcano_dir):
    """torchrun's environment for 2 ranks: the same losses, metrics and weights as 1 process."""
    one = trained(system)
    two = tmp_path / "two"
    port = str(_free_port())
    procs = [start(two, system, volcano_dir, env={"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                                  "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
             for r in range(2)]
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    assert_trains_like_one(one, two)
