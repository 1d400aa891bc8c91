"""An offline image-quality number for digits: a Frechet distance in the features of a small CNN.

Inception weights cannot be downloaded on the machines this runs on, so the feature extractor
is a small CNN trained here, in a few seconds on a CPU, to classify scikit-learn's 8 x 8
digits (values / 16 in [0, 1], as data/images.load_digits_images gives them). The training is
deterministic: fixed seed, weights initialised under a forked global RNG, a fixed number of
minibatch epochs with the order drawn from its own generator, on one CPU thread; on one machine
(same torch) two builds give the same weights. It reaches about 98% accuracy on its held-out
fifth of the digits (TEST_FRACTION; the split is seeded like the data splits).

features(images) are the penultimate layer's pre-activations (FEATURE_DIM values per image);
pre-activations are closer to Gaussian than ReLU outputs, which suits a Gaussian fit. The
quality number is the Frechet distance (Heusel et al. 2017) between Gaussians fitted to the
features of generated and real images,

    FD = |mu_g - mu_r|^2 + tr(S_g + S_r - 2 (S_g S_r)^{1/2}),

and its real-vs-real floor is the same distance between two disjoint random halves of the
real set (metrics.split_halves). Both are biased upwards at small sample sizes, so compare a
number with a floor computed from sets of about the same size. frechet_summary adds their
sampling spread: bootstrap 90% intervals (fid.frechet_interval, fid.frechet_floor_interval).

Images of another size or channel count are made 8 x 8 grey first: mean over the channels,
then area averaging (adaptive average pooling) to 8 x 8, then clamping to [0, 1]. The
classifier only knows scikit-learn's digits, so for other data the number is a rough
structural comparison, not a calibrated score.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .fid import frechet_of_features

SEED = 0
EPOCHS = 30
BATCH_SIZE = 128
LEARNING_RATE = 3e-3
TEST_FRACTION = 0.2
FEATURE_DIM = 64
SIDE = 8
# Bump when the architecture or the training recipe changes: cached weights of another version are retrained.
VERSION = 1
CACHE_NAME = f"digits_classifier_v{VERSION}.pt"

_cached: Optional["DigitsCNN"] = None
_cached_accuracy: Optional[float] = None


class DigitsCNN(nn.Module):
    """conv3(16) -> conv3(16) -> pool -> conv3(32) -> pool -> linear(FEATURE_DIM) -> ReLU -> linear(10)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),        # 8 -> 4
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),        # 4 -> 2
            nn.Flatten(), nn.Linear(32 * 2 * 2, FEATURE_DIM),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(FEATURE_DIM, 10))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _digits_split(seed: int = SEED):
    from .data.images import load_digits_arrays, seeded_split_indices

    images, labels = load_digits_arrays()
    train_idx, test_idx = seeded_split_indices(len(images), TEST_FRACTION, seed)
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


def train_classifier(seed: int = SEED) -> tuple[DigitsCNN, float]:
    """Train a fresh classifier (no cache): (model in eval mode on the CPU, held-out accuracy)."""
    x_train, y_train, x_test, y_test = _digits_split(seed)
    with torch.random.fork_rng(devices=[]):       # the caller's global RNG stream is left untouched
        torch.manual_seed(seed)
        model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    threads = torch.get_num_threads()
    # One thread: tiny convolutions run fastest that way (and do not stall on a busy machine), and the
    # result cannot depend on the machine's core count.
    torch.set_num_threads(1)
    try:
        with torch.enable_grad():                 # also when first called under no_grad (features)
            _fit(model, optimizer, x_train, y_train, generator)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return model, accuracy(model, x_test, y_test)


def _fit(model, optimizer, x_train, y_train, generator) -> None:
    for _ in range(EPOCHS):
        order = torch.randperm(len(x_train), generator=generator)
        for i in range(0, len(order), BATCH_SIZE):
            idx = order[i:i + BATCH_SIZE]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((model(images).argmax(1) == labels).float().mean())


