"""U-Net in the style of improved-diffusion (Nichol & Dhariwal 2021), conditioned on the level k.

F(x, k) for x (B, C, H, W) at any size (odd sizes too: every upsampling lands on the
exact shape of the matching skip) and one level per sample, k (B,). Layout:

    conv_in -> for each level i (resolution 2^-i, width model_channels * channel_mult[i]):
                   num_res_blocks x [ResBlock (+ attention if i in attention_levels)], downsample
            -> middle: ResBlock, attention, ResBlock
            -> mirrored path with the skips concatenated (num_res_blocks + 1 blocks per level)
            -> GroupNorm, SiLU, conv_out (zero-initialised, so F = 0 at initialisation)

ResBlock: GN -> SiLU -> conv3 -> scale-shift by the level embedding (h * (1 + s) + b after
the second GN) -> SiLU -> dropout -> conv3 (zero-initialised), plus a (1x1) skip. The level
embedding is sinusoidal features of k followed by an MLP (nets/embedding.py).

Class conditioning (num_classes > 0): a learned nn.Embedding(num_classes, emb_dim) of the
label is added to the level embedding before its SiLU (improved-diffusion's scheme), so
every ResBlock sees e = SiLU(E_level(k) + E_class(y)). num_classes = 0 is unconditional
and has no class parameters (its state dict is that of the earlier unconditional net).
``config`` holds the constructor arguments (checkpoints rebuild the net from them).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .embedding import NoiseLevelEmbedding


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float):
        super().__init__()
        self.in_layers = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.out_norm = _norm(cout)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), _zero(nn.Conv2d(cout, cout, 3, padding=1)))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_norm(h) * (1 + scale) + shift
        return self.skip(x) + self.out_layers(h)


class Attention(nn.Module):
    """Multi-head self-attention over the pixels, residual, output projection zero-initialised."""

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        self.heads = max(1, min(num_heads, channels))
        while channels % self.heads:
            self.heads -= 1
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x, emb=None):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x).view(b, c, h * w)).view(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h * w)).view(b, c, h, w)


class UNet(nn.Module):
    def __init__(self, in_channels: int = 1, out_channels: int | None = None, model_channels: int = 64,
                 channel_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 2,
                 attention_levels: Sequence[int] = (1,), dropout: float = 0.0, num_heads: int = 4,
                 num_classes: int = 0):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        mult = [int(m) for m in channel_mult]
        attn = sorted(int(a) for a in attention_levels)
        if not mult or min(mult) < 1 or model_channels < 1 or num_res_blocks < 1:
            raise ValueError("channel_mult, model_channels and num_res_blocks must be positive")
        if any(a < 0 or a >= len(mult) for a in attn):
            raise ValueError(f"attention_levels must lie in 0..{len(mult) - 1}, got {attn}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative integer, got {num_classes!r}")
        self.config = dict(in_channels=int(in_channels), out_channels=int(out_channels),
                           model_channels=int(model_channels), channel_mult=mult, num_res_blocks=int(num_res_blocks),
                           attention_levels=attn, dropout=float(dropout), num_heads=int(num_heads),
                           num_classes=int(num_classes))
        emb_dim = 4 * model_channels
        self.embedding = NoiseLevelEmbedding(emb_dim)
        if num_classes:
            self.label_embedding = nn.Embedding(int(num_classes), emb_dim)
        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, ch = [model_channels], model_channels
        for i, m in enumerate(mult):                      # encoder
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(self._block(ch, model_channels * m, emb_dim, dropout, i in attn, num_heads))
                ch = model_channels * m
                skips.append(ch)
            self.down.append(blocks)
            if i < len(mult) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.middle = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout), Attention(ch, num_heads),
                                     ResBlock(ch, ch, emb_dim, dropout)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, m in reversed(list(enumerate(mult))):      # decoder
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(self._block(ch + skips.pop(), model_channels * m, emb_dim, dropout, i in attn,
                                          num_heads))
                ch = model_channels * m
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zero(nn.Conv2d(ch, out_channels, 3, padding=1)))

    @staticmethod
    def _block(cin, cout, emb_dim, dropout, attention, num_heads):
        layers = [ResBlock(cin, cout, emb_dim, dropout)]
        if attention:
            layers.append(Attention(cout, num_heads))
        return nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, level: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(f"x must have shape (B, {self.config['in_channels']}, H, W), got {tuple(x.shape)}")
        level = torch.as_tensor(level, device=x.device).float().reshape(-1).expand(x.shape[0])
        emb = self.embedding(level)
        num_classes = self.config["num_classes"]
        if num_classes:
            if labels is None:
                raise ValueError(f"this U-Net is class-conditional ({num_classes} classes): pass labels (B,)")
            labels = torch.as_tensor(labels, device=x.device)
            if labels.shape != (x.shape[0],) or labels.is_floating_point():
                raise ValueError(f"labels must be integers of shape ({x.shape[0]},), got {tuple(labels.shape)} "
                                 f"{labels.dtype}")
            # An out-of-range label would be a device-side assert on a GPU: say which instead.
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
                raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
            emb = emb + self.label_embedding(labels.long()).to(emb.dtype)
        elif labels is not None:
            raise ValueError("this U-Net is unconditional (num_classes=0) but was given labels")
        emb = F.silu(emb).to(x.dtype)
        h = self.conv_in(x)
        skips = [h]
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = _run(block, h, emb)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        for layer in self.middle:
            h = layer(h, emb)
        for j, blocks in enumerate(self.up):
            for block in blocks:
                h = _run(block, torch.cat([h, skips.pop()], dim=1), emb)
            if j < len(self.upsample):
                # Nearest upsampling to the exact shape of the next skip (7 -> 4 -> 7 works).
                h = self.upsample[j](F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest"))
        return self.out(h)


def _run(block: nn.ModuleList, h, emb):
    for layer in block:
        h = layer(h, emb)
    return h
