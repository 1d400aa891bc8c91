"""FID through clean-fid (model_code/fid.py, eval.py --mode fid), offline: small TorchScript feature
extractors stand for Inception, and every number is recomputed here independently: the `clean`
resize against PIL itself, the distances against the Frechet distance of the features' Gaussians,
the tensor pipeline against clean-fid's own folder pipeline."""
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from model_code import build, fid
from model_code.errors import UserError

# TorchScript is what clean-fid's Inception file is; torch 2.14 calls it deprecated
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import eval as eval_script  # noqa: E402


class QuadrantMeans(nn.Module):
    """(B, 3, 299, 299) -> (B, 12): each channel's mean over the four quadrants, a linear map."""

    def forward(self, x):
        top, bottom = x[:, :, :150], x[:, :, 150:]
        return torch.cat([top[..., :150].mean((2, 3)), top[..., 150:].mean((2, 3)),
                          bottom[..., :150].mean((2, 3)), bottom[..., 150:].mean((2, 3))], dim=1)


class Probe(nn.Module):
    """(B, 3, 299, 299) -> (B, 3 * 9): the resized pixels at a 3 x 3 grid of places."""

    def forward(self, x):
        return x[:, :, 20::120, 33::120].reshape(x.shape[0], -1)


class FakeInception(nn.Module):
    """The shape of clean-fid's Inception TorchScript: convolutions in `layers` (called by clean-fid's
    InceptionV3W on (x - 128) / 128), a forward that takes return_features."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Conv2d(3, 512, 1), nn.Flatten())   # 2048 features

    def forward(self, x, return_features: bool = False):
        return self.layers(x)


def script(module, path):
    torch.jit.save(torch.jit.script(module), str(path))
    return path


def frechet_direct(a: np.ndarray, b: np.ndarray) -> float:
    """The Frechet distance of Gaussians fitted to feature sets a and b, with tr sqrt(S1 S2) from the eigenvalues
    of the symmetric S1^1/2 S2 S1^1/2 (no sqrtm)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)


def pil_bicubic(channel: np.ndarray) -> np.ndarray:
    """PIL's bicubic resize of one float32 channel to 299 x 299, clipped to [0, 255]."""
    return np.asarray(Image.fromarray(channel.astype(np.float32)).resize((299, 299), Image.BICUBIC)).clip(0, 255)


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    # values in [0.2, 0.6] so that a shift by 64 / 255 stays clear of the [0, 255] clip after the bicubic resize
    return torch.round((0.2 + 0.4 * torch.rand(40, 3, 12, 12, generator=g)) * 255) / 255


def test_clean_resize_is_pil_bicubic_on_float32(tmp_path):
    from cleanfid.resize import build_resizer

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    resized = build_resizer(fid.CLEANFID_MODE)(x)
    assert resized.shape == (299, 299, 3) and resized.dtype == np.float32
    for c in range(3):
        assert np.array_equal(resized[:, :, c], pil_bicubic(x[:, :, c]))
    # the pipeline's features of grey [0, 1] images are those pixels: rounded to 8 bits, repeated to 3 channels
    model, _ = fid.load_feature_model(script(Probe(), tmp_path / "probe.pt"))
    grey = torch.from_numpy(rng.uniform(size=(3, 1, 9, 9)).astype(np.float32))
    feats = fid.features(model, grey, batch_size=2)
    for i in range(3):
        u8 = np.round(grey[i, 0].numpy() * 255)
        want = pil_bicubic(u8)[20::120, 33::120]
        assert np.allclose(feats[i].reshape(3, 3, 3), want[None].repeat(3, 0), atol=1e-4)


