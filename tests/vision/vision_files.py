"""MNIST and CIFAR-10 files for tests/vision: small data sets written in the formats torchvision reads,
so that its real MNIST and CIFAR10 classes load them offline: MNIST as the IDX files under
<root>/MNIST/raw (raw, or gzip as downloaded), CIFAR-10 as the pickled batches under
<root>/cifar-10-batches-py."""
import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np

MNIST_N = {"train": 40, "t10k": 12}
CIFAR_PER_BATCH, CIFAR_TEST = 4, 8


def _idx(array: np.ndarray) -> bytes:
    """An IDX file of uint8 data: magic 0x0000 08 <ndim>, the sizes as big-endian int32, the bytes."""
    return struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(root: Path, gz: bool = False, seed: int = 0) -> dict:
    """<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]; returns the arrays written."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in MNIST_N.items():
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        arrays[split] = (images, labels)
        for kind, data in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{split}-{kind}-ubyte"
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(_idx(data)))
            else:
                (raw / name).write_bytes(_idx(data))
    return arrays


def write_cifar10(root: Path, seed: int = 0) -> dict:
    """<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}: rows of 3072 bytes, the red
    plane, then green, then blue, each row-major; returns the arrays written and each file's md5."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    batches = {f"data_batch_{i}": CIFAR_PER_BATCH for i in range(1, 6)}
    batches["test_batch"] = CIFAR_TEST
    arrays, md5 = {}, {}
    for name, n in batches.items():
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(k) for k in rng.integers(0, 10, size=n)]
        arrays[name] = (data, labels)
        (folder / name).write_bytes(pickle.dumps({"batch_label": name, "data": data, "labels": labels}, protocol=2))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                            "truck"], "num_cases_per_batch": CIFAR_PER_BATCH, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    for path in folder.iterdir():
        md5[path.name] = hashlib.md5(path.read_bytes()).hexdigest()
    return {"arrays": arrays, "md5": md5}


def trust_cifar10_files(monkeypatch, md5: dict) -> None:
    """torchvision's CIFAR10 checks every file against the md5 of the real data set; these are the md5 of the
    files written here, so the real class reads them (the check itself is torchvision's)."""
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})


def no_network(monkeypatch) -> None:
    """Any download attempt fails loudly (the data here are all local)."""
    import urllib.request

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
