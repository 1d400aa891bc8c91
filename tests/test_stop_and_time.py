"""Stopping and time: a first Ctrl-C stops like a scheduler's signal (model.pt mid-epoch, exit 130, the same
command resumes exactly) and a later one aborts without a torn file; max_minutes stops at the first step
past it, mid-epoch too, and the same command resumes exactly; the ETA is to max_minutes where that comes
first; a note says early when the steps will not fit.

Runs that get real signals are forked from the test process (imports are done, so a start takes a
fraction of a second) with one thread, and wait at a known step for the signal, so that where it lands
does not depend on timing. Runs inside the test process get an injected clock instead of real time.
"""
import io
import multiprocessing
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import torch

from model_code import build, checkpoint, config
from model_code.errors import run_cli
from model_code.progress import LogLines, remaining, steps_within
from model_code.trainer import SAME_CTRL_C_SECONDS, Trainer, time_note
from helpers import rows, same_rows
from systems import ROOT, SYSTEMS, train_args

SYSTEM = "interpolant_grf"       # 3 epochs of 4 steps, record at epoch 3, model.pt every epoch; no data folder
CTRL_C_AT = 5                    # the Ctrl-C arrives in the 6th step: epoch 2, 2 of its 4 steps done
HINT = ("Ctrl-C: stopping after the current step with model.pt written (Ctrl-C again aborts without "
        "saving)")


