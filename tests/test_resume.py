"""Stop signals write a mid-epoch checkpoint; resuming from it reproduces the uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model_code import build, checkpoint, config

ROOT = Path(__file__).resolve().parents[1]
TINY = ["dataset=grf", "resolution=8", "npad=0", "grf_n_train=24", "grf_n_valid=8", "batch_size=4", "epochs=2",
        "record_interval=2", "Ntest=4", "val_batch_size=4", "L=4", "T=1", "arch=fno", "d_co_domain=8",
        "n_layers=2", "n_modes=3", "embedding_dim=8", "n_plot=2", "tensorboard=false"]


def trainer_for(savedir):
    args = config.load(None, TINY)
    return build.build_trainer(args, savedir, None, progress=False)


def test_preempted_run_resumes_to_the_same_weights(tmp_path):
    from model_code.trainer import Preempted

    reference = trainer_for(tmp_path / "ref")
    reference.fit()

    first = trainer_for(tmp_path / "cut")
    calls = {"n": 0}
    update = first.ema.update

    def update_then_stop(model):
        update(model)
        calls["n"] += 1
        if calls["n"] == 4:                  # mid-way through epoch 1 (6 steps per epoch)
            first.request_stop()

    first.ema.update = update_then_stop
    with pytest.raises(Preempted):
        first.fit()
    saved = checkpoint.load(tmp_path / "cut" / "model.pt")
    assert saved["epoch"] == 0 and saved["step"] == 4 and saved["epoch_progress"]["batches_done"] == 4

    second = trainer_for(tmp_path / "cut")
    second.load_state(saved)
    second.fit()
    for a, b in zip(reference.denoiser.state_dict().values(), second.denoiser.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(reference.ema.shadow.state_dict().values(), second.ema.shadow.state_dict().values()):
        assert torch.equal(a, b)
    ref_rows = [json.loads(x) for x in (tmp_path / "ref" / "results.json").read_text().splitlines()]
    cut_rows = [json.loads(x) for x in (tmp_path / "cut" / "results.json").read_text().splitlines()]
    assert [r["epoch"] for r in cut_rows] == [1, 2]
    for r, c in zip(ref_rows, cut_rows):
        assert r["loss"] == pytest.approx(c["loss"], rel=1e-6)
        assert r["loss_valid"] == pytest.approx(c["loss_valid"], rel=1e-6)
    assert ref_rows[-1]["w_total"] == pytest.approx(cut_rows[-1]["w_total"], rel=1e-6)


@pytest.mark.slow
def test_sigusr1_stops_train_py_with_a_checkpoint_and_the_same_command_resumes(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "train.py", "--savedir", str(run), "--quiet", *TINY[:-1], "epochs=400",
           "record_interval=1000", "tensorboard=false"]
    env = dict(os.environ)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "results.json").exists():
        time.sleep(0.2)
    assert (run / "results.json").exists(), proc.communicate()[1]
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "run the same command to resume" in err
    state = checkpoint.load(run / "model.pt")
    done = state["epoch"]
    assert 1 <= done < 400
    # Resume with the same command for a few seconds, then stop again: epochs continue, none repeated.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Signal only once the resumed run has finished an epoch, i.e. its handlers are installed.
    deadline = time.time() + 120
    while time.time() < deadline and len((run / "results.json").read_text().splitlines()) <= done:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert f"resuming {run} after epoch {done}" in err
    epochs = [json.loads(x)["epoch"] for x in (run / "results.json").read_text().splitlines()]
    assert epochs == list(range(1, len(epochs) + 1))
