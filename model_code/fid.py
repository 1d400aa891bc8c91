"""Frechet distances: the formula, and FID (Heusel et al. 2017) through clean-fid.

frechet_distance is |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}) between two Gaussians,
the project's one implementation of it (digits_classifier.py's Frechet distance uses it, and it is
tested against direct formulas). frechet_interval and frechet_floor_interval give the sampling
spread of a Frechet distance between feature sets and of its real-vs-real floor (percentile
bootstraps, seeded torch generator).

FID (eval.py --mode fid) is clean-fid's (Parmar et al. 2022), so that its numbers compare with
clean-fid's published ones: the images are quantised to 8 bits (as a saved PNG is; grey images
repeated to 3 channels), resized to 299 x 299 by clean-fid's `clean` resizer (PIL bicubic on
float32, channel by channel), and go through clean-fid's feature function, statistics and
Frechet distance. clean-fid imports torchvision, which does not import beside this project's CPU
torch: FID runs in .venv-vision (scripts/setup_vision_venv.sh), or in any environment with a
matching torch / torchvision and `pip install --no-deps clean-fid==0.1.35`; elsewhere it is one
UserError saying so. Nothing is downloaded: the feature network is the user's TorchScript file,
either clean-fid's inception-2015-12-05.pt (run through clean-fid's own wrapper, InceptionV3W) or
any module mapping (B, 3, 299, 299) images in [0, 255] to (B, F) features (clean-fid's custom
feature extractor); reference statistics are clean-fid's .npz files, read from a folder the user
gives or from clean-fid's own stats folder.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

CLEANFID_SPEC = "clean-fid==0.1.35"
CLEANFID_MODE = "clean"
INCEPTION_FILE = "inception-2015-12-05.pt"
RESIZE = "clean: PIL bicubic on float32 images to 299 x 299 (clean-fid)"


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)) (float64; imaginary round-off dropped)."""
    from scipy import linalg

    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    with warnings.catch_warnings():         # singular products (e.g. grey images) are handled below
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():          # singular product: regularise as pytorch-fid does
        offset = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def feature_statistics(features: torch.Tensor):
    f = features.double().cpu().numpy()
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_of_features(a, b) -> float:
    """frechet_distance between Gaussians fitted to two feature sets (N, F); NaN when either has fewer than 2 rows."""
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    return frechet_distance(*feature_statistics(torch.as_tensor(a)), *feature_statistics(torch.as_tensor(b)))


# The sampling spread of a Frechet distance: a bootstrap (resamples, percentiles reported).
FRECHET_RESAMPLES = 200
FRECHET_PERCENTILES = (5, 95)


def _spread(draws: list, estimate: float) -> tuple:
    """FRECHET_PERCENTILES of the bootstrap draws moved so that their mean is `estimate`.

    A resample repeats rows (about 63% of them distinct), so its covariances are noisier and its
    distance carries the estimator's upward bias a second time: the raw percentiles sit above the
    estimate. Taking out that shift (the bootstrap's bias estimate, the mean of the draws minus the
    estimate) leaves the spread of the number itself.
    """
    draws = np.asarray(draws, dtype=np.float64)
    if not len(draws) or not np.isfinite(draws).all() or not np.isfinite(estimate):
        return float("nan"), float("nan")
    shifted = np.maximum(draws - (draws.mean() - estimate), 0.0)     # a distance is never negative
    return tuple(float(v) for v in np.percentile(shifted, FRECHET_PERCENTILES))