def classifier(cache_dir=None) -> DigitsCNN:
    """The classifier, trained once per process; with cache_dir also kept on disk (cache_dir/CACHE_NAME)."""
    global _cached, _cached_accuracy
    if _cached is not None:
        return _cached
    path = Path(cache_dir) / CACHE_NAME if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model = DigitsCNN()
            model.load_state_dict(state["model"])
            _cached, _cached_accuracy = model.eval(), float(state["accuracy"])
            return _cached
        except Exception:          # a stale or damaged cache file is rebuilt, never trusted
            pass
    model, acc = train_classifier()
    if path is not None:
        from .files import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: torch.save({"model": model.state_dict(), "accuracy": acc,
                                                  "version": VERSION}, fh))
    _cached, _cached_accuracy = model, acc
    return model


def test_accuracy(cache_dir=None) -> float:
    """Held-out accuracy of the cached classifier."""
    classifier(cache_dir)
    return _cached_accuracy


def to_digit_images(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) or (N, H, W) images -> (N, 1, 8, 8) float32 in [0, 1] (see the module docstring)."""
    x = torch.as_tensor(images).detach().float().cpu()
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(x.shape)}")
    if x.shape[1] != 1:
        x = x.mean(dim=1, keepdim=True)
    if tuple(x.shape[-2:]) != (SIDE, SIDE):
        x = F.adaptive_avg_pool2d(x, (SIDE, SIDE))
    return x.clamp(0, 1)


@torch.no_grad()
def features(images: torch.Tensor, batch_size: int = 4096, cache_dir=None) -> torch.Tensor:
    """(N, FEATURE_DIM) penultimate-layer features of images (float32, CPU)."""
    model = classifier(cache_dir)
    x = to_digit_images(images)
    if len(x) == 0:
        return torch.empty(0, FEATURE_DIM)
    return torch.cat([model.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def frechet_digits(generated: torch.Tensor, real: torch.Tensor, cache_dir=None) -> float:
    """Frechet distance between the classifier features of generated and real images.

    Generated images holding NaN or inf are left out; NaN when fewer than two remain.
    """
    generated = torch.as_tensor(generated)
    finite = torch.isfinite(generated.reshape(len(generated), -1)).all(dim=1)
    return frechet_of_features(features(generated[finite], cache_dir=cache_dir),
                                features(real, cache_dir=cache_dir))


def frechet_floor(real: torch.Tensor, seed: int = 0, cache_dir=None) -> float:
    """Real-vs-real floor: the Frechet distance between two disjoint seeded random halves of `real`."""
    from .metrics import split_halves

    a, b = split_halves(len(real), seed)
    f = features(real, cache_dir=cache_dir)
    return frechet_of_features(f[a], f[b])


def frechet_summary(generated: torch.Tensor, real: torch.Tensor, seed: int = 0, cache_dir=None,
                    n_resamples: Optional[int] = None) -> dict:
    """frechet and frechet_floor (the values frechet_digits and frechet_floor(real, seed) give) with their
    sampling spread, from one pass of the classifier over each set.

    frechet_p05 / frechet_p95: fid.frechet_interval over the generated and real features;
    frechet_floor_p05 / _p95: fid.frechet_floor_interval over the real features; both percentile
    bootstraps draw from one torch generator seeded with `seed` (n_resamples: default
    fid.FRECHET_RESAMPLES).
    """
    from .fid import FRECHET_RESAMPLES, frechet_floor_interval, frechet_interval
    from .metrics import split_halves

    n_resamples = FRECHET_RESAMPLES if n_resamples is None else int(n_resamples)
    generated = torch.as_tensor(generated)
    finite = torch.isfinite(generated.reshape(len(generated), -1)).all(dim=1)
    fake, f_real = features(generated[finite], cache_dir=cache_dir), features(real, cache_dir=cache_dir)
    a, b = split_halves(len(real), seed)
    floor = frechet_of_features(f_real[a], f_real[b])
    g = torch.Generator().manual_seed(int(seed))
    lo, hi = frechet_interval(fake, f_real, g, n_resamples)
    floor_lo, floor_hi = frechet_floor_interval(f_real, floor, g, n_resamples)
    return {"frechet": frechet_of_features(fake, f_real), "frechet_p05": lo, "frechet_p95": hi,
            "frechet_floor": floor, "frechet_floor_p05": floor_lo, "frechet_floor_p95": floor_hi}
