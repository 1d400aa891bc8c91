"""neuralop's 2-D ``SpectralConv`` (neuraloperator 2.0.0) without full-grid FFTs.

``spectral_conv(conv, x, out_shape)`` computes ``conv(x, output_shape=out_shape)`` with the conv's
own weight and contraction, but transforms only the kept modes: along the width a real matrix
product onto the kept rfft columns, along the height a complex matrix product onto the kept
rows, and back the same way onto the output grid.  ConditionedUNO's layers keep at most about a
quarter of the rows and of the rfft columns, so on one CPU thread the matrix products run several
times faster than the full rfftn / irfftn (pocketfft is slow at sizes such as 136 = 8 x 17), and
they need none of the fftshift rolls, the zero-filled output spectrum or the slice
assignments (nor their backward).

neuralop's conventions are kept as they are, including two that look accidental:
* the output spectrum has the *input* grid's size and is trimmed or zero-padded at the end by
  irfftn, so a shrinking layer drops the bins past the output height (the negative
  frequencies) and a growing layer leaves them at their input bin indices;
* it applies fftshift twice, which for an odd input height is a roll by -1, not the identity:
  frequency f lands in bin f - 1.
Every kept mode is therefore placed at the bin neuralop puts it in (``_output_bins``).

A tucker-factorized weight is contracted by ``_contract_tucker`` in an order of its own (opt_einsum's
order for neuralop's einsum first rebuilds much of the full weight); other weights use the conv's
own contraction.
"""

from __future__ import annotations

import functools
import math
from typing import List, Sequence

import torch
import torch.nn.functional as F

__all__ = ["fast_spectral_ok", "spectral_conv"]

_NORMS = ("forward", "backward", "ortho")


def fast_spectral_ok(conv) -> bool:
    """Whether spectral_conv computes this conv exactly as its own forward."""
    from neuralop.layers.spectral_convolution import SpectralConv

    return (type(conv) is SpectralConv and conv.order == 2 and not conv.complex_data and not conv.separable
            and conv.fno_block_precision == "full" and conv.fft_norm in _NORMS
            and not conv._forward_hooks and not conv._forward_pre_hooks)


def _norm_scale(norm: str, n: int, inverse: bool) -> float:
    """torch.fft's scaling of a transform over n points."""
    if norm == "ortho":
        return 1.0 / math.sqrt(n)
    return 1.0 / n if (norm == "forward") != inverse else 1.0


