"""Noise-conditioned neural-operator backbones built from ``neuralop`` pieces.

Both networks compute ``F(x, c_noise)`` for ``x`` of shape ``(B, C_in, H, W)`` at
any resolution (mode counts are fixed integers) and ``c_noise`` of shape ``(B,)``
(one noise level per sample).  They are meant to sit inside an EDM
preconditioner, ``D = c_skip x + c_out F(c_in x, c_noise)``.

Design
------
* The spectral parts (lifting, ``FNOBlocks`` with their ``SpectralConv``,
  horizontal skips, projection, domain padding) are the library's own modules:
  the library model (``neuralop.models.FNO`` / ``UNO``) is constructed and its
  pieces are taken over.  The library model object itself is *not* kept as a
  submodule, because ``neuralop``'s ``BaseModel.state_dict`` injects a
  ``'_metadata'`` entry (with functions and classes in it) into the state dict
  of every enclosing module: that breaks ``load_state_dict(strict=True)`` and
  ``torch.load(weights_only=True)``.
* Our own ``forward`` runs the pieces and adds the conditioning:
  - a per-channel bias from the noise embedding right after lifting;
  - after every operator layer a per-sample FiLM,
    ``h <- h * (1 + scale_i(e)) + shift_i(e)``, with ``scale_i / shift_i`` one
    ``Linear(embedding_dim -> 2 * channels_i)`` initialised to zero, so at
    initialisation every layer is unchanged.  (``neuralop``'s AdaIN takes one
    embedding for the whole batch, so it cannot condition per sample.)
* Grid coordinates ``k / n`` on ``[0, 1)`` (the same physical points at any
  resolution, as in neuralop's ``GridEmbeddingND``) are computed on the fly, so
  there is no per-resolution cache that could sit on the wrong device.
* UNO: ``FNOBlocks(n_layers=1)`` applies no nonlinearity after its spectral
  path, so a GELU follows the FiLM of every UNO layer except the last.  On the
  way up every layer is given the exact spatial shape recorded on the way down,
  so the horizontal skips are concatenated without resampling and odd sizes
  (60 -> 30 -> 15 -> 8 -> 15 -> 30 -> 60) come back to the input shape.

``neuralop`` (which imports wandb, ~2 s) is imported lazily in the constructors.
"""

from __future__ import annotations

import contextlib
import io
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .embedding import NoiseLevelEmbedding
from .spectral import fast_spectral_ok, spectral_conv

__all__ = ["ConditionedFNO", "ConditionedUNO", "count_parameters", "uno_layout"]

_FACTORIZATIONS = (None, "tucker", "cp", "tt")
MIN_COARSE_MODES = 4


# ----------------------------------------------------------------------------- helpers


def count_parameters(net: nn.Module) -> int:
    """Number of real trainable parameters (a complex entry counts as two)."""
    return int(sum(p.numel() * (2 if p.is_complex() else 1) for p in net.parameters() if p.requires_grad))


def _neuralop_models():
    # Lazy: importing neuralop imports wandb (about 2 s).
    from neuralop import models

    return models


def _check_modes(n_modes) -> Tuple[Union[int, List[int]], Tuple[int, int]]:
    """Return (JSON-friendly value for the config, (modes_h, modes_w))."""
    if isinstance(n_modes, bool):
        raise TypeError("n_modes must be an int or a pair of ints")
    if isinstance(n_modes, int):
        modes = (n_modes, n_modes)
        stored: Union[int, List[int]] = int(n_modes)
    else:
        modes = tuple(int(m) for m in n_modes)
        if len(modes) != 2:
            raise ValueError(f"n_modes must be an int or a pair of ints (2-D data), got {n_modes!r}")
        stored = list(modes)
    if min(modes) < 1:
        raise ValueError(f"n_modes must be positive, got {n_modes!r}")
    return stored, modes


def _check_factorization(factorization, rank) -> Optional[str]:
    if factorization is not None:
        factorization = str(factorization).lower()
        if factorization in ("none", "", "dense"):  # e.g. from a YAML / command-line string
            factorization = None
    if factorization not in _FACTORIZATIONS:
        raise ValueError(f"factorization must be one of {_FACTORIZATIONS}, got {factorization!r}")
    if not (float(rank) > 0):
        raise ValueError(f"rank must be positive, got {rank!r}")
    return factorization