def test_fid_is_zero_against_itself_and_the_gaussians_distance_otherwise(tmp_path, images):
    model, described = fid.load_feature_model(script(QuadrantMeans(), tmp_path / "quad.pt"))
    assert "custom" in described
    feats = fid.features(model, images, batch_size=16)
    assert feats.shape == (40, 12)
    trace = np.trace(np.cov(feats, rowvar=False))
    assert abs(fid.fid(model, images, images, batch_size=16)) <= 1e-8 * trace
    # 64 grey levels brighter: every feature (a mean of the linear, weight-1 resize) moves by exactly 64 and the
    # covariance stays, so FID = 12 * 64^2
    shifted = images + 64 / 255
    assert fid.fid(model, shifted, images, batch_size=16) == pytest.approx(12 * 64 ** 2, rel=1e-6)
    other = torch.round(torch.rand(40, 3, 12, 12, generator=torch.Generator().manual_seed(1)) * 255) / 255
    value = fid.fid(model, other, images, batch_size=7)        # the batch size does not matter
    assert value == pytest.approx(frechet_direct(fid.features(model, other, 16), feats), rel=1e-6)
    # clean-fid's distance and the project's own formula agree
    mu1, s1 = feats.mean(0), np.cov(feats, rowvar=False)
    f2 = fid.features(model, other, 16)
    assert value == pytest.approx(fid.frechet_distance(f2.mean(0), np.cov(f2, rowvar=False), mu1, s1), rel=1e-6)


def test_tensor_pipeline_matches_clean_fids_own_folder_pipeline(tmp_path, images):
    """cleanfid.fid.compute_fid on PNG folders of the same 8-bit images, with the same custom extractor."""
    from cleanfid.fid import compute_fid

    model, _ = fid.load_feature_model(script(QuadrantMeans(), tmp_path / "quad.pt"))
    other = torch.round(torch.rand(30, 3, 12, 12, generator=torch.Generator().manual_seed(2)) * 255) / 255
    folders = []
    for name, batch in (("a", other), ("b", images)):
        folder = tmp_path / name
        folder.mkdir()
        for i, image in enumerate(fid.to_uint8(batch)):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
        folders.append(str(folder))
    theirs = compute_fid(*folders, mode="clean", custom_feat_extractor=model, num_workers=0, batch_size=8,
                         device=torch.device("cpu"), verbose=False)
    assert fid.fid(model, other, images, batch_size=16) == pytest.approx(theirs, rel=1e-9)


def test_the_inception_file_goes_through_clean_fids_wrapper(tmp_path, images):
    inception = FakeInception()
    path = script(inception, tmp_path / "my-inception.pt")     # any file name
    model, described = fid.load_feature_model(path)
    assert "InceptionV3W" in described
    feats = fid.features(model, images[:4], batch_size=4)
    assert feats.shape == (4, 2048)
    # InceptionV3W feeds the resized images as (x - 128) / 128 to `layers`
    from cleanfid.resize import build_resizer

    resize = build_resizer("clean")
    for i in range(4):
        x = torch.from_numpy(resize(fid.to_uint8(images[i:i + 1])[0].permute(1, 2, 0).numpy())).permute(2, 0, 1)
        with torch.no_grad():
            want = inception.layers((x[None] - 128) / 128)[0]
        assert torch.allclose(torch.from_numpy(feats[i]), want, atol=1e-5)


def test_reference_statistics_by_clean_fids_file_name(tmp_path, images, monkeypatch):
    import urllib.request

    import cleanfid

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("download attempted"))
    model, _ = fid.load_feature_model(script(QuadrantMeans(), tmp_path / "quad.pt"))
    real = fid.features(model, images, 16)
    mu, sigma = real.mean(0), np.cov(real, rowvar=False)
    assert fid.stats_file_name("CIFAR10", "train", 32) == "cifar10_clean_train_32.npz"
    assert fid.stats_file_name("mine", "custom", 32) == "mine_clean_custom_na.npz"
    folder = tmp_path / "stats"
    folder.mkdir()
    np.savez_compressed(folder / "cifar10_clean_train_12.npz", mu=mu, sigma=sigma)
    got_mu, got_sigma, where = fid.reference_statistics("cifar10", "train", 12, folder)
    assert np.array_equal(got_mu, mu) and where.endswith("cifar10_clean_train_12.npz")
    fake = images.flip(-1)
    value = fid.fid(model, fake, reference=(got_mu, got_sigma), batch_size=16)
    assert value == pytest.approx(frechet_direct(fid.features(model, fake, 16), real), rel=1e-6)
    with pytest.raises(UserError, match="cifar10_clean_test_12.npz not found in --fid_stats_dir"):
        fid.reference_statistics("cifar10", "test", 12, folder)
    # without a folder: clean-fid's own stats folder, read by clean-fid's get_reference_statistics, which finds
    # the file under the name computed here (a different name would make it try a download)
    package = tmp_path / "package"
    (package / "stats").mkdir(parents=True)
    monkeypatch.setattr(cleanfid, "__file__", str(package / "__init__.py"))
    with pytest.raises(UserError, match="not in clean-fid's stats folder .* pass --fid_stats_dir"):
        fid.reference_statistics("cifar10", "train", 12)
    shutil.copy(folder / "cifar10_clean_train_12.npz", package / "stats")
    got_mu, _, where = fid.reference_statistics("cifar10", "train", 12)
    assert np.array_equal(got_mu, mu) and Path(where).parent == package / "stats"
    with pytest.raises(UserError, match="reference statistics have 12 features, the feature extractor gives 27"):
        fid.fid(fid.load_feature_model(script(Probe(), tmp_path / "p.pt"))[0], fake, reference=(mu, sigma))