def _mode_weight(conv, fft_size: Sequence[int]):
    """The slice of conv.weight that neuralop contracts with, as its forward selects it."""
    starts = [m_max - min(size, m) for size, m, m_max in zip(fft_size, conv.n_modes, conv.max_n_modes)]
    rows = slice(starts[0] // 2, -starts[0] // 2) if starts[0] else slice(None)
    cols = slice(None, -starts[1]) if starts[1] else slice(None)
    return conv.weight[(slice(None), slice(None), rows, cols)]


def _output_bins(n_in: int, kept: int) -> List[int]:
    """Bin of each kept row of the contraction in neuralop's output spectrum (see the module doc)."""
    return [(2 * (n_in // 2) - kept // 2 + i) % n_in for i in range(kept)]


def _phase(freqs, n: int, points: int) -> torch.Tensor:
    """2 pi f k / n for every (f, k), reduced mod n in integers first so large products stay exact."""
    f = torch.as_tensor(freqs, dtype=torch.int64)[:, None]
    k = torch.arange(points, dtype=torch.int64)[None, :]
    return (2 * math.pi / n) * ((f * k) % n).double()


@functools.lru_cache(maxsize=64)
def _rfft_columns(n: int, kept: int, scale: float, dtype, device) -> torch.Tensor:
    """(n, 2 kept) real matrix: a row of n points times it gives the first `kept` rfft bins,
    real and imaginary parts interleaved (so the product views as complex)."""
    phase = _phase(range(kept), n, n).T
    mat = torch.stack([torch.cos(phase), -torch.sin(phase)], dim=-1).reshape(n, 2 * kept)
    return (scale * mat).to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def _dft_rows(n: int, kept: int, dtype, device) -> torch.Tensor:
    """(kept, n) complex DFT matrix onto the frequencies -kept//2 .. (kept - 1)//2."""
    phase = _phase(range(-(kept // 2), kept - kept // 2), n, n)
    return torch.polar(torch.ones_like(phase), -phase).to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def _idft_rows(n_in: int, kept: int, n_out: int, dtype, device) -> torch.Tensor:
    """(n_out, kept) complex inverse DFT from neuralop's output bins; bins trimmed by irfftn are 0."""
    bins = _output_bins(n_in, kept)
    phase = _phase(bins, n_out, n_out).T
    mat = torch.polar(torch.ones_like(phase), phase)
    mat[:, [b >= n_out for b in bins]] = 0
    return mat.to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def _irfft_columns(kept: int, n: int, scale: float, dtype, device) -> torch.Tensor:
    """(2 kept, n) real matrix of irfft(n=n) from the first `kept` bins, real and imaginary parts
    interleaved.  As irfft, it ignores the imaginary parts of the zero and Nyquist bins (their sine
    rows are exactly 0) and the bins past n // 2."""
    used = min(kept, n // 2 + 1)
    phase = _phase(range(kept), n, n)
    weight = torch.full((kept, 1), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if n % 2 == 0 and used == n // 2 + 1:
        weight[n // 2] = 1.0
    weight[used:] = 0.0
    sine = torch.sin(phase)
    sine[0] = 0.0
    if n % 2 == 0 and used == n // 2 + 1:
        sine[n // 2] = 0.0
    mat = torch.stack([weight * torch.cos(phase), -weight * sine], dim=1).reshape(2 * kept, n)
    return (scale * mat).to(dtype=dtype, device=device)


def _forward(x: torch.Tensor, rows: int, cols: int, norm: str) -> torch.Tensor:
    """The modes of rfftn(x, norm=norm) that neuralop keeps, in its (fftshifted) order."""
    h, w = x.shape[-2:]
    cdtype = torch.complex64 if x.dtype == torch.float32 else torch.complex128
    half = torch.matmul(x, _rfft_columns(w, cols, _norm_scale(norm, h * w, False), x.dtype, x.device))
    half = torch.view_as_complex(half.view(*half.shape[:-1], cols, 2))
    return torch.matmul(_dft_rows(h, rows, cdtype, x.device), half)


def _inverse(spec: torch.Tensor, bias, h_in: int, out_shape: Sequence[int], norm: str, add) -> torch.Tensor:
    """irfftn(s=out_shape, norm=norm) of neuralop's output spectrum holding spec, plus bias and add."""
    b, c, rows, cols = spec.shape
    h_out, w_out = out_shape
    scale = _norm_scale(norm, h_out * w_out, True)
    idft = _idft_rows(h_in, rows, h_out, spec.dtype, spec.device).expand(b * c, h_out, rows)
    spec = spec.reshape(b * c, rows, cols)
    if bias is None:
        half = torch.bmm(idft, spec)
    else:
        # The bias enters as the real part of the zero-frequency column, which the last product
        # spreads evenly over the grid: no separate pass over the full-size output.
        dc = F.pad(bias.reshape(1, c, 1, 1) / scale, (0, 2 * cols - 1)).expand(b, c, 1, 2 * cols)
        dc = torch.view_as_complex(dc.reshape(b * c, 1, cols, 2))
        half = torch.baddbmm(dc, idft, spec)
    half = torch.view_as_real(half).reshape(b * c * h_out, 2 * cols)
    columns = _irfft_columns(cols, w_out, scale, half.dtype, half.device)
    if add is None:
        out = torch.mm(half, columns)
    else:
        # The addition rides on the product (one pass over the output instead of two).
        out = torch.addmm(add.reshape(b * c * h_out, w_out), half, columns)
    return out.view(b, c, h_out, w_out)


def spectral_conv(conv, x: torch.Tensor, out_shape: Sequence[int], add=None) -> torch.Tensor:
    """``conv(x, output_shape=out_shape) (+ add)`` for a conv with fast_spectral_ok, through matrix
    DFTs of the kept modes only; other data runs the conv itself."""
    if x.ndim != 4 or x.dtype not in (torch.float32, torch.float64):
        out = conv(x, output_shape=out_shape)
        return out if add is None else out + add
    h, w = x.shape[-2:]
    weight = _mode_weight(conv, [h, w // 2 + 1])
    spec = _forward(x, *weight.shape[-2:], conv.fft_norm)
    spec = _contract(conv, spec, weight)
    return _inverse(spec, conv.bias, h, out_shape, conv.fft_norm, add)


def _contract(conv, spec: torch.Tensor, weight) -> torch.Tensor:
    """``conv._contract(spec, weight, separable=False)``, a 4-way tucker weight in a cheaper order."""
    from tltorch.factorized_tensors.factorized_tensors import TuckerTensor

    if isinstance(weight, TuckerTensor) and weight.core.ndim == 4 and len(weight.factors) == 4:
        return _contract_tucker(spec, weight.core, *weight.factors)
    return conv._contract(spec, weight, separable=False)


def _contract_tucker(spec, core, f_in, f_out, f_rows, f_cols) -> torch.Tensor:
    """einsum("bixy,ioxy->boxy") with the weight core x1 f_in x2 f_out x3 f_rows x4 f_cols.

    The order was chosen by timing forward + backward at the rbf-project UNO's layers (batch 4, one
    thread).  The spectrum goes onto the input rank first (the batch is small, so this is far cheaper
    than applying f_in to the core).  The weight then differs per mode: one batched product per row
    takes the row factor's part of the core, with the column rank carried in the output dimension
    and summed against the column factor afterwards, so the products have long dimensions and the
    expanded tensor is on the (smaller) output-rank side.  Building the per-mode (rank x rank) weights
    instead takes fewer FLOPs but runs products with an inner dimension of a few column ranks over a
    large tensor, and was slower; so was carrying the column rank on the input side."""
    b, n_in, rows, cols = spec.shape
    r_in, r_out, r_rows, r_cols = core.shape
    t = torch.mm(spec.permute(0, 2, 3, 1).reshape(-1, n_in), f_in).view(b, rows, cols * r_in)
    per_row = torch.mm(f_rows, core.permute(2, 0, 1, 3).reshape(r_rows, -1))   # (rows, r_in r_out r_cols)
    z = torch.bmm(t.transpose(0, 1).reshape(rows, b * cols, r_in), per_row.view(rows, r_in, -1))
    z = (z.view(rows, b, cols, r_out, r_cols) * f_cols.unsqueeze(1)).sum(-1)
    out = torch.mm(z.view(-1, r_out), f_out.T).view(rows, b, cols, -1)
    return out.permute(1, 3, 0, 2)
