"""The Process protocol: what the trainer, the evaluators and eval.py know of a generative process.

A process (docs/maths.md, after EDM's loss objects and flow_matching's ProbPath) owns
the forward corruption of the data and the way back:

* ``wrap(net)``     the trained module around a backbone ``net(x, c_noise, labels=None)``
                    (EDM preconditioning, the interpolant's VE view, the levels' residual);
* ``loss(...)``     one stochastic draw of the training loss as a :class:`Draw`;
* ``train_step(...)`` one optimiser step from that loss (GANO overrides it: critic, then generator);
* ``sample(...)``   samples with per-sample seeds;
* ``fit(train)``    statistics of the training set the process needs (the levels' prior);
* ``state_dict`` / ``load_state_dict``  what ``fit`` learned, for the checkpoint;
* ``describe()``    the constructor arguments as plain data, so that
                    ``processes.process_from_description`` rebuilds the process.

Random numbers. ``loss`` draws every random number for the *whole* batch from the one
``generator`` it is given and evaluates only the rows ``shard`` (this rank's part of the
batch). All ranks therefore consume their generators in step, and the mean of the shard
losses weighted by the shard sizes is the full-batch loss exactly. ``sample`` gives
sample k its own ``torch.Generator().manual_seed(seeds[k])``, so a sample never depends
on the batch it is drawn in.

Batches. ``loss`` reads only ``batch.x`` ((B, C, *spatial) fields / images or (B, n_atoms)
toy positions) and ``batch.labels`` (None or a (B,) long tensor), and slices both with
``shard``.
"""
from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn


@dataclass
class Draw:
    """One draw of a training loss.

    loss:  scalar, the mean over the rows of this rank's shard (differentiable);
    terms: {name: float} parts for logging, e.g. {"dsm": .., "regularizer": .., "total": ..}; may be {}.
    """

    loss: Tensor
    terms: dict = field(default_factory=dict)


class Process(ABC):
    """A forward process with its training loss and its sampler (see the module docstring)."""

    name: str = "process"

    @abstractmethod
    def wrap(self, net: nn.Module) -> nn.Module:
        """The trained module around the backbone ``net(x, c_noise, labels=None)``."""

    @abstractmethod
    def loss(self, model, batch, generator: torch.Generator, shard: slice = slice(None), step: int = 0) -> Draw:
        """The loss on ``batch[shard]``; every random number is drawn for the whole batch.

        ``step`` is the optimiser step (regularizers switch on after a burn-in).
        """

    @abstractmethod
    def sample(self, model, seeds: Sequence[int], shape: tuple, device, labels: Optional[Tensor] = None,
               progress: bool = False, **options) -> Tensor:
        """``len(seeds)`` samples of one-sample shape ``shape`` as a CPU float32 tensor.

        Sample k depends only on ``torch.Generator().manual_seed(seeds[k])`` (and on
        ``labels[k]`` when given). ``options`` are the process's sampler settings; an
        unknown key is a ``TypeError``.
        """

    def train_step(self, model, batch, generator: torch.Generator, shard: slice, step: int,
                   update: Callable[..., None]) -> Draw:
        """One optimiser step of the trainer: ``update(loss, parameters=None)`` backpropagates a
        shard loss, averages the gradients over the ranks and steps the optimiser on those
        parameters (None: all). Objectives with two networks (GANO) call it once per network."""
        draw = self.loss(model, batch, generator, shard, step)
        update(draw.loss)
        return draw

    def fit(self, train: Tensor) -> None:
        """Fit what the process needs from the training set (nothing, by default)."""

    def state_dict(self) -> dict:
        """What ``fit`` learned (nothing, by default)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""
        if state:
            raise ValueError(f"{self.name}: unexpected state keys {sorted(state)}")

    @abstractmethod
    def describe(self) -> dict:
        """``{"type": name, ...constructor arguments}`` as plain (JSON) data."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "type")
        return f"{type(self).__name__}({args})"


# --------------------------------------------------------------------------- helpers for implementations

def call_net(net: Callable, x: Tensor, c: Tensor, labels: Optional[Tensor] = None) -> Tensor:
    """``net(x, c)``, or ``net(x, c, labels=labels)`` when there are labels.

    Backbones without class conditioning (and plain functions in tests) need not accept
    ``labels`` at all.
    """
    if labels is None:
        return net(x, c)
    return net(x, c, labels=labels.to(x.device))


def rows(labels: Optional[Tensor], shard: slice) -> Optional[Tensor]:
    """``labels[shard]``, keeping None."""
    return None if labels is None else labels[shard]


def check_labels(labels: Optional[Tensor], n: int) -> Optional[Tensor]:
    """Sampling labels as a (n,) long tensor, or None."""
    if labels is None:
        return None
    labels = torch.as_tensor(labels).long().reshape(-1)
    if len(labels) != n:
        raise ValueError(f"need one label per sample: {len(labels)} labels for {n} samples")
    return labels


class Conditioned:
    """A denoiser with its labels bound: what the samplers of samplers.py call.

    ``self(x, sigma)`` and ``self.score(x, sigma)`` pass ``labels`` (moved to x's device) to
    the model on every call.
    """

    def __init__(self, model, labels: Optional[Tensor] = None):
        self.model, self.labels = model, labels

    def _kw(self, x: Tensor) -> dict:
        return {} if self.labels is None else {"labels": self.labels.to(x.device)}

    def __call__(self, x: Tensor, sigma) -> Tensor:
        return self.model(x, sigma, **self._kw(x))

    def score(self, x: Tensor, sigma) -> Tensor:
        return self.model.score(x, sigma, **self._kw(x))

    def __getattr__(self, name):
        model = self.__dict__.get("model")
        if model is None:
            raise AttributeError(name)
        return getattr(model, name)


def check_options(fn: Callable, options: dict, fixed: Sequence[str], what: str) -> None:
    """Raise TypeError for an option that ``fn`` does not name as a parameter.

    Samplers swallow unknown keywords with ``**_``; a misspelt option must not pass silently.
    """
    params = inspect.signature(fn).parameters
    named = {k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(options) - (named - set(fixed)))
    if unknown:
        raise TypeError(f"{what}: unknown option(s) {', '.join(unknown)}; "
                        f"accepted: {', '.join(sorted(named - set(fixed))) or 'none'}")


def sample_in_batches(process, model, seeds: Sequence[int], shape, device, batch_size: int,
                      labels: Optional[Tensor] = None, progress: bool = False,
                      after_batch: Optional[Callable[[int, int], None]] = None, **options) -> Tensor:
    """process.sample over chunks of `batch_size` seeds, as CPU float32. Sample k depends on its seed
    alone, so the chunking never changes it; after_batch(batches done, samples in the batch) reports progress."""
    out = []
    for done, start in enumerate(range(0, len(seeds), batch_size), 1):
        part = [int(s) for s in seeds[start:start + batch_size]]
        chunk = None if labels is None else labels[start:start + batch_size].to(device)
        out.append(process.sample(model, part, tuple(shape), device, labels=chunk, progress=progress,
                                  **options).float().cpu())
        if after_batch is not None:
            after_batch(done, len(part))
    return torch.cat(out) if out else torch.empty(0, *shape)
