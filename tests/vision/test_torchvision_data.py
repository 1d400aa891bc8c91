"""MNIST and CIFAR-10 through the real torchvision classes: files written here in the formats the data
sets ship in, read by torchvision.datasets.MNIST / CIFAR10 as a run reads them (the shipped config,
build.build_dataset), and every pixel, label and shape compared with what was written."""
from pathlib import Path

import numpy as np
import pytest
import torch

from vision_files import MNIST_N, no_network, write_mnist
from model_code import build, config
from model_code.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {"mnist": "configs/mnist/default_mnist_configs.yaml",
           "cifar10": "configs/cifar10/default_cifar10_configs.yaml"}


def dataset(name, root, *overrides):
    cfg = config.load([str(ROOT / CONFIGS[name])], [f"data.root={root}", "data.download=false", *overrides])
    return build.build_dataset(cfg, None)


def cifar_images(arrays, names):
    """(N, 3, 32, 32) uint8 and (N,) labels of the batches `names`, decoded from the rows as written."""
    data = np.concatenate([arrays[n][0] for n in names]).reshape(-1, 3, 32, 32)
    return torch.from_numpy(data), torch.tensor(sum((arrays[n][1] for n in names), []))


def test_mnist_idx_files_reach_the_run_exactly(mnist_root, monkeypatch):
    root, written = mnist_root
    no_network(monkeypatch)
    data = dataset("mnist", root)
    for split, images, labels in (("train", data.train, data.train_labels), ("t10k", data.valid, data.valid_labels)):
        pixels, targets = written[split]
        assert images.shape == (MNIST_N[split], 1, 28, 28) and images.dtype == torch.float32
        # k / 255 exactly: the data's grid of 256 grey values (quantise leaves it unchanged)
        assert torch.equal(images, torch.from_numpy(pixels)[:, None].float() / 255)
        assert torch.equal(labels, torch.from_numpy(targets).long())
    assert data.kind == "image" and data.levels == 256 and data.num_classes == 10


def test_mnist_gzip_files_as_downloaded_are_extracted_offline(tmp_path, monkeypatch):
    """data.download=true with the .gz files in place: torchvision checks their md5 (here: of these files) and
    extracts them, without a download."""
    import hashlib

    from torchvision.datasets import MNIST

    written = write_mnist(tmp_path, gz=True, seed=3)
    raw = tmp_path / "MNIST" / "raw"
    monkeypatch.setattr(MNIST, "resources", [(name, hashlib.md5((raw / name).read_bytes()).hexdigest())
                                             for name, _ in MNIST.resources])
    no_network(monkeypatch)
    data = dataset("mnist", tmp_path, "data.download=true")
    assert torch.equal(data.train, torch.from_numpy(written["train"][0])[:, None].float() / 255)
    assert torch.equal(data.valid_labels, torch.from_numpy(written["t10k"][1]).long())
    assert (raw / "train-images-idx3-ubyte").is_file()


def test_cifar10_pickled_batches_reach_the_run_exactly(cifar_root):
    root, arrays = cifar_root
    data = dataset("cifar10", root)
    train, train_labels = cifar_images(arrays, [f"data_batch_{i}" for i in range(1, 6)])
    valid, valid_labels = cifar_images(arrays, ["test_batch"])
    assert data.train.shape == (20, 3, 32, 32) and data.valid.shape == (8, 3, 32, 32)
    # channel c of pixel (h, w) is byte c * 1024 + h * 32 + w of its row: red, green, blue planes
    assert torch.equal(data.train, train.float() / 255) and torch.equal(data.valid, valid.float() / 255)
    assert data.train[3, 1, 2, 5] == arrays["data_batch_1"][0][3, 1024 + 2 * 32 + 5] / 255
    assert torch.equal(data.train_labels, train_labels) and torch.equal(data.valid_labels, valid_labels)
    assert data.levels == 256 and data.num_classes == 10


def test_resizing_and_channel_conversion_give_the_expected_values(mnist_root, cifar_root):
    """A smaller image_size averages pixel blocks (area), num_channels=1 takes the ITU-R 601 luma of RGB; both
    are put back on the grid of 256 values."""
    root, written = mnist_root
    small = dataset("mnist", root, "data.image_size=14")
    sums = written["train"][0].astype(np.int64).reshape(-1, 14, 2, 14, 2).sum((2, 4))     # 4 x the block mean
    got = small.train[:, 0].double().numpy() * 255
    assert small.train.shape == (40, 1, 14, 14)
    # a mean half-way between two grey values (sum = 2 mod 4) may round either way in float32
    tie = sums % 4 == 2
    assert np.allclose(got[~tie], np.round(sums[~tie] / 4), atol=1e-4)
    assert np.all(np.minimum(np.abs(got[tie] - np.floor(sums[tie] / 4)), np.abs(got[tie] - np.ceil(sums[tie] / 4)))
                  < 1e-4)
    croot, arrays = cifar_root
    grey = dataset("cifar10", croot, "data.num_channels=1")
    rgb = cifar_images(arrays, ["test_batch"])[0].double().numpy() / 255
    luma = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    assert grey.valid.shape == (8, 1, 32, 32)
    # a luma exactly half-way between two grey values may round either way in float32
    assert (grey.valid[:, 0].double() - torch.from_numpy(np.round(luma * 255) / 255)).abs().max() <= 1 / 255 + 1e-6
    assert (grey.valid[:, 0].double() - torch.from_numpy(np.round(luma * 255) / 255)).abs().mean() < 1e-3


def test_absent_files_are_one_clear_error(tmp_path, monkeypatch):
    no_network(monkeypatch)
    for name in ("mnist", "cifar10"):
        with pytest.raises(UserError, match=rf"{name} data not found under .* \(set data.download=true"):
            dataset(name, tmp_path / "empty")
