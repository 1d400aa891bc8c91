"""Permutation-equivariant MLP score network for atoms on the periodic unit interval.

For a configuration x in [0, 1)^N and a noise level sigma:

    e(y)   = [cos(2 pi k y), sin(2 pi k y)]_{k=1..K}        periodic embedding of one atom
    c      = (1/N) sum_j e(x_j)                              permutation-invariant context
    h      = NoiseLevelEmbedding(log(sigma) / 4)
    F_i    = phi([e(x_i), c, h])                             one MLP phi shared by all atoms
    s_i    = F_i / sigma                                     the score estimate

Permuting the atoms permutes the rows [e(x_i), c, h] and hence the outputs, so
s(P x) = P s(x) exactly (the score of a permutation-invariant density is equivariant).
The embedding makes s 1-periodic in every coordinate, as a score on the torus must be.
Dividing by sigma makes F = sigma s of order one at every noise level (sigma^2-weighted
denoising score matching regresses F on sigma * grad log k). The model is neither
translation invariant nor equivariant to reflections, as in the seed.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .embedding import NoiseLevelEmbedding


class PermutationEquivariantMLP(nn.Module):
    def __init__(self, n_frequencies: int = 4, hidden: int = 128, depth: int = 3, noise_dim: int = 32):
        super().__init__()
        if n_frequencies < 1 or hidden < 1 or depth < 1 or noise_dim < 1:
            raise ValueError("n_frequencies, hidden, depth and noise_dim must be positive")
        # Constructor arguments, stored in checkpoints so the net can be rebuilt from one.
        self.config = dict(n_frequencies=int(n_frequencies), hidden=int(hidden), depth=int(depth),
                           noise_dim=int(noise_dim))
        self.register_buffer("k", 2 * math.pi * torch.arange(1, n_frequencies + 1, dtype=torch.float32),
                             persistent=False)
        self.noise_embedding = NoiseLevelEmbedding(noise_dim, n_frequencies=16, max_period=100.0)
        layers, width = [], 4 * n_frequencies + noise_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.phi = nn.Sequential(*layers)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, N, 2K) periodic features."""
        arg = x[..., None].float() * self.k
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is not None:
            raise ValueError("PermutationEquivariantMLP has no class conditioning; it cannot take labels")
        sigma = torch.as_tensor(sigma, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        e = self.embed(x)                                               # (B, N, 2K)
        c = e.mean(dim=1, keepdim=True).expand_as(e)                    # (B, N, 2K)
        h = self.noise_embedding(torch.log(sigma.float()) / 4)         # (B, D)
        h = h[:, None, :].expand(-1, x.shape[1], -1)                    # (B, N, D)
        F = self.phi(torch.cat([e, c, h], dim=-1))[..., 0]              # (B, N)
        return (F / sigma.float()[:, None]).to(x.dtype)
