"""Noise-level embedding shared by the score networks.

``NoiseLevelEmbedding`` maps the scalar noise conditioning ``c_noise`` of every
sample (for the EDM preconditioner ``c_noise = log(sigma) / 4``, roughly in
[-2, 2]) to a vector: sinusoidal (Fourier) features followed by a two-layer MLP
with a SiLU in between.  It deliberately does not import ``neuralop``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_features(c: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """``[cos(c * f_k), sin(c * f_k)]`` for every frequency: shape ``(B, 2 * K)``."""
    args = c.to(frequencies.dtype)[:, None] * frequencies[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class NoiseLevelEmbedding(nn.Module):
    """Sinusoidal features of ``c_noise`` followed by ``Linear -> SiLU -> Linear``.

    Parameters
    ----------
    dim:
        Output size (and hidden size of the MLP).
    n_frequencies:
        Number of frequencies; the feature vector has ``2 * n_frequencies`` entries
        (a cosine and a sine per frequency).
    max_period:
        Frequencies are geometric from 1 down to ``1 / max_period`` (the
        transformer / EDM convention).

    ``forward(c_noise)`` takes ``c_noise`` of shape ``(B,)`` (a 0-d tensor or a
    ``(B, 1)`` tensor is accepted too) and returns ``(B, dim)``.
    """

    def __init__(self, dim: int, n_frequencies: int = 32, max_period: float = 1e4):
        super().__init__()
        if dim < 1 or n_frequencies < 1:
            raise ValueError(f"dim and n_frequencies must be positive, got {dim}, {n_frequencies}")
        if max_period <= 0:
            raise ValueError(f"max_period must be positive, got {max_period}")
        self.dim = int(dim)
        self.n_frequencies = int(n_frequencies)
        self.max_period = float(max_period)
        exponents = torch.arange(self.n_frequencies, dtype=torch.float32) / self.n_frequencies
        frequencies = torch.exp(-math.log(self.max_period) * exponents)
        # A fixed function of the constructor arguments: not saved in checkpoints.
        self.register_buffer("frequencies", frequencies, persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(2 * self.n_frequencies, self.dim),
            nn.SiLU(),
            nn.Linear(self.dim, self.dim),
        )

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        c = torch.as_tensor(c_noise, device=self.frequencies.device)
        if c.ndim == 0:
            c = c.reshape(1)
        elif c.ndim == 2 and c.shape[1] == 1:
            c = c[:, 0]
        elif c.ndim != 1:
            raise ValueError(f"c_noise must have shape (B,), got {tuple(c.shape)}")
        features = sinusoidal_features(c.float(), self.frequencies)
        weight_dtype = self.mlp[0].weight.dtype
        return self.mlp(features.to(weight_dtype))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_frequencies={self.n_frequencies}, max_period={self.max_period:g}"
