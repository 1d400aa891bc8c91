"""Data registry: ``load_dataset(name, **options) -> Dataset`` (docs/maths.md).

=========  =====  ======  =======  =====================================================================
name       kind   levels  classes  options (defaults)
=========  =====  ======  =======  =====================================================================
volcano    phase  None    0        data_dir (required), resolution=None (the files' 128 px), npad=0,
                                   val_size=0.1, split_seed=0, max_examples=None (first N files)
grf        real   None    0        n_train=1024, n_valid=512, resolution=32, npad=0 (the fields are
                                   resolution - npad px), split_seed=0, alpha=2.5, tau=7.0
digits     image  17      10       root=None, image_size=None, num_channels=None (None: the data
mnist      image  256     10       set's own 8 / 28 / 32 px and 1 / 1 / 3 channels; others are
cifar10    image  256     10       resized, see _reshape_images), valid_fraction=0.1 (digits only:
                                   mnist / cifar10 validate on their test sets), split_seed=0,
                                   download=True, max_examples=None (first N training images)
folder     image  256     0        (folder: root is the image folder, image_size is required,
                                   num_channels defaults to 3)
=========  =====  ======  =======  =====================================================================

The toy ("two_atoms") is a stream, not a tensor data set: see sources.StreamSource.
Every mistake in the options is a UserError naming the option.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import UserError

KINDS = ("phase", "real", "image", "atoms")
_OWN_IMAGE_SHAPE = {"digits": (8, 1), "mnist": (28, 1), "cifar10": (32, 3)}   # (image_size, num_channels)


@dataclass
class Dataset:
    train: torch.Tensor                         # (N, C, H, W) float32
    valid: torch.Tensor
    train_labels: Optional[torch.Tensor] = None  # (N,) long, when the data set has classes
    valid_labels: Optional[torch.Tensor] = None
    kind: str = "real"                          # phase | real | image | atoms
    levels: Optional[int] = None                # grey values per channel of quantised images, else None
    num_classes: int = 0
    name: str = ""

    @property
    def shape(self) -> tuple:
        """One sample's shape (C, *spatial)."""
        return tuple(self.train.shape[1:])


def _volcano(data_dir=None, resolution=None, npad=0, val_size=0.1, split_seed=0, max_examples=None) -> Dataset:
    from .volcano import load_volcano

    if data_dir is None:
        raise UserError("the volcano dataset needs a data folder (DATA_DIR in exps/env.sh or the environment; "
                        "eval.py also takes --data_dir)")
    _check_max_examples(max_examples)
    train, valid = load_volcano(data_dir, resolution=resolution, npad=npad, val_size=val_size, seed=split_seed,
                                max_files=max_examples)
    return Dataset(train, valid, kind="phase", name="volcano")


def _grf(n_train=1024, n_valid=512, resolution=32, npad=0, split_seed=0, alpha=2.5, tau=7.0) -> Dataset:
    from .grf import make_grf_dataset

    for name, value in (("n_train", n_train), ("n_valid", n_valid), ("resolution", resolution), ("npad", npad)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "npad" else 1):
            raise UserError(f"grf {name} must be a {'non-negative' if name == 'npad' else 'positive'} integer, "
                            f"got {value!r}")
    if npad >= resolution:
        raise UserError(f"grf npad ({npad}) must be smaller than the resolution ({resolution})")
    train, valid = make_grf_dataset(n_train, n_valid, resolution - npad, seed=split_seed, alpha=alpha, tau=tau)
    return Dataset(train, valid, kind="real", name="grf")


def _images(name):
    def load(root=None, image_size=None, num_channels=None, valid_fraction=0.1, split_seed=0, download=True,
             max_examples=None) -> Dataset:
        from .images import load_images

        _check_max_examples(max_examples)
        if name == "folder":
            if root is None:
                raise UserError("dataset folder needs data.root, the folder of images")
            if image_size is None:
                raise UserError("dataset folder needs data.image_size (the images are resized to it)")
            num_channels = 3 if num_channels is None else num_channels
            data = load_images(name, root, image_size, num_channels, valid_fraction, split_seed, download,
                               max_examples)
            train, valid = data.train, data.valid
        else:
            own_size, own_channels = _OWN_IMAGE_SHAPE[name]
            data = load_images(name, "data" if root is None else root, own_size, own_channels, valid_fraction,
                               split_seed, download, max_examples)
            train, valid = (_reshape_images(u, image_size, num_channels, data.levels) for u in (data.train,
                                                                                                data.valid))
        return Dataset(train, valid, data.train_labels, data.valid_labels, kind="image",
                       levels=data.levels, num_classes=data.num_classes, name=name)

    return load


DATASETS = {
    "volcano": _volcano,
    "grf": _grf,
    "digits": _images("digits"),
    "mnist": _images("mnist"),
    "cifar10": _images("cifar10"),
    "folder": _images("folder"),
}


def load_dataset(name: str, **options) -> Dataset:
    """The train / validation split of data set `name` (see the module docstring for the options)."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}' (one of: {', '.join(DATASETS)})")
    loader = DATASETS[name]
    accepted = inspect.signature(loader).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(f"dataset {name} does not take option(s) {', '.join(unknown)} "
                        f"(it takes: {', '.join(accepted)})")
    return loader(**options)


# ITU-R 601 luma, what PIL's convert("L") uses for the image folders.
_LUMA = (0.299, 0.587, 0.114)


def _reshape_images(u: torch.Tensor, image_size, num_channels, levels: int) -> torch.Tensor:
    """Images at another size / channel count, back on the data's grid of `levels` values.

    Size: area averaging when shrinking, bilinear interpolation when enlarging. Channels:
    RGB -> grey by the ITU-R 601 luma weights, grey -> RGB by repetition.
    """
    import torch.nn.functional as F

    from .images import quantise

    changed = False
    if num_channels is not None and num_channels != u.shape[1]:
        if (u.shape[1], num_channels) == (3, 1):
            u = (u * torch.tensor(_LUMA, dtype=u.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif (u.shape[1], num_channels) == (1, 3):
            u = u.expand(-1, 3, -1, -1)
        else:
            raise UserError(f"data.channels must be 1 or 3, got {num_channels}")
        changed = True
    if image_size is not None and image_size != u.shape[-1]:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise UserError(f"the image size must be a positive integer, got {image_size!r}")
        mode = "area" if image_size < u.shape[-1] else "bilinear"
        u = F.interpolate(u, size=(image_size, image_size), mode=mode,
                          **({} if mode == "area" else {"align_corners": False}))
        changed = True
    return quantise(u, levels).contiguous() if changed else u


def _check_max_examples(max_examples) -> None:
    if max_examples is not None and (isinstance(max_examples, bool) or not isinstance(max_examples, int)
                                     or max_examples < 1):
        raise UserError(f"max_examples must be a positive integer or None, got {max_examples!r}")
