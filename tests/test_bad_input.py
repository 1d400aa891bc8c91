"""User mistakes and failures that must end cleanly, with nothing good overwritten."""
import sys
from pathlib import Path

import pytest
import torch

from model_code import build, checkpoint, config
from model_code.errors import UserError
from model_code.trainer import TrainingDiverged

from systems import ROOT, SYSTEMS

sys.path.insert(0, str(ROOT))
import eval as eval_script  # noqa: E402


def _config(name, *extra):
    files, overrides = SYSTEMS[name]
    return config.load([str(ROOT / f) for f in files], [*overrides, *extra])


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, system, volcano_dir):
    """From the step after the first model.pt on, every loss the process backpropagates is NaN (GANO: the
    critic's, then the generator's): the step after that reports it, training stops with one line, and model.pt
    still holds the finite weights of the last checkpoint."""
    torch.set_num_threads(1)
    trainer = build.build_trainer(_config(system, "train.tensorboard=false"), tmp_path, str(volcano_dir))
    first = trainer.s.checkpoint_interval * trainer.s.steps_per_unit        # the step of the first model.pt
    train_step = trainer.process.train_step

    def poisoned(model, batch, generator, shard, step, update):
        def bad(loss, parameters=None):
            update(loss * float("nan") if step >= first else loss, parameters)
        return train_step(model, batch, generator, shard, step, bad)

    trainer.process.train_step = poisoned
    with pytest.raises(TrainingDiverged, match=f"became nan at step {first + 1};.* last good checkpoint is kept"):
        trainer.fit()
    state = checkpoint.load(tmp_path / "model.pt")
    assert state["step"] == first
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_corrupt_and_truncated_checkpoints_are_one_line_errors(tmp_path, trained):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.w_total.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        eval_script.main(["--exp_name", str(run), "--mode", "generate"])
    good = (trained("interpolant_grf") / "model.pt").read_bytes()
    (run / "model.w_total.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match="cannot read checkpoint"):
        eval_script.main(["--exp_name", str(run), "--mode", "generate"])
    # a foreign file posing as a checkpoint, and one of the older formats
    torch.save({"weights": torch.zeros(2)}, run / "model.w_total.pt")
    with pytest.raises(UserError, match="not a checkpoint of this project"):
        eval_script.main(["--exp_name", str(run), "--mode", "generate"])
    torch.save({"format_version": 1, "kind": "levels"}, run / "model.w_total.pt")      # format 1: no checksum
    with pytest.raises(UserError, match="written by an older version"):
        eval_script.main(["--exp_name", str(run), "--mode", "generate"])
    assert not (run / "eval").exists()


def test_eval_on_a_folder_without_checkpoints_names_the_problem(tmp_path):
    with pytest.raises(UserError, match="holds no checkpoint"):
        eval_script.main(["--exp_name", str(tmp_path), "--mode", "generate"])
    with pytest.raises(UserError, match="run folder not found"):
        eval_script.main(["--exp_name", str(tmp_path / "nope"), "--mode", "generate"])
    with pytest.raises(UserError, match="--mode must be one of"):
        eval_script.main(["--exp_name", str(tmp_path), "--mode", "dance"])
    assert not (tmp_path / "eval").exists()


def test_bad_sampler_settings(trained):
    run = trained("interpolant_grf")
    base = ["--exp_name", str(run), "--savedir", str(run.parent / "never")]
    with pytest.raises(UserError, match="unknown sampler 'magic'"):
        eval_script.main([*base, "--mode", "generate", "--sampler", "magic"])
    with pytest.raises(UserError, match="--factor must be >= 1"):
        eval_script.main([*base, "--mode", "superres", "--factor", "0"])
    with pytest.raises(UserError, match="sigma_min must lie in"):
        eval_script.main([*base, "--mode", "generate", "--sampler", "heun_ode", "--sigma_min", "1e9"])
    with pytest.raises(UserError, match="--delta applies to levels runs only"):
        eval_script.main([*base, "--mode", "generate", "--delta", "0.1"])
    with pytest.raises(UserError, match=r"snapshots/model\.5\.pt not found.*model\.pt"):
        eval_script.main([*base, "--mode", "generate", "--checkpoint", "5"])
    toy = trained("toy")
    with pytest.raises(UserError, match="a toy run samples with euler_maruyama"):
        eval_script.main(["--exp_name", str(toy), "--mode", "score", "--sampler", "dpm_solver_2m"])
    assert not (run.parent / "never").exists() and not (toy / "eval").exists()
    assert not Path(run / "eval").exists()
