"""Validation during training samples with eval.sampler (fast by default; published files as published).

The count of network evaluations per validation is exact, so the tests count them instead of timing.
"""
import json
from pathlib import Path

import pytest
import torch

from model_code import build, checkpoint, config, samplers
from model_code.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / "exps" / "json" / "ci.json"
TINY = ["epochs=2", "record_interval=1", "grf_n_train=16", "grf_n_valid=8", "batch_size=8", "Ntest=4",
        "val_batch_size=4", "L=5", "T=2", "d_co_domain=8", "n_layers=2", "n_modes=3", "embedding_dim=8",
        "n_plot=2", "tensorboard=false", "resolution=8"]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k]
                                        for k in a)


def _evaluations(options: dict) -> int:
    extra = {k: v for k, v in options.items() if k not in ("sampler", "sigmas")}
    return samplers.network_evaluations(options["sampler"], len(options["sigmas"]), extra)


@pytest.mark.parametrize("name", ["quickstart", "rbf-project", "indep-project", "grf-quality", "rbf-64px-scale0.1"])
def test_the_projects_experiment_files_validate_with_the_fast_sampler(name):
    cfg = config.load([ROOT / "exps" / "json" / f"{name}.json"])
    options = build.validation_sampler_setup(cfg)
    assert options["sampler"] == "dpm_solver_2m" and _evaluations(options) == 10
    assert options["sigmas"][0] == pytest.approx(cfg.process.sigma_max)
    assert options["sigmas"][-1] == pytest.approx(cfg.process.sigma_min)
    # eval.py's default stays the sampler group's (the final evaluation).
    assert build.sampler_setup(cfg)["sampler"] == cfg.sampler.name


@pytest.mark.parametrize("name", ["rbf-copied", "indep-copied"])
def test_published_files_validate_with_the_published_sampler_and_say_so(name):
    path = ROOT / "exps" / "json" / f"{name}.json"
    cfg = config.load([path])
    options = build.validation_sampler_setup(cfg)
    assert cfg.eval.sampler is None and options["sampler"] == "annealed_langevin"
    assert _evaluations(options) == 500 * 3 + 1                 # L = 500, T = 3, the final denoising step
    assert "annealed Langevin" in cfg.mapped_keys["validation"]
    fast = build.validation_sampler_setup(config.load([path], ["eval.sampler=dpm_solver_2m",
                                                               "eval.sampler_steps=6"]))
    assert fast["sampler"] == "dpm_solver_2m" and _evaluations(fast) == 6


def test_validation_sampler_options():
    cfg = config.load([CI], ["eval.sampler=heun_ode", "eval.sampler_steps=4", "eval.sampler_sigma_min=0.2"])
    options = build.validation_sampler_setup(cfg)
    assert _evaluations(options) == 7 and options["sigmas"][-1] == pytest.approx(0.2)
    langevin = build.validation_sampler_setup(config.load([CI], ["eval.sampler=annealed_langevin", "T=2"]))
    assert _evaluations(langevin) == 10 * 2 + 1                 # the training levels, sampler.T
    assert _same(build.validation_sampler_setup(config.load([CI], ["eval.sampler=null"])),
                 build.sampler_setup(config.load([CI])))
    for bad in (["eval.sampler=langevin"], ["eval.sampler_steps=0"], ["eval.sampler_sigma_min=50"]):
        with pytest.raises(UserError, match="eval.sampler"):
            config.load([CI], bad)


@pytest.mark.parametrize("system_files", [["configs/digits/default_digits_configs.yaml"],
                                          ["configs/gano/grf_32px.yaml"]])
def test_systems_without_a_sigma_grid_keep_their_own_validation_sampling(system_files):
    cfg = config.load([ROOT / f for f in system_files])
    assert _same(build.validation_sampler_setup(cfg), build.sampler_setup(cfg))


def _train(tmp_path, *extra):
    cfg = config.load([CI], [*TINY, *extra])
    trainer = build.build_trainer(cfg, tmp_path, None, progress=False)
    net = trainer.sampling_model()
    counted = {"validation": 0}

    def count(module, args, output):
        if not torch.is_grad_enabled():             # sampling, not the training step
            counted["validation"] += args[0].shape[0]

    net.register_forward_hook(count)
    trainer.fit()
    return trainer, counted["validation"]


def test_validation_sampler_changes_neither_training_nor_eval_time_bookkeeping(tmp_path):
    """Fast and Langevin validation, and validation on more samples: the same training, the predicted
    number of network evaluations, and eval_time, the part of the run's time spent validating, in
    every results.json row."""
    fast, fast_calls = _train(tmp_path / "fast")
    slow, slow_calls = _train(tmp_path / "slow", "eval.sampler=null")
    more, more_calls = _train(tmp_path / "more", "Ntest=16")
    # Two records (record_interval 1, 2 epochs) of Ntest = 4 samples with the EMA weights:
    # dpm_solver_2m on 10 levels, annealed Langevin on L = 5 levels with T = 2 and a final denoising.
    assert fast_calls == 2 * 4 * 10
    assert slow_calls == 2 * 4 * (5 * 2 + 1)
    assert more_calls == 4 * fast_calls
    for other in (slow, more):
        for a, b in zip(fast.model.state_dict().values(), other.model.state_dict().values()):
            assert torch.equal(a, b)
    rows_fast = [json.loads(line) for line in (tmp_path / "fast" / "results.json").read_text().splitlines()]
    rows_slow = [json.loads(line) for line in (tmp_path / "slow" / "results.json").read_text().splitlines()]
    assert [r["loss"] for r in rows_fast] == [r["loss"] for r in rows_slow]
    assert rows_fast[0]["w_total"] != rows_slow[0]["w_total"]   # the samples did come from other samplers
    for rows in (rows_fast, rows_slow):
        assert 0 < rows[0]["eval_time"] < rows[1]["eval_time"] <= rows[1]["time"]
    assert checkpoint.load(tmp_path / "fast" / "model.pt")["eval_seconds"] == pytest.approx(
        rows_fast[-1]["eval_time"], abs=0.01)


def test_checkpoint_selection_rules():
    from model_code.trainer import noise_of, select_checkpoint

    values = {"w_total": 0.30, "floor_w_total_p05": 0.04, "floor_w_total_p95": 0.10}
    assert noise_of(values, "w_total") == pytest.approx(0.03)
    assert noise_of({"loss": 1.0}, "loss") == 0.0                              # no floor: the plain best
    assert select_checkpoint(0.31, 0.29, 0.03, "within_noise")                  # within the noise: the later one
    assert not select_checkpoint(0.33, 0.29, 0.03, "within_noise")
    assert not select_checkpoint(0.31, 0.29, 0.03, "best")
    assert select_checkpoint(0.28, 0.29, 0.0, "best")


@pytest.mark.parametrize("rule", ["within_noise", "best"])
def test_the_kept_checkpoint_follows_the_rule(tmp_path, rule):
    from model_code.trainer import noise_of, select_checkpoint

    _train(tmp_path, "epochs=4", f"train.select={rule}")
    rows = [json.loads(line) for line in (tmp_path / "results.json").read_text().splitlines()]
    best, kept = float("inf"), None
    for r in rows:
        if select_checkpoint(r["w_total"], best, noise_of(r, "w_total"), rule):
            kept = r["step"]
        best = min(best, r["w_total"])
    assert checkpoint.load(tmp_path / "model.w_total.pt")["step"] == kept
    assert checkpoint.load(tmp_path / "model.pt")["best"]["w_total"] == pytest.approx(best)