def wait_until(condition, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and not condition():
        time.sleep(0.01)
    return condition()


def _child(system, savedir, err, extra, env, wait_at, hold_stop_write):
    """Forked child: train.py as the shell runs it (run_cli), its output in `err`. wait_at: the step that
    waits for this process's signal; hold_stop_write: the model.pt write after it stops half-way, until
    the next signal ends the process."""
    out = open(err, "a", buffering=1)
    os.dup2(out.fileno(), 1)
    os.dup2(out.fileno(), 2)
    sys.stdout = sys.stderr = out
    os.environ.update(env)
    signalled = []
    if wait_at is not None:
        real_step = Trainer.train_step

        def train_step(self, batch):
            if self.step == wait_at:
                (Path(savedir) / f"WAITING{os.environ.get('RANK', '')}").touch()
                wait_until(lambda: self.interrupt_requested or self.stop_requested)
                signalled.append(True)
            return real_step(self, batch)

        Trainer.train_step = train_step
    if hold_stop_write:
        real_save = torch.save

        def save_in_two_halves(obj, f, *args, **kwargs):
            if not signalled:
                return real_save(obj, f, *args, **kwargs)
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[:len(data) // 2])
            f.flush()
            (Path(savedir) / "WRITING").touch()
            time.sleep(120)                     # half a checkpoint on disk: the second Ctrl-C ends this
            f.write(data[len(data) // 2:])

        torch.save = save_in_two_halves
    import train

    sys.argv = ["train.py", *train_args(system, savedir, "train.threads=1", *extra)]
    try:
        run_cli(train.main, "train.py")
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    out.flush()
    os._exit(code)


def start(savedir, err, *extra, system=SYSTEM, env=None, wait_at=None, hold_stop_write=False):
    proc = multiprocessing.get_context("fork").Process(
        target=_child, args=(system, str(savedir), str(err), extra, env or {}, wait_at, hold_stop_write))
    proc.start()
    return proc


def same_weights(a: Path, b: Path) -> None:
    sa, sb = checkpoint.load(a / "model.pt"), checkpoint.load(b / "model.pt")
    assert sa["step"] == sb["step"]
    assert sa["ema"]["step"] == sb["ema"]["step"]
    for part, a_weights, b_weights in (("model", sa["model"], sb["model"]),
                                       ("ema", sa["ema"]["shadow"], sb["ema"]["shadow"])):
        assert list(a_weights) == list(b_weights)
        for name, x in a_weights.items():
            assert torch.equal(x, b_weights[name]), (part, name)


# ---------------------------------------------------------------- Ctrl-C
@pytest.mark.slow
def test_ctrl_c_mid_epoch_writes_model_pt_exits_130_and_the_same_command_resumes_exactly(tmp_path, trained):
    run, err = tmp_path / "run", tmp_path / "first.log"
    proc = start(run, err, wait_at=CTRL_C_AT)
    assert wait_until(lambda: (run / "WAITING").exists() or not proc.is_alive()), err.read_text()
    os.kill(proc.pid, signal.SIGINT)
    proc.join(120)
    text = err.read_text()
    assert proc.exitcode == 130, text[-2000:]            # not 3: a launcher must not requeue it
    assert HINT in text
    assert ("train.py: stopped by Ctrl-C at epoch 1, step 6; model.pt holds the state to resume from; run the "
            "same command to resume") in text
    assert "train.py: interrupted" not in text
    assert checkpoint.load(run / "model.pt")["step"] == CTRL_C_AT + 1
    assert not (run / "writer.lock").exists()
    (run / "WAITING").unlink()
    proc = start(run, tmp_path / "second.log")            # the same command
    proc.join(300)
    assert proc.exitcode == 0, (tmp_path / "second.log").read_text()[-2000:]
    assert f"resuming {run} at step {CTRL_C_AT + 1}" in (tmp_path / "second.log").read_text()
    reference = trained(SYSTEM)
    same_weights(reference, run)
    same_rows(reference, run)


@pytest.mark.slow
def test_a_second_ctrl_c_during_the_checkpoint_write_aborts_at_once_and_leaves_the_previous_model_pt(tmp_path):
    run, err = tmp_path / "run", tmp_path / "first.log"
    proc = start(run, err, wait_at=CTRL_C_AT, hold_stop_write=True)
    assert wait_until(lambda: (run / "WAITING").exists() or not proc.is_alive()), err.read_text()
    os.kill(proc.pid, signal.SIGINT)
    assert wait_until(lambda: (run / "WRITING").exists() or not proc.is_alive()), err.read_text()
    # Later than the same Ctrl-C delivered twice (a launcher forwarding it) could come: a second press.
    time.sleep(SAME_CTRL_C_SECONDS + 0.2)
    os.kill(proc.pid, signal.SIGINT)
    proc.join(60)
    text = err.read_text()
    assert proc.exitcode == 130, text[-2000:]
    assert HINT in text and "train.py: interrupted" in text and "stopped by" not in text
    assert checkpoint.load(run / "model.pt")["step"] == 4           # the end of epoch 1, whole
    assert not [p.name for p in run.rglob("*") if ".tmp" in p.name]
    (run / "WAITING").unlink()
    (run / "WRITING").unlink()
    proc = start(run, tmp_path / "second.log")
    proc.join(300)
    assert proc.exitcode == 0
    assert f"resuming {run} at step 4" in (tmp_path / "second.log").read_text()
    assert checkpoint.load(run / "model.pt")["step"] == 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("signals, code", [((signal.SIGINT, signal.SIGINT), 130),
                                           ((signal.SIGINT, signal.SIGTERM), 3)],
                         ids=["ctrl-c-on-both", "ctrl-c-and-sigterm"])
def test_every_rank_stops_after_the_same_step_and_a_schedulers_signal_decides_the_exit(signals, code, tmp_path):
    """torchrun's environment for 2 ranks, each signalled in the 5th step (a terminal's Ctrl-C reaches
    all of them): both stop after it with one model.pt; with a SIGTERM on one rank both exit 3, so that
    a launcher requeues the run the scheduler stopped."""
    run, port = tmp_path / "run", str(_free_port())
    procs = [start(run, tmp_path / f"rank{r}.log", system="toy", wait_at=4,
                   env={"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": port}) for r in range(2)]
    for r, proc in enumerate(procs):
        assert wait_until(lambda: (run / f"WAITING{r}").exists() or not proc.is_alive()), \
            (tmp_path / f"rank{r}.log").read_text()[-2000:]
    for proc, sig in zip(procs, signals):
        os.kill(proc.pid, sig)
    for proc in procs:
        proc.join(120)
    logs = [(tmp_path / f"rank{r}.log").read_text() for r in range(2)]
    assert [p.exitcode for p in procs] == [code, code], logs[0][-1500:] + logs[1][-1500:]
    assert checkpoint.load(run / "model.pt")["step"] == 5
    how = "Ctrl-C" if code == 130 else "signal"
    assert f"train.py: stopped by {how} at step 5; model.pt holds the state to resume from" in logs[0]
    assert HINT in logs[0] and HINT not in logs[1] and "stopped by" not in logs[1]      # rank 0 speaks


def _build(system, folder, *extra, **options):
    files, overrides = SYSTEMS[system]
    cfg = config.load([ROOT / f for f in files], [*overrides, *extra])
    return build.build_trainer(cfg, folder, None, **options)


def test_the_same_ctrl_c_delivered_twice_stops_once_a_later_one_aborts_and_fit_restores_the_handlers(
        tmp_path, capsys):
    torch.set_num_threads(1)
    trainer = _build("toy", tmp_path / "run")
    now = [100.0]
    trainer.clock = lambda: now[0]
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    try:
        trainer.request_interrupt(signal.SIGINT, None)
        assert trainer.interrupt_requested and not trainer.stop_requested
        assert capsys.readouterr().err.strip() == HINT
        now[0] += SAME_CTRL_C_SECONDS / 2           # a launcher's forward of the same Ctrl-C
        trainer.request_interrupt(signal.SIGINT, None)
        assert capsys.readouterr().err == ""
        now[0] += SAME_CTRL_C_SECONDS                # a second press
        with pytest.raises(KeyboardInterrupt):
            trainer.request_interrupt(signal.SIGINT, None)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before[signal.SIGINT])
    _build("toy", tmp_path / "other").fit()
    assert {sig: signal.getsignal(sig) for sig in before} == before


# ---------------------------------------------------------------- max_minutes
def test_max_minutes_stops_at_the_first_step_past_it_mid_epoch_and_the_same_command_resumes_exactly(
        tmp_path, capsys, trained):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    cut = _build(SYSTEM, run, "train.max_minutes=0.75")
    # 10 s per finished step: the all-reduce of the 6th step reads 50 s, the first past 45 s.
    cut.clock = lambda: 10.0 * cut.step
    cut.fit()                                      # a time stop is no error
    assert ("stopped at step 6, epoch 2/3 in progress (2/4 of its steps): max_minutes=0.75 reached; model.pt "
            "holds this state: run the same command to go on from it for up to 0.75 more minutes (a larger "
            "train.max_minutes, or null for no limit, may be given on resume)") in capsys.readouterr().err
    assert checkpoint.load(run / "model.pt")["step"] == 6
    reference = trained(SYSTEM)
    # The final record: epoch 2's line at step 6, with everything a record has (losses, validation, metrics);
    # it replaces no best checkpoint, which the uninterrupted run does not have at step 6 either.
    first, final = rows(run)
    assert (first["epoch"], first["step"], final["epoch"], final["step"]) == (1, 4, 2, 6)
    assert set(rows(reference)[-1]) <= set(final)
    assert not list(run.glob("model.*.pt"))
    resumed = _build(SYSTEM, run)                  # max_minutes=null, a run setting
    resumed.load_state(checkpoint.load(run / "model.pt"))
    resumed.fit()
    same_weights(reference, run)
    same_rows(reference, run)                      # epoch 2's line once, from its real end


def test_a_deadline_passed_inside_an_evaluation_stops_after_the_next_step_without_a_second_one(tmp_path, capsys):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    cut = _build(SYSTEM, run, "train.max_minutes=0.75", "train.record_interval=1")
    spent, records = [0.0], []
    cut.clock = lambda: 10.0 * cut.step + spent[0]
    record = cut.record

    def slow_record(unit, **options):
        records.append(unit)
        spent[0] += 100.0                          # epoch 1's evaluation ends past 45 s
        return record(unit, **options)

    cut.record = slow_record
    cut.fit()
    assert "stopped at step 5, epoch 2/3 in progress (1/4 of its steps)" in capsys.readouterr().err
    assert records == [1]
    assert [r["step"] for r in rows(run)] == [4]     # epoch 1's record, one step before model.pt, stands
    assert checkpoint.load(run / "model.pt")["step"] == 5


# ---------------------------------------------------------------- ETA
def test_the_eta_is_to_max_minutes_when_that_comes_first():
    assert remaining(100.0, 10, 90) == (900.0, False)
    assert remaining(100.0, 10, 90, limit=300.0) == (200.0, True)
    assert remaining(100.0, 10, 90, limit=2000.0) == (900.0, False)
    assert remaining(100.0, 0, 90, limit=300.0) == (200.0, True)       # no pace yet: the limit is known
    assert remaining(400.0, 10, 90, limit=300.0) == (0.0, True)
    assert remaining(100.0, 10, 0, limit=300.0) == (0.0, False)
    # Steps of 10 s with 25 s left: the 3rd ends past the limit, and the loop stops after it.
    assert steps_within(10.0, 25.0, 100) == 3
    assert steps_within(10.0, 30.0, 100) == 4      # ending exactly at the limit is not past it
    assert steps_within(10.0, 1000.0, 50) == 50
    assert steps_within(10.0, -5.0, 50) == 1
    assert steps_within(0.0, 25.0, 50) == 50

    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    for limit, eta in ((60.0, "ETA 0:00:50 (max_minutes)"), (3600.0, "ETA 0:16:30"), (None, "ETA 0:16:30")):
        clock, out = Clock(), io.StringIO()
        log = LogLines("train", "epoch", 100, stream=out, clock=clock, limit_seconds=limit)
        clock.now = 10.0
        log.unit_done(1)
        assert out.getvalue().rstrip().endswith(f"elapsed 0:00:10 | {eta}"), out.getvalue()


def test_the_progress_bar_counts_to_the_step_where_max_minutes_stops(tmp_path, capsys):
    torch.set_num_threads(1)
    trainer = _build("toy", tmp_path / "run", "train.max_minutes=0.75", progress=True)
    trainer.clock = lambda: 10.0 * trainer.step      # stops after step 6 of 12 (see the test above)
    trainer.fit()
    final = capsys.readouterr().err.split("\r")[-1]
    assert "steps to max_minutes" in final and " 6/6 " in final, final


# ---------------------------------------------------------------- time note
def test_the_note_says_when_the_steps_left_will_not_fit():
    gpu = "; this run is GPU-sized (train.device=cuda), or see the CPU-sized configs in README.org"
    assert time_note(20.0, 3, 5003, 50, "epoch", "cpu", 2) == (
        "note: 20 s per step here (cpu, 2 threads): the 5000 steps left take about 28 h" + gpu)
    assert time_note(20.0, 3, 5003, 50, "epoch", "cuda:0", 2) == (
        "note: 20 s per step here (cuda:0): the 5000 steps left take about 28 h")
    assert time_note(12.3, 3, 5003, 50, "epoch", "cpu", 2) is None        # 17 h: within LONG_RUN_HOURS
    # 870 s left at 12.3 s per step: 70 steps end before the limit, the 71st past it (step 74, in epoch 2).
    assert time_note(12.3, 3, 5003, 50, "epoch", "cpu", 1, seconds_left=870.0, max_minutes=15) == (
        "note: 12.3 s per step here (cpu, 1 thread): max_minutes=15 stops this start after about 71 of the 5000 "
        "steps left (step 74/5003, in epoch 2/100); all of them would take about 17 h" + gpu)
    assert time_note(0.5, 3, 1003, 1, "step", "cpu", 1, seconds_left=870.0, max_minutes=15) is None
    assert time_note(0.25, 3, 203, 1, "step", "cuda", 1, seconds_left=30.0, max_minutes=1) == (
        "note: 0.25 s per step here (cuda): max_minutes=1 stops this start after about 121 of the 200 steps "
        "left (step 124/203); all of them would take about 50 s")
    assert time_note(0.5, 3, 5003, 1, "step", "cuda", 1, seconds_left=870.0, max_minutes=15) == (
        "note: 0.5 s per step here (cuda): max_minutes=15 stops this start after about 1741 of the 5000 steps "
        "left (step 1744/5003); all of them would take about 42 min")


def test_the_trainer_notes_a_run_too_long_from_its_second_and_third_steps(tmp_path, capsys):
    torch.set_num_threads(1)
    for seconds, note in ((20_000.0, True), (1.0, False)):
        trainer = _build("toy", tmp_path / str(seconds))
        trainer.clock = lambda: seconds * trainer.step
        trainer.fit()
        err = capsys.readouterr().err
        threads = torch.get_num_threads()
        expected = (f"note: 20000 s per step here (cpu, {threads} thread{'' if threads == 1 else 's'}): the 9 steps "
                    f"left take about 50 h; this run is GPU-sized (train.device=cuda), or see the CPU-sized configs "
                    f"in README.org")
        assert (expected in err) == note and ("note:" in err) == note, err