def _check_padding(domain_padding):
    if domain_padding is None:
        return None
    if isinstance(domain_padding, (list, tuple)):
        values = [float(p) for p in domain_padding]
        if len(values) != 2 or min(values) < 0:
            raise ValueError(f"domain_padding must be a non-negative fraction or a pair, got {domain_padding!r}")
        return values
    value = float(domain_padding)
    if value < 0:
        raise ValueError(f"domain_padding must be non-negative, got {domain_padding!r}")
    return value


def _validated_config(in_channels, out_channels, width, n_modes, embedding_dim, factorization, rank,
                      domain_padding, positional_embedding, **specific) -> Tuple[dict, Tuple[int, int]]:
    """The checked, JSON-friendly constructor arguments shared by both nets, and the mode pair."""
    stored_modes, modes = _check_modes(n_modes)
    if width < 1 or in_channels < 1 or out_channels < 1:
        raise ValueError("in_channels, out_channels and width must be positive")
    config = dict(
        in_channels=int(in_channels),
        out_channels=int(out_channels),
        width=int(width),
        n_modes=stored_modes,
        embedding_dim=int(embedding_dim),
        factorization=_check_factorization(factorization, rank),
        rank=float(rank),
        domain_padding=_check_padding(domain_padding),
        positional_embedding=bool(positional_embedding),
        **specific,
    )
    return config, modes


def grid_coordinates(x: torch.Tensor) -> torch.Tensor:
    """Coordinates ``(k / H, l / W)`` of every grid point on ``[0, 1)^2``: (B, 2, H, W)."""
    b, _, h, w = x.shape
    gy = torch.arange(h, device=x.device, dtype=x.dtype) / h
    gx = torch.arange(w, device=x.device, dtype=x.dtype) / w
    yy, xx = torch.meshgrid(gy, gx, indexing="ij")
    return torch.stack([yy, xx]).unsqueeze(0).expand(b, 2, h, w)


def _fusable(block) -> bool:
    """Whether ConditionedUNO._run_block computes this FNOBlocks exactly as its own forward."""
    from neuralop.layers.skip_connections import Flattened1dConv

    skips = (block.fno_skips, getattr(block, "channel_mlp_skips", None))
    return (block.n_layers == 1 and not block.preactivation and block.norm is None and block.stabilizer is None
            and not block.complex_data and block.use_channel_mlp
            and all(s is not None and isinstance(s[0], Flattened1dConv) and s[0].conv.bias is None for s in skips))


