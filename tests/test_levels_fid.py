"""Frechet distance (model_code/fid.py) against direct formulas, the local-extractor pipeline, and
eval.py's elbo / fid / frechet on image runs: their numbers recomputed from what they wrote."""
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from model_code import build, fid
from model_code.errors import UserError


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import eval as eval_script  # noqa: E402


def test_frechet_distance_of_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.1, 2, 6), rng.uniform(0.1, 2, 6)
    direct = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert math.isclose(fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), direct, rel_tol=1e-9)


def test_frechet_distance_of_general_gaussians():
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(5), m2 @ m2.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    # tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2), the latter symmetric: eigenvalues, no sqrtm.
    w, v = np.linalg.eigh(s1)
    r = v @ np.diag(np.sqrt(w)) @ v.T
    cross = np.sqrt(np.linalg.eigvalsh(r @ s2 @ r)).sum()
    direct = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross
    assert math.isclose(fid.frechet_distance(mu1, s1, mu2, s2), direct, rel_tol=1e-8)
    assert abs(fid.frechet_distance(mu1, s1, mu1, s1)) < 1e-8


class _TinyFeatures(nn.Module):
    def forward(self, x):
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], dim=1)


def test_local_torchscript_extractor(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(_TinyFeatures()), str(path))
    model = fid.load_extractor(path)
    g = torch.Generator().manual_seed(0)
    real = torch.rand(40, 1, 8, 8, generator=g)
    feats = fid.features(model, real, batch_size=16)
    assert feats.shape == (40, 6)
    # Grey -> 3 equal channels, [0, 1] -> [0, 255] at 299 x 299: channel means are 255 * image means.
    assert torch.allclose(feats[:, 0], 255 * real.mean((1, 2, 3)), rtol=1e-4)
    # FID(real, real) is exactly 0; its round-off scales with the features (~255), so bound it relative to
    # tr(S), float64 as frechet_distance computes. Grey images give 3 equal channels, so the 6 x 6 covariance
    # S has rank 2 and sqrtm(S S) has 4 zero eigenvalues: their round-off, ~eps |S|^2, comes back as
    # ~sqrt(eps) |S|, hence d sqrt(eps_64) tr(S) (x 10): 2.4e-4 here, against 3e-6 to 3e-13 measured
    # (BLAS- and thread-dependent); a wrong mean or trace term is of order tr(S) = 273 or more.
    d = feats.shape[1]
    trace = np.trace(fid.feature_statistics(feats)[1])
    assert abs(fid.fid_from_images(model, real, real, 16)) <= 10 * d * math.sqrt(np.finfo(np.float64).eps) * trace
    # RGB images: S is full rank (condition ~20), so the round-off is ~eps_64 tr(S) (~3e-15 tr(S) measured).
    rgb = torch.rand(40, 3, 8, 8, generator=g)
    rgb_trace = np.trace(fid.feature_statistics(fid.features(model, rgb, batch_size=16))[1])
    assert abs(fid.fid_from_images(model, rgb, rgb, 16)) <= 1e-10 * rgb_trace
    assert fid.fid_from_images(model, real * 0.5, real, 16) > 100
    bad = tmp_path / "bad.pth"
    torch.save({"w": torch.zeros(1)}, bad)
    with pytest.raises(UserError, match="TorchScript"):
        fid.load_extractor(bad)
    with pytest.raises(UserError, match="not found"):
        fid.load_extractor(tmp_path / "none.pt")


# --------------------------------------------------------------------------- eval.py on image runs

@pytest.fixture(scope="module")
def runs(trained, tmp_path_factory):
    return {name: _copy(trained, tmp_path_factory, name) for name in ("heat_digits", "starter_digits")}


def _copy(trained, tmp_path_factory, name):
    """A private copy of the session's trained run of `name` (this module writes into it)."""
    dest = tmp_path_factory.mktemp(f"copy_{name}") / name
    shutil.copytree(trained(name), dest)
    return dest


def _evaluate(run, *flags):
    assert eval_script.main(["--exp_name", str(run), "--quiet", *map(str, flags)]) == 0
    return max((run / "eval").iterdir(), key=lambda p: p.stat().st_mtime_ns)