def test_bad_weights_are_one_clear_error(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"w": torch.zeros(1)}, bad)
    with pytest.raises(UserError, match="TorchScript"):
        fid.load_feature_model(bad)
    with pytest.raises(UserError, match="not found"):
        fid.load_feature_model(tmp_path / "none.pt")


# --------------------------------------------------------------------------- eval.py --mode fid

@pytest.fixture(scope="module")
def heat_run(trained, tmp_path_factory):
    """A private copy of the session's tiny heat-dissipation run on digits."""
    dest = tmp_path_factory.mktemp("copy_heat") / "heat_digits"
    shutil.copytree(trained("heat_digits"), dest)
    return dest


def test_eval_fid_of_a_heat_run(heat_run, tmp_path):
    weights = script(QuadrantMeans(), tmp_path / "quad.pt")
    assert eval_script.main(["--exp_name", str(heat_run), "--quiet", "--mode", "fid", "--fid_weights", str(weights),
                             "--num_gen", "12", "--val_batch_size", "5"]) == 0
    out = heat_run / "eval" / "fid-latest-levels-delta0.0125-gen12"
    summary = json.loads((out / "metrics.json").read_text())
    samples = torch.from_numpy(np.load(out / "samples.npz")["samples"])
    assert samples.shape == (12, 1, 8, 8) and summary["n"] == 12          # --num_gen is the sample count
    loaded = build.load_run(heat_run, "model.pt", "cpu")
    valid = build.build_dataset(loaded.cfg, None).valid
    model, _ = fid.load_feature_model(weights)
    value = summary["metrics"]["fid"]
    assert math.isfinite(value) and value > 0
    assert value == pytest.approx(frechet_direct(fid.features(model, samples), fid.features(model, valid)), rel=1e-6)
    assert summary["n_real"] == len(valid) and summary["split"] == "valid"
    assert summary["fid"]["backend"] == "clean-fid 0.1.35" and summary["fid"]["resize"].startswith("clean: PIL bicubic")
    assert summary["fid"]["weights"] == str(weights) and "valid" in summary["fid"]["reference"]
    # the evaluation log line of the inverse-heat code, beside metrics.json
    assert (out / "fid_log.txt").read_text() == f"{heat_run / 'model.pt'} FID: {value!r}\n"

    # against clean-fid statistics of the same real images: the same number, another folder
    stats = tmp_path / "stats"
    stats.mkdir()
    real = fid.features(model, valid)
    np.savez_compressed(stats / "digits_clean_train_8.npz", mu=real.mean(0), sigma=np.cov(real, rowvar=False))
    assert eval_script.main(["--exp_name", str(heat_run), "--quiet", "--mode", "fid", "--fid_weights", str(weights),
                             "--num_gen", "12", "--dataset_name_cleanfid", "digits", "--fid_stats_dir",
                             str(stats)]) == 0
    ref = json.loads((heat_run / "eval" / "fid-latest-levels-delta0.0125-gen12-digits_train" / "metrics.json")
                     .read_text())
    assert ref["metrics"]["fid"] == pytest.approx(value, rel=1e-6) and ref["n_real"] is None
    assert "digits_clean_train_8.npz" in ref["fid"]["reference"]
    # a missing statistics file stops before any sampling
    with pytest.raises(UserError, match="digits_clean_test_8.npz not found"):
        eval_script.main(["--exp_name", str(heat_run), "--mode", "fid", "--fid_weights", str(weights),
                          "--dataset_name_cleanfid", "digits", "--dataset_split", "test", "--fid_stats_dir",
                          str(stats)])
    assert not (heat_run / "eval" / "fid-latest-levels-delta0.0125-gen10000-digits_test").exists()