def _conv1x1(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A channel map (out, in, 1) at every grid point of x (B, in, H, W), as neuralop's Flattened1dConv."""
    b, _, h, w = x.shape
    return F.conv1d(x.reshape(b, x.shape[1], h * w), weight).view(b, weight.shape[0], h, w)


def _bicubic_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in) matrix of F.interpolate(mode='bicubic', align_corners=True) along one axis."""
    # Interpolating the unit vectors gives PyTorch's own weights and border clamping; the other
    # axis has size 1, where the bicubic weights are exactly (0, 1, 0, 0).
    eye = torch.eye(n_in, device=like.device, dtype=like.dtype).view(n_in, 1, n_in, 1)
    return F.interpolate(eye, size=(n_out, 1), mode="bicubic", align_corners=True).view(n_in, n_out).T


def _bicubic(x: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
    """neuralop's 2-D resample (bicubic, align_corners=True) as A_h x A_w^T: the bicubic kernel is
    a product of one kernel per axis, and two matrix products run far faster than
    upsample_bicubic2d (above all its backward) on a CPU."""
    h, w = x.shape[-2:]
    if [h, w] == list(out_shape):
        return x
    if w != out_shape[1]:
        x = torch.matmul(x, _bicubic_matrix(w, out_shape[1], x).T)
    if h != out_shape[0]:
        x = torch.matmul(_bicubic_matrix(h, out_shape[0], x), x)
    return x


def _zero_linear(in_features: int, out_features: int) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class _ConditionedOperator(nn.Module):
    """Shared pieces: noise embedding, bias after lifting, FiLM layers, input checks."""

    config: dict

    def _init_conditioning(self, embedding_dim: int, width: int, film_channels: Sequence[int]) -> None:
        self.embedding = NoiseLevelEmbedding(embedding_dim)
        self.lift_bias = nn.Linear(embedding_dim, width)  # default init: active from the start
        self.film = nn.ModuleList(_zero_linear(embedding_dim, 2 * c) for c in film_channels)

    def _embed(self, x: torch.Tensor, c_noise, labels=None) -> torch.Tensor:
        if labels is not None:
            raise ValueError(f"{type(self).__name__} has no class conditioning; it cannot take labels")
        if x.ndim != 4:
            raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
        if x.shape[1] != self.config["in_channels"]:
            raise ValueError(f"x has {x.shape[1]} channels, the network expects {self.config['in_channels']}")
        c = torch.as_tensor(c_noise, device=x.device, dtype=x.dtype)
        if c.ndim == 2 and c.shape[1] == 1:
            c = c[:, 0]
        if c.ndim == 0:
            c = c.expand(x.shape[0])
        if c.shape != (x.shape[0],):
            raise ValueError(f"c_noise must have shape ({x.shape[0]},), got {tuple(c.shape)}")
        return F.silu(self.embedding(c))

    def _lift_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.config["positional_embedding"]:
            x = torch.cat([x, grid_coordinates(x)], dim=1)
        return x

    def _apply_film(self, index: int, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film[index](e).to(h.dtype).chunk(2, dim=1)
        # One pass over h (addcmul), not a product and then a sum: at 120 px this saves about 5 %
        # of a training step on one CPU thread and a full-size intermediate per layer.
        return torch.addcmul(shift[:, :, None, None], h, 1 + scale[:, :, None, None])


# ----------------------------------------------------------------------------- FNO


class ConditionedFNO(_ConditionedOperator):
    """Noise-conditioned FNO (``neuralop.models.FNO`` pieces + per-sample FiLM).

    ``width`` channels in ``n_layers`` Fourier layers with ``n_modes`` modes
    (an int, or a pair for (H, W)); lifting and projection are channel MLPs with
    ``2 * width`` hidden channels.  ``factorization`` (``"tucker"``, ``"cp"``,
    ``"tt"`` or None) and ``rank`` (a fraction) go to the spectral convolutions;
    ``domain_padding`` is a fraction of the domain, as neuralop takes it.
    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 2,
        width: int = 32,
        n_layers: int = 4,
        n_modes: Union[int, Sequence[int]] = 16,
        embedding_dim: int = 128,
        factorization: Optional[str] = None,
        rank: float = 1.0,
        domain_padding: Union[None, float, Sequence[float]] = None,
        positional_embedding: bool = True,
    ):
        super().__init__()
        if n_layers < 1:
            raise ValueError("n_layers must be positive")
        self.config, modes = _validated_config(in_channels, out_channels, width, n_modes, embedding_dim,
                                               factorization, rank, domain_padding, positional_embedding,
                                               n_layers=int(n_layers))
        factorization, domain_padding = self.config["factorization"], self.config["domain_padding"]
        lifted_in = in_channels + (2 if positional_embedding else 0)
        library_fno = _neuralop_models().FNO(
            n_modes=modes,
            in_channels=lifted_in,
            out_channels=out_channels,
            hidden_channels=width,
            n_layers=n_layers,
            positional_embedding=None,  # our own grid channels (see grid_coordinates)
            factorization=factorization,
            rank=rank,
            domain_padding=domain_padding,
        )
        # Take over the pieces; do not keep the BaseModel (see the module docstring).
        self.lifting = library_fno.lifting
        self.fno_blocks = library_fno.fno_blocks  # one FNOBlocks holding n_layers layers
        self.projection = library_fno.projection
        self.domain_padding = library_fno.domain_padding  # None or DomainPadding (no parameters)
        del library_fno
        self._init_conditioning(embedding_dim, width, [width] * n_layers)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        e = self._embed(x, c_noise, labels)
        h = self.lifting(self._lift_input(x))
        h = h + self.lift_bias(e).to(h.dtype)[:, :, None, None]
        if self.domain_padding is not None:
            h = self.domain_padding.pad(h)
        for i in range(self.config["n_layers"]):
            # GELU is applied inside FNOBlocks after every layer but the last.
            h = self.fno_blocks(h, i)
            h = self._apply_film(i, h, e)
        if self.domain_padding is not None:
            h = self.domain_padding.unpad(h)
        return self.projection(h)


# ----------------------------------------------------------------------------- UNO