def frechet_interval(a, b, generator: torch.Generator, n_resamples: int = FRECHET_RESAMPLES) -> tuple:
    """90% interval (5th, 95th percentile) of the Frechet distance between feature sets a and b.

    Each of n_resamples bootstrap resamples draws len(a) rows of `a` and len(b) rows of `b` with
    replacement (indices from `generator`, so the interval is reproducible); the interval is the
    percentiles of their distances, moved to centre on frechet_of_features(a, b) (_spread). It is
    the range the number scatters over for fresh generated and real sets of the same sizes (another
    seed, another real split), which shrinks like 1 / sqrt(n). Where n is large next to the feature
    dimension (the bias, of order dim / n, is small against that spread) it also holds the distance
    between the two underlying distributions about 90% of the time. (NaN, NaN) below 2 rows.
    """
    a, b = torch.as_tensor(a).double().cpu(), torch.as_tensor(b).double().cpu()
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    draws = []
    for _ in range(int(n_resamples)):
        ia = torch.randint(len(a), (len(a),), generator=generator)
        ib = torch.randint(len(b), (len(b),), generator=generator)
        draws.append(frechet_of_features(a[ia], b[ib]))
    return _spread(draws, frechet_of_features(a, b))


def frechet_floor_interval(real, floor: float, generator: torch.Generator,
                           n_resamples: int = FRECHET_RESAMPLES) -> tuple:
    """90% interval of the real-vs-real floor `floor` (the distance between two disjoint halves of `real`).

    Each resample draws len(real) rows with replacement and takes the distance between its first
    and second len(real) // 2 rows, as the floor does between the halves; the percentiles are moved
    to centre on `floor` (_spread): the range of floors a real set of this size gives. (NaN, NaN)
    below 4 rows.
    """
    real = torch.as_tensor(real).double().cpu()
    half = len(real) // 2
    if half < 2:
        return float("nan"), float("nan")
    draws = []
    for _ in range(int(n_resamples)):
        idx = torch.randint(len(real), (2 * half,), generator=generator)
        draws.append(frechet_of_features(real[idx[:half]], real[idx[half:]]))
    return _spread(draws, floor)


# ----------------------------------------------------------------------------- FID through clean-fid

def cleanfid():
    """clean-fid's fid module, or one UserError naming what to install."""
    try:
        import torchvision  # noqa: F401  clean-fid needs it; one built for another torch fails here already
        from cleanfid import fid as cleanfid_fid
    except Exception as err:   # ImportError, or a torchvision built for another torch (RuntimeError, OSError)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"--mode fid computes FID with clean-fid, which cannot be imported here ({first[:120]}): "
                        f"run `make venv-vision` and use .venv-vision/bin/python, or install a torchvision built "
                        f"for this torch and `pip install --no-deps {CLEANFID_SPEC}`") from None
    return cleanfid_fid


def backend() -> str:
    from importlib import metadata

    try:
        return f"clean-fid {metadata.version('clean-fid')}"
    except metadata.PackageNotFoundError:
        return "clean-fid"