def _valid(run):
    loaded = build.load_run(run, "model.pt", "cpu")
    return build.build_dataset(loaded.cfg, None).valid


def test_fid_of_a_levels_run_is_the_distance_of_its_samples(runs, tmp_path):
    run = runs["heat_digits"]
    weights = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(_TinyFeatures()), str(weights))
    with pytest.raises(UserError, match="needs --fid_weights"):
        eval_script.main(["--exp_name", str(run), "--mode", "fid"])
    assert not (run / "eval").exists()
    out = _evaluate(run, "--mode", "fid", "--fid_weights", weights, "--Ntest", "12", "--val_batch_size", "5")
    assert out.name == "fid-latest-levels-delta0.0125-gen12"
    summary = json.loads((out / "metrics.json").read_text())
    samples = torch.from_numpy(np.load(out / "samples.npz")["samples"])
    assert samples.shape == (12, 1, 8, 8) and summary["n"] == 12
    expected = fid.fid_from_images(fid.load_extractor(weights), samples, _valid(run), 16)
    assert math.isfinite(summary["metrics"]["fid"]) and summary["metrics"]["fid"] > 0
    assert summary["metrics"]["fid"] == pytest.approx(expected, rel=1e-6)
    # the samples do not depend on the batch size: seed + k is sample k
    loaded = build.load_run(run, "model.pt", "cpu")
    again = loaded.process.sample(loaded.model, [eval_script.parse_args(["--exp_name", "x", "--mode", "fid"]).seed + k
                                                 for k in range(3)], loaded.shape, "cpu")
    assert torch.allclose(again, samples[:3], atol=1e-5)


def test_frechet_of_an_image_run(runs):
    from model_code.digits_classifier import frechet_digits

    run = runs["starter_digits"]
    out = _evaluate(run, "--mode", "frechet", "--Ntest", "16")
    assert out.name == "frechet-latest-heun_ode-steps3-gen16"
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert math.isfinite(m["frechet"]) and m["frechet"] > 0 and 0 < m["frechet_floor"] < m["frechet"]
    samples = torch.from_numpy(np.load(out / "samples.npz")["samples"])
    assert m["frechet"] == pytest.approx(frechet_digits(samples, _valid(run)), rel=1e-6)
    assert "note" not in m and m["n_nonfinite"] == 0


def test_elbo_of_a_levels_run(runs):
    run = runs["heat_digits"]
    out = _evaluate(run, "--mode", "elbo", "--n_images", "12", "--val_batch_size", "5")
    assert out.name == "elbo-latest-delta0.0125-valid-n12"
    summary = json.loads((out / "metrics.json").read_text())
    terms = np.load(out / "terms.npz")["terms"]
    assert terms.shape == (12, summary["K"] + 1) and np.isfinite(terms).all()
    bpd = summary["metrics"]["bpd"]
    assert math.isfinite(bpd) and bpd > 0
    assert bpd == pytest.approx(terms.sum(1).mean() / (64 * math.log(2)), rel=1e-9)
    assert sum(summary["per_level_bpd"]) == pytest.approx(bpd, rel=1e-9)
    # seeded: the same seed and batch size give the same value; one generator runs through the batches, so
    # another batch size draws other noise (the same estimator: close), as does another seed
    same = _evaluate(run, "--mode", "elbo", "--n_images", "12", "--val_batch_size", "5", "--tag", "same")
    assert json.loads((same / "metrics.json").read_text())["metrics"]["bpd"] == bpd
    batch = _evaluate(run, "--mode", "elbo", "--n_images", "12", "--tag", "batch")
    assert json.loads((batch / "metrics.json").read_text())["metrics"]["bpd"] == pytest.approx(bpd, rel=0.05)
    other = _evaluate(run, "--mode", "elbo", "--n_images", "12", "--seed", "1")
    assert other.name == "elbo-latest-delta0.0125-valid-n12-seed1"
    assert json.loads((other / "metrics.json").read_text())["metrics"]["bpd"] != bpd
    train = _evaluate(run, "--mode", "elbo", "--n_images", "4", "--dataset_split", "train", "--delta", "0.05")
    assert train.name == "elbo-latest-delta0.05-train-n4"
