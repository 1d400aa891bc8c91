"""Parts combine across systems where the maths allows: each combination trains through train.py,
its loss falls, and its samples have the data's shape and are finite.

- heat dissipation (levels process) on Gaussian-random-field data with an FNO;
- score-based VE with GRF noise on digits with a U-Net;
- functional flow matching (rectified flow, GRF noise) on digits with a U-Net.
"""
import json

import pytest
import torch

import train
from model_code import build, config
from systems import ROOT

TINY_UNET = ["net.type=unet", "net.unet.model_channels=8", "net.unet.channel_mult=[1,2]", "net.unet.num_res_blocks=1",
             "net.unet.num_heads=1", "net.unet.dropout=0.0"]
STEPS = ["train.epochs=null", "train.steps=40", "train.log_interval=10", "train.record_interval=40",
         "train.checkpoint_interval=40", "eval.n_samples=16", "eval.batch_size=16", "eval.n_plot=4",
         "train.tensorboard=false", "train.device=cpu", "train.threads=1", "optim.lr=3e-3", "optim.warmup=0"]

COMBINATIONS = {
    "heat_on_grf_fields_with_fno": (["exps/json/ci.json"], [
        "process.type=levels", "process.levels.K=5", "process.levels.blur_sigma_max=4.0", "data.resolution=8",
        "data.grf_n_train=64", "data.grf_n_valid=32", "net.type=fno", "net.width=8", "net.n_modes=3",
        "eval.evaluators=[field_stats]", *STEPS]),
    "ve_grf_noise_on_digits_with_unet": (["configs/digits/digits_ve_unet.yaml"], [
        "noise.type=grf", "noise.length_scale=0.1", "data.max_examples=256", "train.batch_size=32",
        "sampler.steps=4", "eval.evaluators=[frechet]", *TINY_UNET, *STEPS]),
    "flow_matching_grf_noise_on_digits_with_unet": (["configs/starter/rectified_flow_digits.yaml"], [
        "noise.type=grf", "noise.length_scale=0.1", "data.max_examples=256", "train.batch_size=32",
        "sampler.steps=4", "eval.evaluators=[frechet]", *TINY_UNET, *STEPS]),
}


@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_combination_trains_and_samples(name, tmp_path):
    files, overrides = COMBINATIONS[name]
    run = tmp_path / name
    torch.manual_seed(0)
    assert train.main(["--config", *[str(ROOT / f) for f in files], "--savedir", str(run), "--quiet",
                       *overrides]) == 0
    rows = [json.loads(line) for line in (run / "results.json").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert rows[-1]["loss"] < rows[0]["loss"]                      # it learns
    loaded = build.load_run(run, "model.pt", "cpu")
    samples = loaded.process.sample(loaded.model, [0, 1, 2], loaded.shape, "cpu", **build.sampler_setup(loaded.cfg))
    assert samples.shape == (3, *loaded.shape) and torch.isfinite(samples).all()
    metric = "w_total" if "fields" in name else "frechet"
    assert rows[-1][metric] > 0 and rows[-1][metric] == rows[-1][metric]


def test_heat_on_fields_keeps_the_mean_and_smooths_monotonically():
    """The Neumann heat semigroup on a GRF field: the spatial mean is exact at every level and the variance
    about it decreases with k (every non-constant DCT mode decays by exp(-lambda t_k))."""
    cfg = config.load([ROOT / "exps/json/ci.json"], ["process.type=levels", "process.levels.K=6",
                                                        "data.resolution=16", "net.type=fno"])
    data = build.build_dataset(cfg, None)
    process = build.build_process(cfg, data, None)
    u = data.train[:8]
    means, variances = [], []
    for k in range(cfg.process.levels.K + 1):
        v = process.fmap.apply(u, torch.full((len(u),), k))
        means.append(v.mean(dim=(-2, -1)))
        variances.append(v.var(dim=(-2, -1)))
    for m in means:
        assert torch.allclose(m, means[0], atol=1e-5 * float(u.abs().max()))
    for a, b in zip(variances, variances[1:]):
        assert (b < a).all()
