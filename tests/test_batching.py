"""eval.py's batch size from the free memory (model_code/batching.py): the rule, the measurement, and
samples that do not depend on the batch it picks."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from model_code import batching, build

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import eval as eval_script  # noqa: E402


def test_the_rule_is_half_the_free_memory_over_the_measured_peak_per_sample(monkeypatch):
    monkeypatch.setattr(batching, "available_bytes", lambda device: 10_000_000)
    monkeypatch.setattr(batching, "bytes_per_sample", lambda *a: 300_000.0)
    assert batching.auto_batch_size(None, (1, 8, 8), {}, 1000, "cpu", 64)[0] == 16      # 0.5 x 1e7 / 3e5
    assert batching.auto_batch_size(None, (1, 8, 8), {}, 5, "cpu", 64)[0] == 5          # never more than n
    # a CPU also keeps a batch's live tensors under CPU_BATCH_BYTES (64 MiB): 2**26 / 3e6 = 22
    monkeypatch.setattr(batching, "available_bytes", lambda device: 10 ** 12)
    monkeypatch.setattr(batching, "bytes_per_sample", lambda *a: 3_000_000.0)
    batch, how = batching.auto_batch_size(None, (1, 8, 8), {}, 1000, "cpu", 64)
    assert batch == 22 and how["rule"].startswith("CPU")
    monkeypatch.setattr(batching, "bytes_per_sample", lambda *a: 1e12)
    assert batching.auto_batch_size(None, (1, 8, 8), {}, 5, "cpu", 64)[0] == 1          # at least one
    monkeypatch.setattr(batching, "bytes_per_sample", lambda *a: None)
    batch, how = batching.auto_batch_size(None, (1, 8, 8), {}, 100, "cpu", 64)
    assert batch == 64 and "eval.batch_size" in how["rule"]


def test_the_probe_runs_the_first_two_levels_of_the_sampler():
    sigmas = [5.0, 2.0, 1.0, 0.5]
    assert batching._probe_options({"sampler": "annealed_langevin", "sigmas": sigmas, "T": 3}) == {
        "sampler": "annealed_langevin", "sigmas": [5.0, 2.0], "T": 1}
    assert batching._probe_options({"n_steps": 500}) == {"n_steps": 2}
    assert batching._probe_options({"delta": 0.01}) is None


def test_the_peak_of_live_tensors_is_counted_exactly():
    import torch

    counter = batching._PeakTensorBytes()
    with counter:
        x = torch.ones(2, 8, 64, 64)                       # 256 KiB
        y = x * 2                                          # 256 KiB
        del x
        z = torch.fft.rfft2(y)                             # 2 x 8 x 64 x 33 complex64: 264 KiB
        del y, z
        w = torch.zeros(10)                                # 40 bytes, after the peak
    assert counter.peak == 2 * 8 * 64 * 64 * 4 + 2 * 8 * 64 * 33 * 8       # y and z; x was freed
    assert counter.current == w.numel() * 4


def test_the_measured_peak_per_sample_grows_with_the_grid(trained):
    run = build.load_run(trained("ve_volcano"), "model.pt", "cpu")
    options = build.sampler_setup(run.cfg, "dpm_solver_2m", 4)
    small = batching.bytes_per_sample(run, (2, 16, 16), options, "cpu")
    large = batching.bytes_per_sample(run, (2, 64, 64), options, "cpu")
    sample_bytes = 2 * 64 * 64 * 4
    # The network's activations are many times the sample (width 8), and grow with the pixels.
    assert large > 8 * sample_bytes and 8 < large / small < 32


def test_auto_batches_give_the_same_samples_and_metrics_json_says_how(trained, volcano_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(volcano_dir))
    run = tmp_path / "run"
    shutil.copytree(trained("ve_volcano"), run)
    common = ["--exp_name", str(run), "--mode", "generate", "--Ntest", "5", "--sampler", "dpm_solver_2m",
              "--steps", "3", "--quiet"]
    assert eval_script.main([*common, "--tag", "auto"]) == 0                 # auto is the default
    assert eval_script.main([*common, "--tag", "one", "--val_batch_size", "1"]) == 0
    auto, one = (json.loads((run / "eval" / t / "metrics.json").read_text()) for t in ("auto", "one"))
    assert "measured peak per sample" in auto["batching"]["rule"] and 1 <= auto["batching"]["batch_size"] <= 5
    assert one["batching"] == {"batch_size": 1, "rule": "--val_batch_size"}
    for summary in (auto, one):
        g = summary["generation"]
        assert g["samples_per_second"] == pytest.approx(5 / g["seconds"]) and g["seconds"] > 0
    a, b = (np.load(run / "eval" / t / "samples.npz")["samples"] for t in ("auto", "one"))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(a).max())
