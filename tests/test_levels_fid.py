"""Frechet distance (model_code/fid.py) against direct formulas, and the local-extractor pipeline."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from model_code import fid
from model_code.errors import UserError


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