def uno_layout(width: int, channel_multipliers: Sequence[int], n_modes: Tuple[int, int]) -> Dict[str, object]:
    """Encoder-decoder layout of ``ConditionedUNO``.

    With L = len(channel_multipliers) there are 2 L layers:
    down  i = 0..L-1   : level i (resolution 2^-i), width width * m_i, scaling 1 then 1/2;
    up    L-1+k, k=1..L-1 : scaling 2, from level L-k to level L-1-k, width width * m_{L-1-k};
    final 2L-1         : scaling 1 at level 0, width width * m_0.
    Horizontal skips join the outputs of down layer j to the input of the layer that
    reads level j on the way up (same resolution, no resampling): {L-1+k: L-k for
    k >= 2} and {2L-1: 0}.  Each layer uses n_modes >> level modes, where level is
    the coarser of its input and output levels, but at least 4 (and never more
    than n_modes).  E.g. mults (1, 2, 4, 4): widths w, 2w, 4w, 4w, 4w, 2w, w, w;
    scalings 1, 1/2, 1/2, 1/2, 2, 2, 2, 1; skips {5: 2, 6: 1, 7: 0}.
    """
    mults = [int(m) for m in channel_multipliers]
    if not mults or min(mults) < 1:
        raise ValueError(f"channel_multipliers must be a non-empty list of positive ints, got {channel_multipliers!r}")
    n_levels = len(mults)
    widths, scalings, levels, work_levels = [], [], [], []
    for i in range(n_levels):  # encoder
        widths.append(width * mults[i])
        scalings.append(1.0 if i == 0 else 0.5)
        levels.append(i)
        work_levels.append(i)
    for k in range(1, n_levels):  # decoder
        widths.append(width * mults[n_levels - 1 - k])
        scalings.append(2.0)
        levels.append(n_levels - 1 - k)
        work_levels.append(n_levels - k)
    widths.append(width * mults[0])  # final full-resolution layer
    scalings.append(1.0)
    levels.append(0)
    work_levels.append(0)
    skips = {n_levels - 1 + k: n_levels - k for k in range(2, n_levels)}
    skips[2 * n_levels - 1] = 0
    modes = []
    for lev in work_levels:
        modes.append([min(m, max(MIN_COARSE_MODES, m >> lev)) for m in n_modes])
    return dict(widths=widths, scalings=scalings, levels=levels, modes=modes, skips=skips)


