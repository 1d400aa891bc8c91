"""Training heat dissipation and linear maps on real digits through train.py: the validation loss
and the negative ELBO go down, the run folder holds what it should, config errors name the key."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model_code import build, checkpoint, config
from model_code.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "digits" / "default_digits_configs.yaml")
TINY = ["model.unet.model_channels=16", "model.K=8", "training.batch_size=32", "training.n_eval=96",
        "eval.batch_size=96", "training.log_freq=20", "optim.warmup=20", "eval.evaluators=[elbo]",
        "train.tensorboard=false", "train.device=cpu", "train.threads=1"]


def _rows(folder):
    return [json.loads(line) for line in (folder / "results.json").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("forward", ["heat", "constant_velocity"])
def test_training_on_digits_lowers_validation_loss_and_negative_elbo(tmp_path, forward):
    import train

    torch.set_num_threads(1)
    work = tmp_path / "run"
    overrides = [f"model.forward={forward}", "training.n_iters=160", "training.eval_freq=80",
                 "training.sampling_freq=160", "training.snapshot_freq=80", "training.snapshot_freq_for_preemption=40",
                 *TINY]
    # the untrained model, judged by the run's own validation loss and evaluators (same seeds, same prior)
    cfg = config.load([CONFIG], overrides)
    start = build.build_trainer(cfg, tmp_path / "untrained", None)
    start_loss, start_bpd = start.validation_loss(), start.record(0)["val_bpd"]
    assert train.main(["--config", CONFIG, "--savedir", str(work), "--quiet", *overrides]) == 0

    rows = _rows(work)
    assert [r["step"] for r in rows] == list(range(20, 161, 20))
    assert all("loss_valid" in r and r["loss"] > 0 for r in rows)
    evals = [r for r in rows if "val_bpd" in r]
    assert [r["step"] for r in evals] == [80, 160]
    # 160 steps take both down about tenfold (heat: loss 4.3e-3 -> 4.4e-4, bits/dim 148 -> 13.5)
    assert evals[-1]["loss_valid"] < 0.25 * start_loss
    assert 0 < evals[-1]["val_bpd"] < 0.25 * start_bpd
    assert (work / "model.pt").is_file() and (work / "model.val_bpd.pt").is_file()
    assert sorted(p.name for p in (work / "snapshots").iterdir()) == ["model.160.pt", "model.80.pt"]
    assert (work / "samples" / "160.png").is_file()
    state = checkpoint.load(work / "model.pt")
    assert state["step"] == 160 and state["process"]["map"]["forward"] == forward
    assert state["process"]["map"]["K"] == 8 and state["process"]["data_levels"] == 17
    prior = state["process_state"]["prior"]       # fitted to the most-degraded training images
    assert prior["shape"] == [1, 8, 8] and prior["kind"] == "full" and torch.isfinite(prior["mean"]).all()
    # the run rebuilds from its checkpoint alone, with the same config
    run = build.load_run(work, "model.pt", "cpu")
    assert run.cfg == cfg and run.process.name == "levels" and run.kind == "image"


def test_config_errors_name_the_key():
    with pytest.raises(UserError, match=r"'model\.nonsense'"):
        config.load([CONFIG], ["model.nonsense=1"])
    with pytest.raises(UserError, match=r"command line: model\.K=abc: .*'process\.levels\.K': expected int"):
        config.load([CONFIG], ["model.K=abc"])
    with pytest.raises(UserError, match=r"command line: training\.n_iters=x: .*'train\.steps': expected int"):
        config.load([CONFIG], ["training.n_iters=x"])
    with pytest.raises(UserError, match=r"train\.steps must be >= 1"):
        config.load([CONFIG], ["training.n_iters=0"])
    cfg = config.load([CONFIG], ["training.sampling_freq=7"])
    assert cfg.train.figure_interval == 7
    # an unknown forward process is refused when the process is built (the maps are a registry)
    cfg = config.load([CONFIG], ["model.forward=spiral"])
    with pytest.raises(UserError, match=r"process\.levels\.forward=spiral.*unknown forward process"):
        build.build_process(cfg, build.build_dataset(cfg, None), None)


def test_elbo_evaluator_takes_every_validation_image_when_n_valid_is_null():
    cfg = config.load([CONFIG], ["eval.n_valid=null", "eval.evaluators=[elbo]"])
    (elbo,) = build.build_evaluators(cfg, build.build_dataset(cfg, None), "image")
    assert elbo.metrics == ("val_bpd",) and elbo.n_images is None


def test_training_time_elbo_of_a_class_conditional_run(tmp_path):
    cfg = config.load([CONFIG], ["data.conditional=true", "model.K=2", "data.max_examples=32", "training.n_eval=8",
                                 "eval.batch_size=8", "eval.evaluators=[elbo]", "model.unet.model_channels=8",
                                 "train.device=cpu"])
    trainer = build.build_trainer(cfg, tmp_path, None)
    assert trainer.record(0)["val_bpd"] > 0


LEVELS_YAML = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml")
                     if "system: levels" in p.read_text())


@pytest.mark.parametrize("path", LEVELS_YAML)
def test_every_shipped_config_loads(path):
    cfg = config.load([ROOT / path])
    assert cfg.process.type == "levels" and cfg.process.levels.K >= 1
    assert cfg.train.steps >= 1 and cfg.train.epochs is None and cfg.optim.name == "adamw"


def test_train_py_reports_errors_in_one_line(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "train.py", "--config", CONFIG, "--workdir", str(tmp_path / "w"),
                          "model.K=abc"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "model.K=abc" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "w").exists()
