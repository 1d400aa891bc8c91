"""The published UNO of DiffusionOperators (src/models.py), in this project's calling convention.

The published network, with its neuraloperator of April 2023 (``FNOBlocks`` around a
``FactorizedSpectralConv``), computes for fields x of shape (B, C, H, W):

* lifting: a 1x1 conv of [x, grid] with grid = (linspace(0, 1, H) along H, linspace(0, 1, W)
  along W), then zero padding by ``pad`` px on the right and the bottom;
* eight blocks block1..block4 (down) and inv2_9, inv3, inv4, inv5 (up). With ``grid`` the
  padded training size s, their nominal sizes are s -> s -> 3s/4 -> s/2 -> s/4 -> s/2 -> 3s/4
  -> s -> s, and each block keeps int(fmult * nominal input size) Fourier modes per axis and
  resizes by the factor nominal output / nominal input (a relative factor, so the net runs at
  other resolutions). A block is
      gelu(norm(K x) + resize(W x)),
  K the spectral convolution (rfft2 with norm='forward', two weight corners (low +/- rows,
  low columns), irfft2 at the resized shape, plus a bias), W a bias-free 1x1 conv, resize a
  bicubic, antialiased, align_corners interpolation, norm a GroupNorm when groups > 0;
* skips: inv2_9's output is concatenated with block3's, inv3's with block2's, inv4's with
  block1's, inv5's with the padded lifting; the padding is cropped and a 1x1 conv maps to the
  output channels.

The published network built a time embedding (``time_mlp``) and a per-block ``mlp`` of it, and
then never used them: its output did not depend on the noise level (it was only divided by
the level's variance outside). ``noise_conditioning=False`` reproduces that exactly (the
modules exist, so converted checkpoints load, and c_noise is ignored). ``noise_conditioning=
True`` uses them as evidently intended: every block's pre-activation is scaled and shifted
per sample, h <- h (1 + scale) + shift with (scale, shift) = mlp(time_mlp(c_noise)).

The spectral weights are stored dense (complex) or, with ``factorization='tucker'``, as a
complex Tucker core and factors whose ranks follow the published rule (tensorly's
``validate_tucker_rank`` with the fractional ``rank``), so the parameter count of the published
settings is the published one. The published computation has two quirks kept here because a
converted checkpoint was trained with them: when a block shrinks the grid the negative row
frequencies are cut off by irfft2's trimming, and when it enlarges the grid they land on high
positive rows (docs/differences.md, "The published network").
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LegacyUNO", "legacy_layout", "tucker_rank", "tucker_to_dense"]

# Published block names, in forward order, and the index of the block whose output each
# up block's output is concatenated with (-1: the padded lifting).
BLOCK_NAMES = ("block1", "block2", "block3", "block4", "inv2_9", "inv3", "inv4", "inv5")
SKIP_SOURCES = {"inv2_9": "block3", "inv3": "block2", "inv4": "block1", "inv5": "lift"}
# The sinusoidal time features see c_noise * TIME_SCALE: the EDM c_noise = log(sigma) / 4 of the
# project's levels spans about one unit, the published level indices spanned hundreds.
TIME_SCALE = 1000.0


def legacy_layout(width: int, channel_multipliers: Sequence[int], grid: int, fmult: float) -> List[dict]:
    """Per block: name, in / out channels, nominal in / out sizes, modes per axis, scale factor."""
    a = [int(m) for m in channel_multipliers]
    if len(a) != 4 or min(a) < 1:
        raise ValueError(f"the published UNO has 4 levels: channel_multipliers must be 4 positive ints, got "
                         f"{list(channel_multipliers)!r}")
    s = int(grid)
    sizes = [s, s, int(s * 0.75), s // 2, s // 4, s // 2, int(s * 0.75), s, s]
    d = int(width)
    channels = [(d, a[0] * d), (a[0] * d, a[1] * d), (a[1] * d, a[2] * d), (a[2] * d, a[3] * d),
                (a[3] * d, a[2] * d), (2 * a[2] * d, a[1] * d), (2 * a[1] * d, a[0] * d), (2 * a[0] * d, d)]
    out = []
    for i, name in enumerate(BLOCK_NAMES):
        n_in, n_out = sizes[i], sizes[i + 1]
        modes = int(n_in * fmult)
        out.append(dict(name=name, in_channels=channels[i][0], out_channels=channels[i][1], in_size=n_in,
                        out_size=n_out, modes=modes, scale=n_out / n_in))
    return out


def tucker_rank(shape: Sequence[int], rank: float) -> List[int]:
    """The Tucker rank the published code used for a fractional ``rank`` (tensorly's rule)."""
    from tensorly.tucker_tensor import validate_tucker_rank

    return [int(r) for r in validate_tucker_rank(tuple(int(s) for s in shape), rank=float(rank))]


def tucker_to_dense(core: torch.Tensor, factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """W[i, o, x, y] = sum core[a, b, c, d] F0[i, a] F1[o, b] F2[x, c] F3[y, d]."""
    return torch.einsum("abcd,ia,ob,xc,yd->ioxy", core, *factors)


def _grid_channels(x: torch.Tensor) -> torch.Tensor:
    # float64 linspace cast once, as the published np.linspace -> float tensor.
    b, _, h, w = x.shape
    gy = torch.linspace(0, 1, h, dtype=torch.float64).to(device=x.device, dtype=x.dtype)
    gx = torch.linspace(0, 1, w, dtype=torch.float64).to(device=x.device, dtype=x.dtype)
    return torch.stack([gy[:, None].expand(h, w), gx[None, :].expand(h, w)]).unsqueeze(0).expand(b, 2, h, w)


class _Sinusoidal(nn.Module):
    """The published SinusoidalPositionEmbeddings: [sin(t f_k), cos(t f_k)], f_k = 10000^(-k/(half-1))."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        args = t[:, None] * freqs[None, :]
        return torch.cat((args.sin(), args.cos()), dim=-1)


class SpectralWeights(nn.Module):
    """The two corner weights (in, out, m/2, m/2) of one spectral convolution, dense or Tucker."""

    def __init__(self, in_channels: int, out_channels: int, half_modes: int, factorization: Optional[str],
                 rank: float):
        super().__init__()
        shape = (in_channels, out_channels, half_modes, half_modes)
        self.factorization = factorization
        # The published init: every corner's dense tensor ~ N(0, std^2), std = 1 / (in * out).
        std = 1.0 / (in_channels * out_channels)
        if factorization is None:
            self.weight = nn.Parameter(std * torch.randn(2, *shape, dtype=torch.cfloat))
            return
        ranks = tucker_rank(shape, rank)
        # tltorch's Tucker normal_: core and factors share std (std / sqrt(prod ranks))^(1 / (order + 1)).
        part = (std / math.sqrt(math.prod(ranks))) ** (1.0 / 5)
        self.core = nn.Parameter(part * torch.randn(2, *ranks, dtype=torch.cfloat))
        self.factors = nn.ParameterList(
            nn.Parameter(part * torch.randn(2, s, r, dtype=torch.cfloat)) for s, r in zip(shape, ranks))

    def dense(self) -> torch.Tensor:
        """(2, in, out, m/2, m/2) complex."""
        if self.factorization is None:
            return self.weight
        return torch.stack([tucker_to_dense(self.core[k], [f[k] for f in self.factors]) for k in range(2)])

    def contract(self, xf: torch.Tensor, corner: int) -> torch.Tensor:
        """sum_i xf[b, i, x, y] W_corner[i, o, x, y]; Tucker weights are contracted factor by factor, as
        the published 'factorized' implementation did, never building the dense tensor (5.6 GB at the
        published settings)."""
        if self.factorization is None:
            return torch.einsum("bixy,ioxy->boxy", xf, self.weight[corner])
        f = [t[corner] for t in self.factors]
        return torch.einsum("bixy,pqrs,ip,oq,xr,ys->boxy", xf, self.core[corner], *f)


class LegacyBlock(nn.Module):
    """One published ResnetBlock: gelu(norm(K x) + resize(W x)), optionally FiLM-conditioned."""

    def __init__(self, in_channels: int, out_channels: int, modes: int, scale: float, time_dim: int, groups: int,
                 factorization: Optional[str], rank: float):
        super().__init__()
        self.half_modes = modes // 2
        self.scale = float(scale)
        self.spectral = SpectralWeights(in_channels, out_channels, self.half_modes, factorization, rank)
        self.bias = nn.Parameter(torch.randn(1, out_channels, 1, 1) / (in_channels * out_channels))
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm = nn.GroupNorm(groups, out_channels) if groups > 0 else None
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * out_channels))

    def _size(self, n: int) -> int:
        return int(round(n * self.scale))

    def forward(self, x: torch.Tensor, t_emb: Optional[torch.Tensor]) -> torch.Tensor:
        b, _, h, w = x.shape
        out_shape = (self._size(h), self._size(w))
        m = self.half_modes
        if h < m or w // 2 + 1 < m:
            raise ValueError(f"a {h}x{w} grid is too coarse for this block's {2 * m} Fourier modes per axis")
        skip = F.interpolate(self.skip(x), size=out_shape, mode="bicubic", align_corners=True, antialias=True)
        xf = torch.fft.rfftn(x.float(), norm="forward", dim=(-2, -1))
        out = torch.zeros(b, self.skip.out_channels, h, w // 2 + 1, dtype=torch.cfloat, device=x.device)
        out[:, :, :m, :m] = self.spectral.contract(xf[:, :, :m, :m], 0)
        out[:, :, -m:, :m] = self.spectral.contract(xf[:, :, -m:, :m], 1)
        # irfftn trims / zero-pads the row axis at its end: the published resampling (see the module doc).
        h_out = torch.fft.irfftn(out, s=out_shape, norm="forward") + self.bias
        if self.norm is not None:
            h_out = self.norm(h_out)
        h_out = h_out + skip
        if t_emb is not None:
            scale, shift = self.mlp(t_emb).to(h_out.dtype).chunk(2, dim=1)
            h_out = h_out * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        return F.gelu(h_out)


class LegacyUNO(nn.Module):
    """The published UNO (module docstring); ``net(x, c_noise, labels=None)`` returns F(x) of shape (B, C_out, H, W).

    ``grid`` is the published s + npad: the padded training size that fixes the modes and the
    resize factors; ``pad`` the padding in px at the training size (published npad); at another
    resolution H the padding is pad * H / (grid - pad) px, as the published super-resolution
    doubled it. ``embedding_dim`` is the time embedding size (None: 4 * width, as published).
    """

    def __init__(self, in_channels: int = 2, out_channels: int = 2, width: int = 128,
                 channel_multipliers: Sequence[int] = (1, 2, 4, 4), grid: int = 128, pad: int = 8,
                 fmult: float = 0.5, groups: int = 0, num_freqs_input: int = 0, noise_conditioning: bool = True,
                 embedding_dim: Optional[int] = None, factorization: Optional[str] = None, rank: float = 1.0):
        super().__init__()
        if isinstance(factorization, str) and factorization.lower() in ("none", "", "dense"):
            factorization = None
        if factorization not in (None, "tucker"):
            raise ValueError(f"the legacy UNO stores its spectral weights dense or tucker-factorized, got "
                             f"factorization={factorization!r}")
        if min(int(in_channels), int(out_channels), int(width)) < 1:
            raise ValueError("in_channels, out_channels and width must be positive")
        if int(pad) < 0 or int(grid) - int(pad) < 1:
            raise ValueError(f"need 0 <= pad < grid, got grid={grid}, pad={pad}")
        if not 0 < float(fmult) <= 1:
            raise ValueError(f"fmult must lie in (0, 1], got {fmult}")
        if int(num_freqs_input) != 0:
            raise ValueError("num_freqs_input must be 0: the published network never used input frequencies")
        if not float(rank) > 0:
            raise ValueError(f"rank must be positive, got {rank}")
        time_dim = 4 * int(width) if embedding_dim is None else int(embedding_dim)
        if time_dim < 4:
            raise ValueError(f"embedding_dim must be at least 4, got {embedding_dim}")
        layout = legacy_layout(width, channel_multipliers, grid, fmult)
        groups = int(groups)
        if groups < 0 or any(b["out_channels"] % groups for b in layout if groups > 0):
            raise ValueError(f"groups = {groups} must be 0 or divide every block's channel count")
        if min(b["modes"] for b in layout) < 2:
            raise ValueError(f"fmult = {fmult} leaves a block of the {grid}-px grid with fewer than 2 modes")
        self.config = dict(in_channels=int(in_channels), out_channels=int(out_channels), width=int(width),
                           channel_multipliers=[int(m) for m in channel_multipliers], grid=int(grid), pad=int(pad),
                           fmult=float(fmult), groups=groups, num_freqs_input=int(num_freqs_input),
                           noise_conditioning=bool(noise_conditioning), embedding_dim=embedding_dim and int(
                               embedding_dim), factorization=factorization, rank=float(rank))
        self.layout = layout
        self.init_conv = nn.Conv2d(in_channels + 2, width, 1)
        self.time_mlp = nn.Sequential(_Sinusoidal(time_dim), nn.Linear(time_dim, time_dim), nn.GELU(),
                                      nn.Linear(time_dim, time_dim))
        for b in layout:
            self.add_module(b["name"], LegacyBlock(b["in_channels"], b["out_channels"], b["modes"], b["scale"],
                                                   time_dim, groups, factorization, rank))
        self.final_conv = nn.Conv2d(2 * width, out_channels, 1)

    def padding(self, h: int, w: int) -> Tuple[int, int]:
        base = self.config["grid"] - self.config["pad"]
        return (int(round(self.config["pad"] * h / base)), int(round(self.config["pad"] * w / base)))

    def forward(self, x: torch.Tensor, c_noise, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if labels is not None:
            raise ValueError("LegacyUNO has no class conditioning; it cannot take labels")
        if x.ndim != 4 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(f"x must have shape (B, {self.config['in_channels']}, H, W), got {tuple(x.shape)}")
        t_emb = None
        if self.config["noise_conditioning"]:
            c = torch.as_tensor(c_noise, device=x.device, dtype=torch.float32).reshape(-1)
            if c.numel() == 1:
                c = c.expand(x.shape[0])
            if c.shape != (x.shape[0],):
                raise ValueError(f"c_noise must have shape ({x.shape[0]},), got {tuple(c.shape)}")
            t_emb = self.time_mlp(c * TIME_SCALE)
        p_h, p_w = self.padding(x.shape[-2], x.shape[-1])
        lift = F.pad(self.init_conv(torch.cat([x, _grid_channels(x)], dim=1)), [0, p_w, 0, p_h])
        outputs = {"lift": lift}
        h = lift
        for b in self.layout:
            h = getattr(self, b["name"])(h, t_emb)
            outputs[b["name"]] = h
            if b["name"] in SKIP_SOURCES:
                skip = outputs[SKIP_SOURCES[b["name"]]]
                if skip.shape[-2:] != h.shape[-2:]:
                    # The published resizing rounds each block's size on its own; the way up meets the way
                    # down only on grids whose sizes round back (multiples of the training grid's ratios).
                    raise ValueError(f"a {x.shape[-2]}x{x.shape[-1]} input does not fit the published layout: "
                                     f"{b['name']} returns {tuple(h.shape[-2:])}, its skip has {tuple(skip.shape[-2:])}")
                h = torch.cat([h, skip], dim=1)
        h = h[..., :h.shape[-2] - p_h, :h.shape[-1] - p_w]
        return self.final_conv(h)
