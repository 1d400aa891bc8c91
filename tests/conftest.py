"""Fixtures shared by several test modules."""
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
HEAT_CONFIG = str(ROOT / "configs" / "digits" / "default_digits_configs.yaml")
HEAT_K = 5
HEAT_TINY = ["model.unet.model_channels=8", f"model.K={HEAT_K}", "training.batch_size=16", "training.n_eval=16",
             "eval.batch_size=16", "training.n_iters=3", "training.n_samples=4", "model.unet.num_heads=1"]


@pytest.fixture(scope="session")
def heat_run(tmp_path_factory):
    """A 3-step heat-dissipation run on digits (train.py --config), shared read-only by the tests."""
    from model_code.image_runs import train_main

    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("heat") / "run"
    assert train_main(["--config", HEAT_CONFIG, "--workdir", str(work), "--quiet", *HEAT_TINY]) == 0
    return work