def load_feature_model(path, device="cpu"):
    """(model, description) for clean-fid's feature function: its InceptionV3W around the Inception
    TorchScript file, or any other TorchScript module as a custom feature extractor."""
    cleanfid()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--fid_weights file not found: {path}")
    try:
        with warnings.catch_warnings():     # newer torch calls TorchScript deprecated; the Inception file is one
            warnings.filterwarnings("ignore", message="`torch.jit", category=FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path} is not a TorchScript feature extractor ({first[:160]}); a PyTorch state dict "
                        f"(e.g. pytorch-fid's pt_inception-*.pth) is not supported") from None
    # The Inception file's convolutions sit in `layers`, which InceptionV3W calls on (x - 128) / 128.
    if not hasattr(module, "layers"):
        return module.to(device).eval(), "TorchScript feature extractor (clean-fid custom_feat_extractor)"
    from cleanfid.inception_torchscript import InceptionV3W

    # InceptionV3W takes a folder holding the file under its published name.
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`torch.jit", category=FutureWarning)
        folder = path.parent
        if path.name != INCEPTION_FILE:
            folder = Path(tmp)
            os.symlink(path.resolve(), folder / INCEPTION_FILE)
        model = InceptionV3W(str(folder), download=False, resize_inside=False)
    return model.to(device).eval(), "Inception-v3 TorchScript (clean-fid InceptionV3W)"


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 of images (N, 1 | 3, H, W) in [0, 1]: rounded as a saved PNG is, grey repeated;
    NaN becomes 0."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise UserError(f"FID takes images (N, 1 or 3, H, W); got shape {tuple(images.shape)}")
    x = torch.round(torch.nan_to_num(images.detach().float().cpu(), nan=0.0).clamp(0, 1) * 255).to(torch.uint8)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def features(model, images: torch.Tensor, batch_size: int = 64, device="cpu", verbose: bool = False) -> np.ndarray:
    """(N, F) clean-fid features of images (N, C, H, W) in [0, 1] (cleanfid.fid.get_model_features, `clean`
    resize)."""
    cf = cleanfid()
    u8 = to_uint8(images)
    if len(u8) == 0:
        raise UserError("FID needs images; got none")
    starts = iter(range(0, len(u8), batch_size))

    def serve(_latents):
        # get_model_features asks a generator for batch_size images per call and cuts the last call's
        # surplus off, so the last batch is padded with copies of its last image.
        i = next(starts)
        batch = u8[i:i + batch_size]
        if len(batch) < batch_size:
            batch = torch.cat([batch, batch[-1:].expand(batch_size - len(batch), -1, -1, -1)])
        return batch

    with torch.random.fork_rng(devices=[]):       # its latents (ignored here) must not move the caller's RNG
        return cf.get_model_features(serve, model, mode=CLEANFID_MODE, z_dim=1, num_gen=len(u8),
                                     batch_size=batch_size, device=torch.device(device), verbose=verbose)


def fid(model, fake: torch.Tensor, real: torch.Tensor | None = None, reference=None, batch_size: int = 64,
        device="cpu", verbose: bool = False) -> float:
    """clean-fid's FID of `fake` against `real` (images) or `reference` ((mu, sigma) statistics)."""
    cf = cleanfid()
    fake_features = features(model, fake, batch_size, device, verbose)
    if reference is not None and np.shape(reference[0]) != fake_features.shape[1:]:
        raise UserError(f"the reference statistics have {np.shape(reference[0])[0]} features, the feature "
                        f"extractor gives {fake_features.shape[1]}")
    try:
        if reference is None:
            return float(cf.fid_from_feats(fake_features, features(model, real, batch_size, device, verbose)))
        return float(cf.frechet_distance(np.mean(fake_features, axis=0), np.cov(fake_features, rowvar=False),
                                         *reference))
    except ValueError as err:       # clean-fid's "Imaginary component ..." of an ill-conditioned product
        raise UserError(f"clean-fid could not compute the FID ({err}); more samples (--num_gen) give better "
                        f"conditioned covariances") from None


def stats_file_name(name: str, split: str, resolution: int) -> str:
    """The file name clean-fid gives reference statistics (cleanfid.features.get_reference_statistics)."""
    res = "na" if split == "custom" else resolution
    return f"{name}_{CLEANFID_MODE}_{split}_{res}.npz".lower()


def reference_statistics(name: str, split: str, resolution: int, stats_dir=None):
    """(mu, sigma, file) of clean-fid reference statistics: from stats_dir when given, else from clean-fid's
    own stats folder through clean-fid's get_reference_statistics; never downloaded."""
    cleanfid()
    import cleanfid as package

    file_name = stats_file_name(name, split, resolution)
    if stats_dir is not None:
        path = Path(stats_dir) / file_name
        if not path.is_file():
            raise UserError(f"clean-fid reference statistics {file_name} not found in --fid_stats_dir {stats_dir}")
        try:
            with np.load(path) as stats:
                return stats["mu"], stats["sigma"], str(path)
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"{path} is not clean-fid reference statistics (an .npz with mu and sigma): "
                            f"{str(err)[:120]}") from None
    own = Path(package.__file__).parent / "stats" / file_name
    if not own.is_file():
        raise UserError(f"clean-fid reference statistics {file_name} are not in clean-fid's stats folder "
                        f"({own.parent}) and cannot be downloaded here: pass --fid_stats_dir FOLDER holding it")
    from cleanfid.features import get_reference_statistics

    # the file is present, so clean-fid reads it rather than downloading it
    mu, sigma = get_reference_statistics(name, resolution, mode=CLEANFID_MODE, split=split)
    return mu, sigma, str(own)
