"""tests/vision: the tests that need the real torchvision and clean-fid, run in .venv-vision
(scripts/setup_vision_venv.sh; `make test` runs them there after the main suite).

Where torchvision cannot be imported (the main .venv, whose CPU torch no PyPI torchvision
matches) the folder is left out of collection, so a plain `pytest` there runs the main suite
only; REQUIRE_VISION_TESTS=1 (set by `make test`) turns that into an error instead.
"""
import os

import pytest
from vision_files import no_network, trust_cifar10_files, write_cifar10, write_mnist


def _vision_problem():
    """None when torchvision and clean-fid import, else why not."""
    try:
        import torchvision  # noqa: F401
        import cleanfid.fid  # noqa: F401
    except Exception as err:     # a torchvision built for another torch raises RuntimeError / OSError
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return None


_PROBLEM = _vision_problem()
if _PROBLEM is not None:
    if os.environ.get("REQUIRE_VISION_TESTS") == "1":
        raise pytest.UsageError(f"tests/vision need torchvision and clean-fid ({_PROBLEM}); "
                                f"run them with .venv-vision/bin/python (make venv-vision)")
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist_files")
    return root, write_mnist(root)


@pytest.fixture(scope="session")
def cifar_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar_files")
    return root, write_cifar10(root)


@pytest.fixture
def cifar_root(cifar_files, monkeypatch):
    root, written = cifar_files
    trust_cifar10_files(monkeypatch, written["md5"])
    no_network(monkeypatch)
    return root, written["arrays"]
