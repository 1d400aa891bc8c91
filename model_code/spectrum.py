"""Power-spectrum error of generated vs real fields (docs/maths.md, "Power spectrum").

Why a spectrum: the per-sample statistics of metrics.py (variance, skewness) are dominated by
the large scales, so super-resolved samples that lack the fine scales of real fields still
score about the real-vs-real floor on them. The radially averaged power spectrum
(metrics.radial_power_spectrum: integer wavenumber bands in cycles per unit domain, FFT with
norm="forward", so a resolved mode has the same power at every resolution) shows, band by
band, how much power a model puts at each scale.

For bands k = 1..K, K = min(H, W) // 2 (k = 0, the mean, is left out: mean_l2 measures it),
the relative error of band k is |P_gen(k) - P_real(k)| / P_real(k). spectrum_error is its
mean over the bands; with the training grid's Nyquist wavenumber `nyquist` < K (super-
resolution) it is also split into the bands the model was trained on (1..nyquist,
spectrum_error_low) and those it never saw (nyquist+1..K, spectrum_error_high), and
spectrum_ratio_high is the mean of P_gen / P_real over the high bands (< 1: too smooth,
> 1: too rough).

The floor is the same computation between two disjoint seeded halves of the real set
(metrics.split_halves; half a as "real", half b as "generated"), as metrics.floor_metrics
does for the W1 metrics: the error two real sets of len(real) // 2 fields each give. A perfect
model compared on n generated fields against all len(real) real ones has less sampling noise
than that (about 1 / sqrt(2) of it when n = len(real)), so it scores on average about 0.7x floor.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch

from . import metrics as M
from .evaluators import Evaluator

ERROR_NAMES = ("spectrum_error", "spectrum_error_low", "spectrum_error_high")


def _check_pair(real, generated):
    M._check_batch(real, "real")
    M._check_batch(generated, "generated")
    if real.shape[1:] != generated.shape[1:]:
        raise ValueError(f"real and generated samples differ in shape: {tuple(real.shape[1:])} "
                         f"vs {tuple(generated.shape[1:])}")
    if real.shape[0] == 0:
        raise ValueError("real set is empty")
    if not torch.isfinite(real).all():
        raise ValueError("real samples contain non-finite values")


def _check_nyquist(nyquist):
    if nyquist is None:
        return None
    if isinstance(nyquist, bool) or not isinstance(nyquist, numbers.Integral) or nyquist < 1:
        raise ValueError(f"nyquist must be a positive integer (the training grid's min(H, W) // 2), got {nyquist!r}")
    return int(nyquist)


def _relative(p_real: torch.Tensor, p_gen: torch.Tensor) -> torch.Tensor:
    """|P_gen - P_real| / P_real for the bands 1..K of two spectra (index = wavenumber).

    A band without real power is 0 when the generated one has none either and inf otherwise
    (any power there is infinitely wrong), instead of 0/0.
    """
    p_real, p_gen = p_real[1:], p_gen[1:]
    diff = (p_gen - p_real).abs()
    empty = p_real == 0
    safe = torch.where(empty, torch.ones_like(p_real), p_real)
    undefined = torch.where(diff == 0, torch.zeros_like(diff), torch.full_like(diff, math.inf))
    return torch.where(empty, undefined, diff / safe)


def band_errors(real: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """Relative error |P_gen(k) - P_real(k)| / P_real(k) of each band k = 1..K: float64 (K,).

    P is metrics.radial_power_spectrum of each set (mean over its samples and channels);
    entry i is band k = i + 1. Generated samples with NaN or inf are left out.
    """
    _check_pair(real, generated)
    generated, _ = M.finite_samples(generated)
    return _relative(M.radial_power_spectrum(real), M.radial_power_spectrum(generated))


def _split(nyquist: Optional[int], n_bands: int) -> bool:
    """Whether there are bands above the training Nyquist to report separately."""
    return nyquist is not None and nyquist < n_bands


def _summary(p_real: torch.Tensor, p_gen: torch.Tensor, nyquist: Optional[int]) -> dict:
    """spectrum_error (and _low / _high, spectrum_ratio_high when nyquist < K) of two spectra."""
    err = _relative(p_real, p_gen)                      # err[i]: band i + 1
    out = {"spectrum_error": float(err.mean())}
    if _split(nyquist, len(err)):
        out["spectrum_error_low"] = float(err[:nyquist].mean())
        out["spectrum_error_high"] = float(err[nyquist:].mean())
        out["spectrum_ratio_high"] = float((p_gen[nyquist + 1:] / p_real[nyquist + 1:]).mean())
    return out


def spectrum_floor(real: torch.Tensor, nyquist: Optional[int] = None, seed: int = 0) -> dict:
    """Real-vs-real floor: {"floor_spectrum_error": ..., and _low / _high when nyquist < K}.

    The errors of _summary between the spectra of two disjoint halves of `real`
    (metrics.split_halves(len(real), seed): half a plays the real set, half b the generated one).
    """
    M._check_batch(real, "real")
    nyquist = _check_nyquist(nyquist)
    idx_a, idx_b = M.split_halves(real.shape[0], seed)
    half = _summary(M.radial_power_spectrum(real[idx_a.to(real.device)]),
                    M.radial_power_spectrum(real[idx_b.to(real.device)]), nyquist)
    return {f"floor_{name}": half[name] for name in ERROR_NAMES if name in half}


def _x_floor(values: dict, floor: dict) -> dict:
    """<name>_x_floor = value / floor for each error whose floor is positive and finite."""
    out = {}
    for name in ERROR_NAMES:
        f = floor.get(f"floor_{name}")
        if name in values and f is not None and math.isfinite(f) and f > 0:
            out[f"{name}_x_floor"] = values[name] / f
    return out


def spectrum_metrics(real: torch.Tensor, generated: torch.Tensor, nyquist: Optional[int] = None, seed: int = 0,
                     real_spectrum: Optional[torch.Tensor] = None, floor: Optional[dict] = None) -> dict:
    """Spectrum errors of `generated` against `real` (both (N, C, H, W) on the same grid): dict of floats.

    spectrum_error: mean relative error over the bands 1..K. With nyquist (the training grid's
    min(H, W) // 2) < K also spectrum_error_low (bands 1..nyquist), spectrum_error_high (bands
    nyquist+1..K) and spectrum_ratio_high (mean of P_gen / P_real over the high bands). Each error
    comes with its real-vs-real floor floor_<name> (spectrum_floor(real, nyquist, seed)) and
    <name>_x_floor. Generated samples with NaN or inf are left out (validation_metrics reports
    their number as n_nonfinite); if none is finite, every value but the floors is NaN.
    real_spectrum (metrics.radial_power_spectrum(real)) and floor (spectrum_floor(...)): cached
    values, if already computed.
    """
    _check_pair(real, generated)
    nyquist = _check_nyquist(nyquist)
    generated, _ = M.finite_samples(generated)
    p_real = M.radial_power_spectrum(real) if real_spectrum is None else real_spectrum
    floor = spectrum_floor(real, nyquist, seed) if floor is None else floor
    if generated.shape[0] == 0:
        values = {name: math.nan for name in _summary(p_real, p_real, nyquist)}
    else:
        values = _summary(p_real, M.radial_power_spectrum(generated).to(p_real.device), nyquist)
    return {**values, **floor, **_x_floor(values, floor)}


class SpectrumError(Evaluator):
    """spectrum_metrics of ctx.generate(n) against the validation fields (lower is better).

    The real spectrum and its floor are computed once, here. nyquist: the training grid's
    min(H, W) // 2 (None: no low / high split); n: samples generated per evaluation (default
    len(valid)); seed: the split of the floor's halves.
    """

    metrics = ("spectrum_error",)

    def __init__(self, valid: torch.Tensor, nyquist: Optional[int] = None, n: Optional[int] = None, seed: int = 0):
        M._check_batch(valid, "valid")
        self.valid, self.nyquist, self.seed = valid, _check_nyquist(nyquist), int(seed)
        self.n = len(valid) if n is None else int(n)
        self.real_spectrum = M.radial_power_spectrum(valid)
        self.floor = spectrum_floor(valid, self.nyquist, self.seed)

    def __call__(self, ctx) -> dict:
        samples = ctx.generate(self.n)
        self.last_samples = samples
        return spectrum_metrics(self.valid, samples, self.nyquist, self.seed, self.real_spectrum, self.floor)
