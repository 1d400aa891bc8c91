"""A stop signal to a heat / linear-transform run (train.py --config): checkpoint, exit 3, exact resume."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model_code import checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "digits" / "default_digits_configs.yaml")
ARGS = ["--quiet", "model.unet.model_channels=16", "model.K=8", "training.batch_size=32", "training.n_eval=96",
        "eval.batch_size=96", "training.log_freq=10", "optim.warmup=20", "training.n_iters=150",
        "training.eval_freq=1000", "training.sampling_freq=1000", "training.snapshot_freq=1000",
        "training.snapshot_freq_for_preemption=1000", "model.forward=heat"]


def _train(workdir):
    return subprocess.Popen([sys.executable, "train.py", "--config", CONFIG, "--workdir", str(workdir), *ARGS],
                            cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigusr1_checkpoints_and_the_same_command_resumes_to_the_same_weights(tmp_path):
    run, reference = tmp_path / "run", tmp_path / "reference"
    proc = _train(run)
    log = run / "training_log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= 2):
        time.sleep(0.1)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]
    assert "run the same command to resume" in err
    stopped = checkpoint.load(run / "checkpoints-meta" / "checkpoint.pth")
    assert 0 < stopped["step"] < 150
    proc = _train(run)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    proc = _train(reference)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    a = checkpoint.load(reference / "checkpoints-meta" / "checkpoint.pth")
    b = checkpoint.load(run / "checkpoints-meta" / "checkpoint.pth")
    assert a["step"] == b["step"] == 150
    for key in a["model"]:
        assert torch.allclose(a["model"][key], b["model"][key], atol=1e-6), key
    rows = [json.loads(line) for line in (run / "training_log.jsonl").read_text().splitlines()]
    kinds = [(r["step"], "loss" in r) for r in rows]            # a step may have a loss row and an eval row
    assert len(kinds) == len(set(kinds))                     # each once, across the stop and the resume
    assert max(r["step"] for r in rows) == 150
