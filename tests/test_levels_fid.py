"""Frechet distance (model_code/fid.py) against direct formulas, and eval.py's elbo / fid / frechet on
image runs: their numbers recomputed from what they wrote. FID itself is clean-fid's, which needs
torchvision: its tests are in tests/vision/test_cleanfid.py (.venv-vision); here, its flags and the
one-line error where it cannot be imported."""
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

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


def test_fid_flags_and_the_error_where_clean_fid_cannot_be_imported(runs, tmp_path, monkeypatch, capsys):
    import helpers

    run = runs["heat_digits"]
    weights = tmp_path / "any.pt"
    weights.write_bytes(b"")
    with pytest.raises(UserError, match="needs --fid_weights"):
        eval_script.main(["--exp_name", str(run), "--mode", "fid"])
    for flags, message in (
            (["--mode", "elbo", "--dataset_name_cleanfid", "cifar10"], "--dataset_name_cleanfid applies to --mode fid"),
            (["--mode", "fid", "--fid_stats_dir", "x"], "give --dataset_name_cleanfid NAME too"),
            (["--mode", "fid", "--dataset_split", "test"], "--dataset_split test names clean-fid statistics"),
            (["--mode", "fid", "--dataset_name_cleanfid", "cifar10", "--dataset_split", "valid"],
             "splits train | test | custom"),
            (["--mode", "fid", "--dataset_name_cleanfid", "../x"], "must be a clean-fid data set name")):
        with pytest.raises(UserError, match=message):
            eval_script.main(["--exp_name", str(run), "--fid_weights", str(weights), *flags])
    # torchvision missing (as in .venv) or broken: one line naming what to install, before any sampling
    monkeypatch.setitem(sys.modules, "torchvision", None)
    status, lines = helpers.cli_exit(capsys, eval_script.main, "eval.py", "--exp_name", run, "--mode", "fid",
                                     "--fid_weights", weights, "--quiet")
    assert status == 2 and len(lines) == 1
    assert "clean-fid" in lines[0] and "make venv-vision" in lines[0] and "pip install --no-deps clean-fid" in lines[0]
    assert not (run / "eval").exists()


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
    # the evaluation log line of the inverse-heat code, beside metrics.json
    assert (out / "elbo_log.txt").read_text() == f"{run / 'model.pt'} NELBO (bits/dim): {bpd!r}\n"
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
