"""Plain progress lines when stderr is a log file, for every training loop; --quiet silences them."""
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from model_code.progress import LogLines, enabled_for
from systems import SYSTEMS

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _lines(total=10, **kw):
    clock, out = Clock(), io.StringIO()
    return LogLines("train", "epoch", total, stream=out, clock=clock, **kw), clock, out


def test_one_line_per_epoch_or_per_minute_whichever_is_rarer():
    log, clock, out = _lines(total=100)
    for epoch in range(1, 101):              # 10 s epochs: a line a minute, plus the first and the last
        clock.now += 10
        log.advance(32, epoch - 1)
        log.unit_done(epoch, loss=0.5)
    text = out.getvalue().splitlines()
    epochs = [int(re.search(r"epoch (\d+)/100", line).group(1)) for line in text]
    assert epochs[0] == 1 and epochs[-1] == 100
    assert all(b - a == 6 for a, b in zip(epochs[1:-2], epochs[2:-1]))     # every 60 s = 6 epochs
    assert len(text) == 2 + 99 // 6
    # 32 samples per 10 s, and 99 epochs left after the first at 10 s each.
    first = text[0]
    assert "3.2 samples/s" in first and "ETA 0:16:30" in first and "loss 0.5" in first

    log, clock, out = _lines(total=3)        # 2-minute epochs: a line per epoch, not per minute
    for epoch in range(1, 4):
        clock.now += 120
        log.unit_done(epoch)
    assert len(out.getvalue().splitlines()) == 3


def test_a_long_epoch_reports_from_inside_and_every_validation_round_is_printed():
    log, clock, out = _lines(total=2, within=300)
    for step in range(100):                  # a 1000 s epoch: a line from inside it every 300 s
        clock.now += 10
        log.advance(8, 0, step=step)
    inside = out.getvalue().splitlines()
    assert len(inside) == 3 and all("epoch 1/2 (in progress)" in line for line in inside)
    log.metrics(1, {"w_total": 0.125, "w_var": 0.5, "note": "text is left out"})
    assert out.getvalue().splitlines()[-1].endswith("validation epoch 1: w_total 0.125 w_var 0.5")


def test_disabled_prints_nothing_and_terminals_and_quiet_disable():
    log, clock, out = _lines(enabled=False)
    log.advance(1, 0)
    log.unit_done(1)
    log.metrics(1, {"w": 1.0})
    assert out.getvalue() == ""
    assert not enabled_for(quiet=True, stream=io.StringIO())
    assert enabled_for(quiet=False, stream=io.StringIO())                  # a file: lines
    assert not enabled_for(quiet=False, is_main=False, stream=io.StringIO())  # rank > 0: silent

    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert not enabled_for(quiet=False, stream=Tty())                      # a terminal: tqdm bars


def _train(system, savedir, *extra):
    """train.py's command line for a tiny run of `system` (tests/systems.py), progress output on."""
    files, overrides = SYSTEMS[system]
    return [sys.executable, "train.py", "--config", *files, "--savedir", str(savedir), *overrides, *extra]


# One system per unit the loop counts (epochs of finite data, steps) and the toy's stream.
EXPECTED = {
    "interpolant_grf": ["train epoch 1/3", "train epoch 3/3", "validation epoch 3: w_var"],
    "heat_digits": ["train step 1/12", "train step 12/12", "validation step 6: val_bpd", "validation step 12: val_bpd"],
    "toy": ["train step 1/12", "train step 12/12", "validation step 12: score_error"],
}


@pytest.mark.parametrize("system", sorted(EXPECTED))
def test_a_log_file_gets_plain_progress_lines(system, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "err.log", "w") as err:             # a file, as in a Slurm job
        proc = subprocess.run(_train(system, tmp_path / "run"), cwd=ROOT, env=env, stderr=err,
                              stdout=subprocess.PIPE, text=True, timeout=300)
    log = (tmp_path / "err.log").read_text()
    assert proc.returncode == 0, log[-2000:]
    for part in EXPECTED[system]:
        assert part in log, (part, log)
    assert re.search(r"samples/s \| elapsed \d+:\d\d:\d\d \| ETA \d+:\d\d:\d\d", log), log
    assert "\r" not in log                                   # no progress bar in a file


@pytest.mark.parametrize("system", sorted(EXPECTED))
def test_quiet_prints_no_progress_lines(system, tmp_path, capfd):
    """In this process (no interpreter start): stderr is captured, not a terminal, so without
    --quiet it would get the plain lines of the test above."""
    import train
    from systems import train_args

    assert train.main(train_args(system, tmp_path / "quiet", "train.threads=1")) == 0    # --quiet included
    err = capfd.readouterr().err
    assert not re.search(r"^\[\d\d:\d\d:\d\d\] ", err, re.M), err


def test_a_long_evaluation_prints_plain_lines_to_a_log(tmp_path, trained):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "eval.py", "--exp_name", str(trained("interpolant_grf")), "--savedir", str(tmp_path),
           "--mode", "generate", "--Ntest", "6", "--val_batch_size", "2", "--checkpoint", "model.pt"]
    with open(tmp_path / "err.log", "w") as err:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stderr=err, stdout=subprocess.PIPE, timeout=300)
    log = (tmp_path / "err.log").read_text()
    assert proc.returncode == 0, log[-2000:]
    assert "generate batch 1/3" in log and "generate batch 3/3" in log, log
    quiet = subprocess.run(cmd + ["--quiet", "--tag", "again"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert quiet.returncode == 0 and "generate batch" not in quiet.stderr, quiet.stderr
