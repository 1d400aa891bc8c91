"""Data sources: where the Trainer's batches come from (docs/maths.md).

* ``TensorSource`` serves a finite tensor in epochs. Each epoch is one permutation drawn
  from the generator handed to ``batches``; the last batch of an epoch may be short.
  Its state (epoch, permutation, position) lets a resumed run continue with exactly the
  batch that would have come next. The generator's own state is not kept here: the
  Trainer saves it beside the source's state, and every random number the source uses
  (permutations and augmentation) is drawn from that generator, so the two together
  determine the rest of the run.
* ``StreamSource`` draws a fresh batch at every step (the toy problem): no epochs, no state.

Random draws, in order, for each batch of B samples (only those whose option is on):
the epoch's permutation (when a new epoch starts), then
``rand(B)`` for the horizontal flips, ``rand(B)`` for the vertical flips, ``rand(B)`` for
the 90-degree rotations, and ``rand(B, C, H, W)`` for the dequantisation noise.

Augmentation (images (B, C, H, W)): each sample is independently flipped left-right
(last axis) with probability ``hflip``, up-down (axis -2) with probability ``vflip`` and
rotated by 90 degrees (``torch.rot90(k=1)`` in the last two axes; square images only) with
probability ``rot90``.

Uniform dequantisation of data stored on the grid x = k / (L - 1), k = 0..L-1
(``dequantize_levels=L``):

    x_deq = (x (L - 1) + u) / L,   u ~ U[0, 1) per value,

so level k fills the bin [k / L, (k + 1) / L) and x_deq stays in [0, 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from ..errors import UserError


@dataclass
class Batch:
    """One training batch: ``x`` (B, ...) and, when the data have classes, ``labels`` (B,) long."""

    x: torch.Tensor
    labels: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return len(self.x)

    def to(self, device, non_blocking: bool = False) -> "Batch":
        labels = None if self.labels is None else self.labels.to(device, non_blocking=non_blocking)
        return Batch(self.x.to(device, non_blocking=non_blocking), labels)

    def __getitem__(self, index) -> "Batch":
        return Batch(self.x[index], None if self.labels is None else self.labels[index])


def _probability(value, name: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise UserError(f"{name} must be a probability in [0, 1], got {value}")
    return value


class TensorSource:
    """Epochs over a finite tensor ``x`` (N, ...) with optional labels (N,); see the module docstring.

    ``epoch`` counts the epochs completed so far; ``position`` is the number of samples of the
    current epoch already served (0 at an epoch boundary, where no permutation is held yet).
    """

    def __init__(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None, hflip: float = 0.0,
                 vflip: float = 0.0, rot90: float = 0.0, dequantize_levels: Optional[int] = None):
        if not isinstance(x, torch.Tensor) or x.ndim < 1 or len(x) == 0:
            raise UserError("a TensorSource needs a non-empty tensor of samples")
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.shape != (len(x),):
                raise UserError(f"labels must have shape ({len(x)},) to match the data, got {tuple(labels.shape)}")
            labels = labels.long()
        self.x, self.labels = x, labels
        self.hflip = _probability(hflip, "hflip")
        self.vflip = _probability(vflip, "vflip")
        self.rot90 = _probability(rot90, "rot90")
        if (self.hflip or self.vflip or self.rot90) and x.ndim < 3:
            raise UserError(f"flips and rotations need images (N, C, H, W); the data have shape {tuple(x.shape)}")
        if self.rot90 and x.shape[-1] != x.shape[-2]:
            raise UserError(f"rot90 needs square images, the data are {x.shape[-2]} x {x.shape[-1]}")
        if dequantize_levels is not None:
            if isinstance(dequantize_levels, bool) or int(dequantize_levels) != dequantize_levels \
                    or dequantize_levels < 2:
                raise UserError(f"dequantize_levels must be an integer >= 2, got {dequantize_levels!r}")
            dequantize_levels = int(dequantize_levels)
        self.dequantize_levels = dequantize_levels
        self.epoch = 0
        self.permutation: Optional[torch.Tensor] = None
        self.position = 0

    def __len__(self) -> int:
        return len(self.x)

    def batches_per_epoch(self, batch_size: int) -> int:
        """Number of batches in one epoch, ceil(N / batch_size) (the last may be short)."""
        return math.ceil(len(self.x) / _check_batch_size(batch_size))


    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """Batches forever, continuing from the source's state (mid-epoch after load_state_dict)."""
        batch_size = _check_batch_size(batch_size)
        n = len(self.x)
        while True:
            if self.permutation is None:
                self.permutation = torch.randperm(n, generator=generator, device=generator.device).cpu()
                self.position = 0
            idx = self.permutation[self.position:self.position + batch_size]
            x = self.augment(self.x[idx.to(self.x.device)], generator)
            labels = None if self.labels is None else self.labels[idx.to(self.labels.device)]
            # The state is brought up to date before the yield, so a checkpoint written while
            # the consumer holds this batch resumes with the next one.
            self.position += len(idx)
            if self.position >= n:
                self.epoch += 1
                self.permutation, self.position = None, 0
            yield Batch(x, labels)

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random flips / rotation / dequantisation of one batch (draws in the documented order)."""
        b = len(x)
        view = (b,) + (1,) * (x.ndim - 1)

        def coin(p):
            return (torch.rand(b, generator=generator, device=generator.device) < p).to(x.device).view(view)

        if self.hflip:
            x = torch.where(coin(self.hflip), x.flip(-1), x)
        if self.vflip:
            x = torch.where(coin(self.vflip), x.flip(-2), x)
        if self.rot90:
            x = torch.where(coin(self.rot90), torch.rot90(x, 1, dims=(-2, -1)), x)
        if self.dequantize_levels is not None:
            levels = self.dequantize_levels
            u = torch.rand(x.shape, generator=generator, device=generator.device, dtype=torch.float32)
            x = (x * (levels - 1) + u.to(device=x.device, dtype=x.dtype)) / levels
        return x

    def state_dict(self) -> dict:
        return {"epoch": int(self.epoch), "position": int(self.position), "n": len(self.x),
                "permutation": None if self.permutation is None else self.permutation.clone()}

    def load_state_dict(self, state: dict) -> None:
        n = int(state.get("n", len(self.x)))
        perm = state.get("permutation")
        if n != len(self.x) or (perm is not None and len(perm) != len(self.x)):
            raise UserError(f"the saved data order covers {n} samples but the data set has {len(self.x)}; "
                            f"resume with the same data settings")
        self.epoch = int(state["epoch"])
        self.permutation = None if perm is None else torch.as_tensor(perm, dtype=torch.long).cpu()
        self.position = int(state["position"]) if perm is not None else 0


class StreamSource:
    """Fresh samples at every step: ``sample_fn(batch_size, generator)`` -> (B, ...) tensor.

    There are no epochs (``epoch`` stays 0, ``batches_per_epoch`` is None) and no state: the
    Trainer's generator alone determines the stream.
    """

    epoch = 0

    def __init__(self, sample_fn: Callable[[int, torch.Generator], torch.Tensor]):
        self.sample_fn = sample_fn

    def batches_per_epoch(self, batch_size: int) -> None:
        return None


    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        batch_size = _check_batch_size(batch_size)
        while True:
            yield Batch(self.sample_fn(batch_size, generator))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)
