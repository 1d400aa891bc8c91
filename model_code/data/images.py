"""Image data sets as tensors (N, C, H, W) in [0, 1] on a grid of `levels` grey values (docs/maths.md).

- digits: scikit-learn's 8 x 8 handwritten digits (1797 real images, values 0..16, so
  17 levels), shipped inside scikit-learn: offline. Seeded train / validation split.
- mnist, cifar10: through torchvision, imported lazily, only here. Missing or broken
  torchvision, or data that is absent and cannot be downloaded, is one UserError.
  Training split = the official train set, validation = the official test set.
- folder: every .png/.jpg/.jpeg/.bmp/.webp under a folder (AFHQ / FFHQ style), centre-
  cropped to a square and resized to image_size with PIL; seeded split.

Class labels come with digits (scikit-learn's targets), MNIST and CIFAR-10 (torchvision's
targets), split by the same permutation as the images; image folders have none.

Pixel values are quantised to the data's grid k / (levels - 1), so the discretised
likelihood of levels.py (bins of width 1 / (levels - 1)) is exact for every source.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
DATASETS = ("digits", "mnist", "cifar10", "folder")


@dataclass
class ImageData:
    train: torch.Tensor       # (N, C, H, W) float32 in [0, 1]
    valid: torch.Tensor
    levels: int               # number of grey values per channel (17 for digits, 256 for 8-bit images)
    name: str
    train_labels: Optional[torch.Tensor] = None    # (N,) long class labels, when the data set has them
    valid_labels: Optional[torch.Tensor] = None
    num_classes: int = 0


def quantise(u: torch.Tensor, levels: int) -> torch.Tensor:
    """Round values in [0, 1] to the grid k / (levels - 1)."""
    return torch.round(u.clamp(0, 1) * (levels - 1)) / (levels - 1)


def seeded_split_indices(n: int, valid_fraction: float, seed: int):
    """(train_idx, valid_idx) from one seeded permutation of range(n); the same seed gives the same split."""
    if not 0 < valid_fraction < 1:
        raise UserError(f"data.valid_fraction must be in (0, 1), got {valid_fraction}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_valid = max(1, int(round(valid_fraction * n)))
    return order[n_valid:], order[:n_valid]


def seeded_split(u: torch.Tensor, valid_fraction: float, seed: int):
    """(train, valid) from one seeded permutation; the same seed gives the same split."""
    train_idx, valid_idx = seeded_split_indices(len(u), valid_fraction, seed)
    return u[train_idx], u[valid_idx]


def load_digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits: images (1797, 1, 8, 8) float32 = value / 16 in [0, 1], labels (1797,) long."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    return images, torch.from_numpy(digits.target.astype(np.int64))


def load_digits_images(image_size: int = 8) -> torch.Tensor:
    if image_size != 8:
        raise UserError(f"digits images are 8 x 8; set data.image_size=8 (got {image_size})")
    return load_digits_arrays()[0]


def _torchvision_datasets():
    try:
        from torchvision import datasets
    except Exception as err:   # ImportError, or a torchvision built for another torch (RuntimeError)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"MNIST / CIFAR-10 need torchvision, which is missing or broken here ({first[:120]}); "
                        f"install a torchvision built for this torch, or use data.dataset=digits / folder") from None
    return datasets


def load_torchvision(name: str, root: Path, download: bool, train: bool, with_labels: bool = False):
    """Images (N, C, H, W) in [0, 1]; with_labels: (images, labels (N,) long)."""
    datasets = _torchvision_datasets()
    cls = {"mnist": datasets.MNIST, "cifar10": datasets.CIFAR10}[name]
    try:
        ds = cls(str(root), train=train, download=download)
    except Exception as err:   # RuntimeError "Dataset not found", URLError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = "" if download else " (set data.download=true to fetch it)"
        raise UserError(f"{name} data not found under {root} and could not be downloaded{hint}: {first[:160]}") \
            from None
    data = torch.as_tensor(np.asarray(ds.data))
    if data.ndim == 3:                       # MNIST (N, H, W) uint8
        data = data[:, None]
    else:                                    # CIFAR-10 (N, H, W, C) uint8
        data = data.permute(0, 3, 1, 2)
    images = data.float() / 255.0
    if with_labels:
        return images, torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)
    return images


def load_folder(root: Path, image_size: int, channels: int) -> torch.Tensor:
    from PIL import Image

    if not root.is_dir():
        raise UserError(f"image folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise UserError(f"data.num_channels must be 1 or 3 for image folders, got {channels}")
    out = np.empty((len(files), image_size, image_size, channels), dtype=np.uint8)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as im:
                im = im.convert(mode)
                w, h = im.size
                s = min(w, h)                    # centre crop to a square, then resize
                im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                im = im.resize((image_size, image_size), Image.BICUBIC)
                out[i] = np.asarray(im).reshape(image_size, image_size, channels)
        except OSError as err:
            raise UserError(f"cannot read image {path}: {err}") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0


def load_images(dataset: str, root, image_size: int, num_channels: int, valid_fraction: float = 0.1,
                split_seed: int = 0, download: bool = True, max_examples: int | None = None) -> ImageData:
    """Train and validation images of `dataset` (see the module docstring)."""
    root = Path(root)
    train_labels = valid_labels = None
    num_classes = 0
    if dataset == "digits":
        if image_size != 8:
            raise UserError(f"digits images are 8 x 8; set data.image_size=8 (got {image_size})")
        images, labels = load_digits_arrays()
        train_idx, valid_idx = seeded_split_indices(len(images), valid_fraction, split_seed)
        train, valid = images[train_idx], images[valid_idx]
        train_labels, valid_labels = labels[train_idx], labels[valid_idx]
        levels, num_classes = 17, 10
    elif dataset in ("mnist", "cifar10"):
        train, train_labels = load_torchvision(dataset, root, download, train=True, with_labels=True)
        valid, valid_labels = load_torchvision(dataset, root, download, train=False, with_labels=True)
        levels, num_classes = 256, 10
    elif dataset == "folder":
        train, valid = seeded_split(load_folder(root, image_size, num_channels), valid_fraction, split_seed)
        levels = 256
    else:
        raise UserError(f"unknown data.dataset '{dataset}' ({' | '.join(DATASETS)})")
    if tuple(train.shape[1:]) != (num_channels, image_size, image_size):
        raise UserError(f"{dataset} images have shape {tuple(train.shape[1:])}, the config says "
                        f"({num_channels}, {image_size}, {image_size}): set data.num_channels / data.image_size")
    if max_examples is not None:
        if isinstance(max_examples, bool) or not isinstance(max_examples, (int, np.integer)) or max_examples < 1:
            raise UserError(f"data.max_examples must be a positive integer, got {max_examples!r}")
        train = train[:max_examples]
        train_labels = None if train_labels is None else train_labels[:max_examples]
    return ImageData(quantise(train, levels), quantise(valid, levels), levels, dataset,
                     train_labels, valid_labels, num_classes)