class ConditionedUNO(_ConditionedOperator):
    """Noise-conditioned U-shaped neural operator (``neuralop.models.UNO`` pieces).

    See ``uno_layout`` for the layers, widths, scalings, modes and skips.  Every
    layer is followed by a per-sample FiLM and, except the last, a GELU.
    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 2,
        width: int = 32,
        channel_multipliers: Sequence[int] = (1, 2, 4, 4),
        n_modes: Union[int, Sequence[int]] = 16,
        embedding_dim: int = 128,
        factorization: Optional[str] = None,
        rank: float = 1.0,
        domain_padding: Union[None, float, Sequence[float]] = None,
        positional_embedding: bool = True,
    ):
        super().__init__()
        self.config, modes = _validated_config(in_channels, out_channels, width, n_modes, embedding_dim,
                                               factorization, rank, domain_padding, positional_embedding,
                                               channel_multipliers=[int(m) for m in channel_multipliers])
        factorization, domain_padding = self.config["factorization"], self.config["domain_padding"]
        layout = uno_layout(width, channel_multipliers, modes)
        self.levels: List[int] = list(layout["levels"])
        self.skips_map: Dict[int, int] = dict(layout["skips"])
        n_layers = len(layout["widths"])
        lifted_in = in_channels + (2 if positional_embedding else 0)
        # UNO prints fno_skip / channel_mlp_skip for every layer, whatever `verbose` says.
        with contextlib.redirect_stdout(io.StringIO()):
            library_uno = _neuralop_models().UNO(
                in_channels=lifted_in,
                out_channels=out_channels,
                hidden_channels=width,
                lifting_channels=2 * width,
                projection_channels=2 * width,
                positional_embedding=None,  # our own grid channels (see grid_coordinates)
                n_layers=n_layers,
                uno_out_channels=list(layout["widths"]),
                uno_n_modes=[list(m) for m in layout["modes"]],
                uno_scalings=[[s, s] for s in layout["scalings"]],
                horizontal_skips_map=dict(self.skips_map),
                channel_mlp_skip="linear",  # 'soft-gating' fails when channel counts change
                factorization=factorization,
                rank=rank,
                domain_padding=domain_padding,
                verbose=False,
            )
        self.lifting = library_uno.lifting
        self.fno_blocks = library_uno.fno_blocks  # ModuleList of FNOBlocks(n_layers=1)
        self.horizontal_skips = library_uno.horizontal_skips  # ModuleDict keyed by source layer
        self.projection = library_uno.projection
        self.domain_padding = library_uno.domain_padding
        del library_uno
        self._init_conditioning(embedding_dim, width, layout["widths"])
        # The explicit nonlinearity after every layer but the last (a module, so it
        # can be inspected with hooks; it has no parameters).
        self.activation = nn.GELU()
        # Not part of the config or the state dict: False runs neuralop's FNOBlocks.forward
        # as it is (the reference path of tests/test_nets.py and scripts/bench_train.py).
        self.fused_skips = all(_fusable(block) for block in self.fno_blocks)
        # Also outside the config and state dict: False keeps neuralop's SpectralConv.forward in the
        # fused path (to time or test the two spectral convolutions against each other).
        self.fast_spectral = True

    def _run_block(self, block, h: torch.Tensor, output_shape) -> torch.Tensor:
        """One FNOBlocks(n_layers=1) layer; the same function as ``block(h, output_shape=...)``.

        neuralop computes each of the two linear skips (fno_skip, channel_mlp_skip) as a 1x1
        convolution followed by its own bicubic resampling to the output grid.  Both maps are
        linear, one acts on channels and the other on the grid, so they commute: here a
        shrinking layer resamples its input once (not both skip outputs) and runs the 1x1
        convolutions on the coarse grid; a growing layer convolves on the coarse grid first, as
        neuralop does.  The resampling is two small matrix products with PyTorch's own bicubic
        weights, which replace upsample_bicubic2d (its backward is a slow scatter on a CPU).  The
        spectral convolution transforms only its kept modes, by matrix products (see
        model_code/nets/spectral.py), and its last product adds the fno skip.
        Results equal neuralop's to float rounding (tests/test_nets.py).
        """
        if not self.fused_skips:
            return block(h, output_shape=output_shape)
        conv = block.convs[0]
        in_shape = list(h.shape[-2:])
        if output_shape is not None:
            out_shape = list(output_shape)
        elif conv.resolution_scaling_factor is not None:
            out_shape = [round(s * r) for s, r in zip(in_shape, conv.resolution_scaling_factor)]
        else:
            out_shape = in_shape
        weights = (block.fno_skips[0].conv.weight, block.channel_mlp_skips[0].conv.weight)
        # Two convolutions rather than one of the stacked weights: splitting the stacked result
        # costs a full-size concatenation of its gradients in the backward pass.
        if out_shape[0] * out_shape[1] < in_shape[0] * in_shape[1]:
            coarse = _bicubic(h, out_shape)
            skip_fno, skip_mlp = (_conv1x1(coarse, w) for w in weights)
        else:
            skip_fno, skip_mlp = (_bicubic(_conv1x1(h, w), out_shape) for w in weights)
        if self.fast_spectral and fast_spectral_ok(conv):
            x = spectral_conv(conv, h, out_shape, add=skip_fno)
        else:
            x = conv(h, output_shape=output_shape) + skip_fno
        return block.channel_mlp[0](x) + skip_mlp

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        e = self._embed(x, c_noise, labels)
        h = self.lifting(self._lift_input(x))
        h = h + self.lift_bias(e).to(h.dtype)[:, :, None, None]
        if self.domain_padding is not None:
            h = self.domain_padding.pad(h)
        level_shapes = {0: list(h.shape[-2:])}
        skip_values: Dict[int, torch.Tensor] = {}
        last = len(self.fno_blocks) - 1
        for i, block in enumerate(self.fno_blocks):
            if i in self.skips_map:
                h = torch.cat([h, skip_values[self.skips_map[i]]], dim=1)
            # Shapes of levels already visited are reused exactly (odd sizes round
            # on the way down; the way up must land on the same grids).
            h = self._run_block(block, h, level_shapes.get(self.levels[i]))
            level_shapes.setdefault(self.levels[i], list(h.shape[-2:]))
            h = self._apply_film(i, h, e)
            if i != last:
                h = self.activation(h)
            if str(i) in self.horizontal_skips:
                skip_values[i] = self.horizontal_skips[str(i)](h)
        if self.domain_padding is not None:
            h = self.domain_padding.unpad(h)
        return self.projection(h)
