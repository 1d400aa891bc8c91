"""Fixtures shared by several test modules."""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]      # tests/systems.py, train.py


@pytest.fixture(scope="session")
def volcano_dir(tmp_path_factory):
    """A DATA_DIR with 48 synthetic volcano interferograms (subset_128/synthetic/*.int)."""
    from model_code.data.volcano import write_synthetic_dataset

    folder = tmp_path_factory.mktemp("volcano_data")
    write_synthetic_dataset(folder, 48, seed=0)
    return folder


@pytest.fixture(scope="session")
def trained(tmp_path_factory, volcano_dir):
    """trained(system): the run folder of a finished tiny run of `system` (tests/systems.py), made once per session
    and shared read-only by the tests."""
    import os

    import train
    from systems import train_args

    runs = {}

    def get(system: str) -> Path:
        if system not in runs:
            torch.set_num_threads(1)
            folder = tmp_path_factory.mktemp(system) / "run"
            old = os.environ.get("DATA_DIR")
            os.environ["DATA_DIR"] = str(volcano_dir)
            try:
                assert train.main(train_args(system, folder, "train.threads=1")) == 0
            finally:
                if old is None:
                    os.environ.pop("DATA_DIR")
                else:
                    os.environ["DATA_DIR"] = old
            runs[system] = folder
        return runs[system]

    return get
