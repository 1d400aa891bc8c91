"""User mistakes and failures that must end cleanly, with nothing good overwritten."""
import sys
from pathlib import Path

import pytest
import torch

from model_code import build, checkpoint, config
from model_code.errors import UserError
from model_code.trainer import TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TINY = ["dataset=grf", "resolution=8", "npad=0", "grf_n_train=16", "grf_n_valid=8", "batch_size=8", "epochs=3",
        "record_interval=1", "Ntest=4", "val_batch_size=4", "L=4", "T=1", "arch=fno", "d_co_domain=8",
        "n_layers=2", "n_modes=3", "embedding_dim=8", "n_plot=2", "tensorboard=false"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = build.build_trainer(config.load(None, TINY), tmp_path, None, progress=False)
    objective = trainer.objective
    calls = {"n": 0}

    def poisoned(model, u, generator, shard=slice(None)):
        calls["n"] += 1
        loss = objective(model, u, generator, shard)
        return loss * float("nan") if calls["n"] > 2 * 3 else loss   # 2 steps per epoch + 1 validation batch

    trainer.objective = poisoned
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 3"):
        trainer.fit()
    state = checkpoint.load(tmp_path / "model.pt")
    assert state["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_corrupt_and_truncated_checkpoints_are_one_line_errors(tmp_path):
    import eval as eval_script
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.w_total.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        eval_script.main(["--exp_name", str(run), "--mode", "generate"])
    trainer = build.build_trainer(config.load(None, TINY + ["epochs=1"]), tmp_path / "good", None, progress=False)
    trainer.fit()
    good = (tmp_path / "good" / "model.pt").read_bytes()
    (run / "model.w_total.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match="cannot read checkpoint"):
        eval_script.main(["--exp_name", str(run), "--mode", "generate"])
    assert not (run / "eval").exists()


def test_eval_on_a_folder_without_checkpoints_names_the_problem(tmp_path):
    import eval as eval_script
    with pytest.raises(UserError, match="holds no checkpoint"):
        eval_script.main(["--exp_name", str(tmp_path), "--mode", "generate"])
    with pytest.raises(UserError, match="run folder not found"):
        eval_script.main(["--exp_name", str(tmp_path / "nope"), "--mode", "generate"])


def test_unknown_sampler_and_bad_factor(tmp_path):
    import eval as eval_script
    trainer = build.build_trainer(config.load(None, TINY + ["epochs=1"]), tmp_path, None, progress=False)
    trainer.fit()
    with pytest.raises(UserError, match="unknown sampler 'magic'"):
        eval_script.main(["--exp_name", str(tmp_path), "--mode", "generate", "--sampler", "magic"])
    with pytest.raises(UserError, match="--factor must be >= 1"):
        eval_script.main(["--exp_name", str(tmp_path), "--mode", "superres", "--factor", "0"])
