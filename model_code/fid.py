"""Frechet Inception distance from a local feature extractor (Heusel et al. 2017).

FID = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}) between Gaussians fitted to the
features of generated and real images. Inception weights cannot be downloaded on these
machines, so the extractor is a local TorchScript file that maps (B, 3, 299, 299) images
with values in [0, 255] to (B, F) features, e.g. clean-fid's ``inception-2015-12-05.pt``
(called with ``return_features=True`` when its forward takes that argument). Grey images
are repeated to 3 channels and every image is resized bilinearly to 299 x 299.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError

INCEPTION_SIZE = 299


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


def load_extractor(path, device="cpu"):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--fid_weights file not found: {path}")
    try:
        model = torch.jit.load(str(path), map_location=device)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path} is not a TorchScript feature extractor ({first[:160]}); a PyTorch state dict "
                        f"(e.g. pytorch-fid's pt_inception-*.pth) is not supported") from None
    return model.eval()


def _takes_return_features(model) -> bool:
    try:
        return "return_features" in str(model.forward.schema)
    except AttributeError:
        return False


@torch.no_grad()
def features(model, images: torch.Tensor, batch_size: int = 64, device="cpu") -> torch.Tensor:
    """(N, F) features of images (N, C, H, W) in [0, 1]."""
    flag = _takes_return_features(model)
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device).float().clamp(0, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False) * 255
        f = model(x, return_features=True) if flag else model(x)
        out.append(f.reshape(len(x), -1).cpu())
    return torch.cat(out)


def fid_from_images(model, fake: torch.Tensor, real: torch.Tensor, batch_size: int = 64, device="cpu") -> float:
    mu1, s1 = feature_statistics(features(model, fake, batch_size, device))
    mu2, s2 = feature_statistics(features(model, real, batch_size, device))
    return frechet_distance(mu1, s1, mu2, s2)
