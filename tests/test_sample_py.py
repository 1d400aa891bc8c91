"""sample.py: every mode, every forward process, the files it writes and their properties."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model_code.errors import UserError
from model_code.image_runs import train_main

from conftest import HEAT_CONFIG as CONFIG, HEAT_K as K, HEAT_TINY as TINY

ROOT = Path(__file__).resolve().parents[1]

_spec = importlib.util.spec_from_file_location("sample_script", ROOT / "sample.py")
sample_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sample_script)


def _sample(work, *flags):
    assert sample_script.main(["--workdir", str(work), "--quiet", *flags]) == 0
    outs = sorted((work / "additional_samples" / "checkpoint_0").iterdir(), key=lambda p: p.stat().st_mtime)
    return outs[-1]


def _load(out):
    for name in ("final.png", "init.png", "samples.npz", "process.gif"):
        assert (out / name).is_file(), name
    with Image.open(out / "process.gif") as gif:
        assert gif.n_frames == K + 1                 # u_K, ..., u_0
    return np.load(out / "samples.npz")


def test_random_same_init_share_noise(heat_run):
    rnd = _load(_sample(heat_run, "--batch_size", "4", "--config", CONFIG))
    assert rnd["samples"].shape == (4, 1, 8, 8) and rnd["noise"].shape == (4, K, 1, 8, 8)
    assert len({rnd["init"][i].tobytes() for i in range(4)}) == 4

    same = _load(_sample(heat_run, "--batch_size", "4", "--same_init"))
    assert all(np.array_equal(same["init"][i], same["init"][0]) for i in range(4))      # one initial state
    assert np.array_equal(same["init"][0], rnd["init"][0])
    assert len({same["samples"][i].tobytes() for i in range(4)}) == 4                   # different outputs
    assert not np.array_equal(same["noise"][0], same["noise"][1])

    share = _load(_sample(heat_run, "--batch_size", "4", "--share_noise"))
    assert all(np.array_equal(share["noise"][i], share["noise"][0]) for i in range(4))  # one noise sequence
    assert len({share["init"][i].tobytes() for i in range(4)}) == 4
    assert np.allclose(share["samples"][0], rnd["samples"][0], atol=1e-5)              # sample 0 is seed 0's


def test_interpolate(heat_run):
    out = _sample(heat_run, "--interpolate", "--num_points", "6")
    data = _load(out)
    assert data["samples"].shape[0] == 6 and str(data["mode"]) == "interpolate"
    rnd = np.load(next((heat_run / "additional_samples" / "checkpoint_0").glob("random_*")) / "samples.npz")
    assert np.allclose(data["init"][0], rnd["init"][0], atol=1e-5)
    assert np.allclose(data["init"][-1], rnd["init"][1], atol=1e-5)


def test_errors(heat_run):
    with pytest.raises(UserError, match="checkpoint_7"):
        sample_script.main(["--workdir", str(heat_run), "--checkpoint", "7"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "sample.py", "--workdir", str(heat_run / "nope")], cwd=ROOT,
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "not found" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("forward", ["identity", "constant_velocity", "constant_deceleration", "fixed_random",
                                     "random_product"])
def test_every_forward_process_samples(tmp_path, forward):
    torch.set_num_threads(1)
    work = tmp_path / forward
    assert train_main(["--config", CONFIG, "--workdir", str(work), "--quiet", f"model.forward={forward}", *TINY]) == 0
    data = _load(_sample(work, "--batch_size", "3"))
    assert str(data["forward"]) == forward and np.isfinite(data["samples"]).all()
