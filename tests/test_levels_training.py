"""Training on real digits (train.py -> model_code/image_runs.py): loss and negative ELBO go down,
workdir layout, resume, config errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model_code import checkpoint
from model_code.errors import UserError
from model_code.image_runs import train_main
from model_code.levels_config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "digits" / "default_digits_configs.yaml")
TINY = ["model.unet.model_channels=16", "model.K=8", "training.batch_size=32", "training.n_eval=96",
        "eval.batch_size=96", "training.log_freq=20", "optim.warmup=20"]


def _log(workdir):
    return [json.loads(line) for line in (workdir / "training_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("forward", ["heat", "constant_velocity"])
def test_training_on_digits_lowers_validation_loss_and_negative_elbo(tmp_path, forward):
    torch.set_num_threads(1)
    work = tmp_path / "run"
    rc = train_main(["--config", CONFIG, "--workdir", str(work), "--quiet", f"model.forward={forward}",
                     "training.n_iters=160", "training.eval_freq=80", "training.sampling_freq=160",
                     "training.snapshot_freq=80", "training.snapshot_freq_for_preemption=40", *TINY])
    assert rc == 0
    evals = [r for r in _log(work) if "val_loss" in r]
    assert [r["step"] for r in evals] == [0, 80, 160]
    assert evals[-1]["val_loss"] < 0.5 * evals[0]["val_loss"]
    assert evals[-1]["val_bpd"] < 0.7 * evals[0]["val_bpd"]
    assert (work / "checkpoints-meta" / "checkpoint.pth").exists()
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["checkpoint_1.pth", "checkpoint_2.pth"]
    assert (work / "samples" / "iter_000160.png").exists()
    state = checkpoint.load(work / "checkpoints-meta" / "checkpoint.pth")
    assert state["step"] == 160 and state["map"]["name"] == forward


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
    torch.set_num_threads(1)
    common = ["--config", CONFIG, "--quiet", "training.eval_freq=1000", "training.sampling_freq=1000",
              "training.snapshot_freq=1000", "training.snapshot_freq_for_preemption=10", *TINY,
              "model.forward=fixed_random"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert train_main(["--workdir", str(a), "training.n_iters=20", *common]) == 0
    assert train_main(["--workdir", str(b), "training.n_iters=10", *common]) == 0
    assert train_main(["--workdir", str(b), "training.n_iters=20", *common]) == 0     # resumes at 10
    sa = checkpoint.load(a / "checkpoints-meta" / "checkpoint.pth")
    sb = checkpoint.load(b / "checkpoints-meta" / "checkpoint.pth")
    for key in sa["model"]:
        assert torch.allclose(sa["model"][key], sb["model"][key], atol=1e-6), key
    # Another experiment in the same folder is refused, nothing overwritten.
    with pytest.raises(UserError, match="model.forward"):
        train_main(["--workdir", str(b), "training.n_iters=30", *common[:-1], "model.forward=heat"])


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(UserError, match="nonsense"):
        load_config(CONFIG, ["model.nonsense=1"])
    with pytest.raises(UserError, match="model.K"):
        load_config(CONFIG, ["model.K=abc"])
    with pytest.raises(UserError, match="model.forward"):
        load_config(CONFIG, ["model.forward=spiral"])
    cfg = load_config(CONFIG, ["config.training.sampling_freq=7"])      # the seed's README spelling
    assert cfg.training.sampling_freq == 7


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml")
                                        if "toy" not in p.parts))
def test_every_shipped_config_loads(path):
    from omegaconf import OmegaConf

    if OmegaConf.load(ROOT / path).get("system", "levels") != "levels":
        pytest.skip("not a levels config")
    cfg = load_config(ROOT / path)
    assert cfg.model.K >= 1


def test_train_py_routes_yaml_and_reports_errors_in_one_line(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "train.py", "--config", CONFIG, "--workdir", str(tmp_path / "w"),
                          "model.forward=spiral"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "model.forward" in out.stderr and "Traceback" not in out.stderr
