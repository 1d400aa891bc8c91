"""Image data (model_code/data/images.py): digits offline, split, quantisation, clear errors."""
import sys

import numpy as np
import pytest
import torch

from model_code.data import images
from model_code.errors import UserError


def test_digits_are_real_offline_and_on_their_grid():
    data = images.load_images("digits", "unused", 8, 1, valid_fraction=0.15, split_seed=0)
    assert data.levels == 17
    assert len(data.train) + len(data.valid) == 1797 and len(data.valid) == 270
    assert data.train.shape[1:] == (1, 8, 8)
    allu = torch.cat([data.train, data.valid])
    assert allu.min() == 0 and allu.max() == 1
    assert torch.equal(allu * 16, torch.round(allu * 16))       # values k / 16
    again = images.load_images("digits", "unused", 8, 1, valid_fraction=0.15, split_seed=0)
    assert torch.equal(again.valid, data.valid)
    other = images.load_images("digits", "unused", 8, 1, valid_fraction=0.15, split_seed=1)
    assert not torch.equal(other.valid, data.valid)
    with pytest.raises(UserError, match="image_size"):
        images.load_images("digits", "unused", 16, 1)


def test_digit_labels_follow_their_images_through_the_split():
    from sklearn.datasets import load_digits

    data = images.load_images("digits", "unused", 8, 1, valid_fraction=0.15, split_seed=0)
    assert data.num_classes == 10
    assert data.train_labels.dtype == torch.long and len(data.train_labels) == len(data.train)
    assert len(data.valid_labels) == len(data.valid)
    raw = load_digits()
    labels = torch.cat([data.train_labels, data.valid_labels])
    assert torch.equal(torch.bincount(labels, minlength=10), torch.bincount(torch.as_tensor(raw.target)))
    # each image keeps its own label: look a few up among the original (k / 16 valued) images
    table = {tuple(img.astype(int).ravel()): set() for img in raw.images}
    for img, t in zip(raw.images, raw.target):
        table[tuple(img.astype(int).ravel())].add(int(t))
    for x, y in list(zip(data.train, data.train_labels))[:50] + list(zip(data.valid, data.valid_labels))[:50]:
        assert int(y) in table[tuple(torch.round(x * 16).long().view(-1).tolist())]


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(10):
        sub = tmp_path / ("cats" if i % 2 else "dogs")
        sub.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    data = images.load_images("folder", tmp_path, 8, 3, valid_fraction=0.2)
    assert data.train.shape == (8, 3, 8, 8) and data.valid.shape == (2, 3, 8, 8) and data.levels == 256
    assert torch.equal(data.train * 255, torch.round(data.train * 255))
    assert data.train_labels is None and data.num_classes == 0          # a folder has no classes
    with pytest.raises(UserError, match="not found"):
        images.load_images("folder", tmp_path / "missing", 8, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        images.load_images("folder", tmp_path / "empty", 8, 3)


def test_torchvision_missing_or_broken_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)       # import fails like a missing package
    with pytest.raises(UserError, match="torchvision"):
        images.load_images("mnist", "data", 28, 1)


def test_quantise():
    u = torch.tensor([0.0, 0.26, 0.5, 0.74, 1.2, -0.1])
    assert torch.equal(images.quantise(u, 5), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 0.0]))
