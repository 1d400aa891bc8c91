"""spectrum.py: the power-spectrum error against analytic spectra (white noise, a Gaussian filter, the periodic
GRF), its real-vs-real floor, the evaluator, the figure and eval.py's metrics.json / spectrum.png.

Sampling tolerances come from the number of modes per shell: with norm="forward" the Fourier coefficients
c_q of a stationary Gaussian field are complex Gaussian with E|c_q|^2 = lambda_q, in conjugate pairs
(c_{-q} = conj c_q: |c_q|^2 ~ lambda_q Exp(1), counted twice in the shell) or real on the self-conjugate
modes (|c_q|^2 ~ lambda_q chi^2_1). Either way the shell average P(k) of m modes over N fields has
Var P(k) = 2 sum_q lambda_q^2 / (m^2 N), i.e. a relative variance 2 / (m N) for a flat spectrum.
"""
import json
import math
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model_code import metrics as M
from model_code import plotting
from model_code.data.grf import PeriodicGRF
from model_code.evaluators import Evaluator
from model_code.spectrum import SpectrumError, band_errors, spectrum_floor, spectrum_metrics

ROOT = Path(__file__).resolve().parents[1]
Z = 5.0          # standard deviations allowed per band (independent bands: a false alarm is ~1e-6 per band)


def shells(n):
    """(band index of every mode of the n x n FFT grid, number of modes per band 0..n // 2): numpy's binning."""
    k = np.fft.fftfreq(n, 1.0 / n)
    bins = np.round(np.hypot(k[:, None], k[None, :])).astype(int)
    return bins, np.bincount(bins.ravel())[: n // 2 + 1]


def white(n_fields, n, seed, channels=1):
    return torch.randn(n_fields, channels, n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def mean_abs_difference(sd):
    """(E, sd) of the mean over bands of |X_k|, X_k ~ N(0, sd_k^2) independent: E|X| = sqrt(2 / pi) sd."""
    mean = np.sqrt(2 / np.pi) * sd
    return mean.mean(), np.sqrt(((1 - 2 / np.pi) * sd**2).sum()) / len(sd)


# ---------------------------------------------------------------------------------------------- analytic spectra

def test_white_noise_has_flat_spectrum_and_a_floor_set_by_the_modes_per_shell():
    n, n_real, n_gen = 32, 256, 256
    real, gen = white(n_real, n, seed=1), white(n_gen, n, seed=2)
    _, m = shells(n)
    m = m[1:].astype(float)                                          # bands 1..K
    cv_real, cv_gen = np.sqrt(2 / (m * n_real)), np.sqrt(2 / (m * n_gen))

    # E|c_k|^2 = n^2 * (1 / n^2)^2 = 1 / n^2 for every mode
    p = M.radial_power_spectrum(real)[1:].numpy() * n**2
    assert np.all(np.abs(p - 1) <= Z * cv_real), np.abs(p - 1) / cv_real

    # two independent white sets: |P_gen - P_real| / P_real ~ |eps_gen - eps_real| to first order
    err = band_errors(real, gen).numpy()
    assert err.shape == (n // 2,) and err.dtype == np.float64
    values = spectrum_metrics(real, gen, nyquist=8, seed=0)
    expected, sd = mean_abs_difference(np.sqrt(cv_real**2 + cv_gen**2))
    # the neglected terms (dividing by P_real instead of P, chi^2 skewness) are relatively O(cv)
    tol = Z * sd + expected * max(cv_real.max(), cv_gen.max())
    assert values["spectrum_error"] == pytest.approx(err.mean(), rel=1e-12)
    assert abs(values["spectrum_error"] - expected) <= tol, (values["spectrum_error"], expected, tol)
    assert values["spectrum_error"] < 0.1

    # the floor: two halves of n_real / 2 fields each
    cv_half = np.sqrt(2 / (m * (n_real // 2)))
    for name, bands in (("", slice(None)), ("_low", slice(0, 8)), ("_high", slice(8, None))):
        expected_floor, sd_floor = mean_abs_difference(np.sqrt(2) * cv_half[bands])
        tol_floor = Z * sd_floor + expected_floor * cv_half[bands].max()
        assert abs(values[f"floor_spectrum_error{name}"] - expected_floor) <= tol_floor, name
        assert values[f"spectrum_error{name}_x_floor"] == pytest.approx(
            values[f"spectrum_error{name}"] / values[f"floor_spectrum_error{name}"], rel=1e-12)


def test_a_gaussian_filter_gives_band_errors_one_minus_its_squared_gain():
    """generated = real filtered by exp(-2 pi^2 s^2 |q|^2): power times g(|q|) = exp(-4 pi^2 s^2 |q|^2).

    P_gen(k) / P_real(k) is then an average of g over the modes of shell k with non-negative weights |c_q|^2;
    shell k holds the |q| in [k - 1/2, k + 1/2] and g decreases, so the ratio lies in [g(k + 1/2), g(k - 1/2)]
    for any data: the band error 1 - ratio is within max(g(k - 1/2) - g(k), g(k) - g(k + 1/2)) of 1 - g(k).
    """
    n, s, nyquist = 32, 0.02, 8
    real = white(64, n, seed=3, channels=2)
    q = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64)
    gain = torch.exp(-2 * math.pi**2 * s**2 * (q[:, None] ** 2 + q[None, :] ** 2))
    gen = torch.fft.ifft2(torch.fft.fft2(real) * gain).real

    def g(k):
        return np.exp(-4 * np.pi**2 * s**2 * np.asarray(k, dtype=float) ** 2)

    k = np.arange(1, n // 2 + 1)
    tol = np.maximum(g(k - 0.5) - g(k), g(k) - g(k + 0.5)) + 1e-12
    err = band_errors(real, gen).numpy()
    assert np.all(np.abs(err - (1 - g(k))) <= tol), (err, 1 - g(k), tol)
    # the bound is tight enough to see a band off by one
    assert np.all(np.abs(err[1:] - (1 - g(k[1:] - 1))) > tol[1:])

    values = spectrum_metrics(real, gen, nyquist=nyquist)
    low, high = k <= nyquist, k > nyquist
    assert abs(values["spectrum_error_low"] - (1 - g(k[low])).mean()) <= tol[low].mean()
    assert abs(values["spectrum_error_high"] - (1 - g(k[high])).mean()) <= tol[high].mean()
    assert abs(values["spectrum_ratio_high"] - g(k[high]).mean()) <= tol[high].mean()
    assert values["spectrum_error"] == pytest.approx(err.mean(), rel=1e-12)
    assert values["spectrum_ratio_high"] < 0.5 < values["spectrum_error_high"]      # too smooth, and it shows
    assert values["spectrum_error_high_x_floor"] > 10


@pytest.mark.parametrize("alpha, tau", [(2.5, 7.0), (1.5, 3.0)])
def test_the_periodic_grf_has_its_analytic_spectrum(alpha, tau):
    """E|c_q|^2 = lambda_q = scale^2 (4 pi^2 |q|^2 + tau^2)^(-alpha) (grf.py), so E P(k) is its shell mean."""
    n, n_fields = 32, 200
    grf = PeriodicGRF(alpha, tau)
    x = grf.sample(n_fields, n, torch.Generator().manual_seed(4))
    bins, m = shells(n)

    def analytic(a):
        q = np.fft.fftfreq(n, 1.0 / n)
        scale2 = PeriodicGRF(a, tau).scale ** 2
        lam = scale2 * (4 * np.pi**2 * (q[:, None] ** 2 + q[None, :] ** 2) + tau**2) ** (-a)
        keep = bins <= n // 2
        mean = np.bincount(bins[keep], weights=lam[keep]) / m
        sd = np.sqrt(2 * np.bincount(bins[keep], weights=lam[keep] ** 2) / (m**2 * n_fields))
        return mean, sd

    p = M.radial_power_spectrum(x).numpy()
    mean, sd = analytic(alpha)
    assert np.all(np.abs(p - mean) <= Z * sd), np.abs(p - mean) / sd
    # the tolerance tells spectra apart: the same fields against another exponent fail it
    other, _ = analytic(alpha + 0.5)
    assert np.max(np.abs(p - other) / sd) > 10 * Z


# ---------------------------------------------------------------------------------------------- keys and floor

def test_identical_sets_score_zero_and_the_split_keys_come_only_below_the_grid():
    x = white(20, 16, seed=5, channels=2)
    assert torch.equal(band_errors(x, x.clone()), torch.zeros(8, dtype=torch.float64))
    full = spectrum_metrics(x, x.clone(), nyquist=4)
    for name in ("spectrum_error", "spectrum_error_low", "spectrum_error_high"):
        assert full[name] == 0.0 and full[f"{name}_x_floor"] == 0.0 and full[f"floor_{name}"] > 0
    assert full["spectrum_ratio_high"] == 1.0
    assert set(full) == {"spectrum_error", "spectrum_error_low", "spectrum_error_high", "spectrum_ratio_high",
                         "floor_spectrum_error", "floor_spectrum_error_low", "floor_spectrum_error_high",
                         "spectrum_error_x_floor", "spectrum_error_low_x_floor", "spectrum_error_high_x_floor"}
    plain = {"spectrum_error", "floor_spectrum_error", "spectrum_error_x_floor"}
    for nyquist in (None, 8, 30):                                     # K = 8: nothing above the grid
        assert set(spectrum_metrics(x, x, nyquist=nyquist)) == plain
    for bad in (0, True, 2.5, "4"):
        with pytest.raises(ValueError, match="nyquist"):
            spectrum_metrics(x, x, nyquist=bad)
    with pytest.raises(ValueError, match="differ in shape"):
        spectrum_metrics(x, x[:, :, :8])


def test_the_floor_is_the_error_between_two_seeded_halves_of_the_real_set():
    x = white(41, 16, seed=6)
    a, b = M.split_halves(41, seed=7)
    floor = spectrum_floor(x, nyquist=4, seed=7)
    between = spectrum_metrics(x[a], x[b], nyquist=4)
    assert floor == {f"floor_{name}": between[name]
                     for name in ("spectrum_error", "spectrum_error_low", "spectrum_error_high")}
    assert spectrum_floor(x, nyquist=4, seed=8) != floor              # another split, another floor


def test_non_finite_samples_are_left_out_and_not_counted_here():
    real, gen = white(30, 16, seed=8), white(12, 16, seed=9)
    bad = gen.clone()
    bad[3, 0, 2, 2] = float("nan")
    bad[7, 0, 0, 5] = float("inf")
    keep = [i for i in range(12) if i not in (3, 7)]
    assert spectrum_metrics(real, bad, nyquist=4) == spectrum_metrics(real, gen[keep], nyquist=4)
    assert "n_nonfinite" not in spectrum_metrics(real, bad, nyquist=4)
    none = spectrum_metrics(real, torch.full_like(gen, float("nan")), nyquist=4)
    assert all(math.isnan(none[k]) for k in ("spectrum_error", "spectrum_error_low", "spectrum_ratio_high"))
    assert none["floor_spectrum_error"] == spectrum_metrics(real, gen)["floor_spectrum_error"]
    with pytest.raises(ValueError, match="real samples contain non-finite"):
        spectrum_metrics(bad, gen)


def test_the_evaluator_reports_spectrum_metrics_of_its_generated_samples():
    valid, gen = white(24, 16, seed=10), white(40, 16, seed=11)
    ctx = SimpleNamespace(generate=lambda n: gen[:n])
    ev = SpectrumError(valid, nyquist=4, n=10, seed=3)
    assert isinstance(ev, Evaluator) and ev.metrics == ("spectrum_error",)
    assert ev(ctx) == spectrum_metrics(valid, gen[:10], nyquist=4, seed=3)
    assert torch.equal(ev.last_samples, gen[:10])
    default = SpectrumError(valid)
    assert default.n == 24 and default(ctx) == spectrum_metrics(valid, gen[:24])


def test_plot_spectra_draws_spectra_of_different_grids(tmp_path):
    real = M.radial_power_spectrum(white(8, 32, seed=12))
    coarse = M.radial_power_spectrum(white(8, 16, seed=13))
    written = plotting.plot_spectra(real, {"generated x2": real * 0.5, "training grid": coarse},
                                    tmp_path / "spectrum", nyquist=8, title="t")
    assert written == [tmp_path / "spectrum.png"] and written[0].read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------- eval.py

def test_eval_superres_reports_the_bands_above_the_training_grid_and_plot_draws_them(trained, volcano_dir,
                                                                                      tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT))
    import eval as eval_script

    monkeypatch.setenv("DATA_DIR", str(volcano_dir))
    run = tmp_path / "run"
    shutil.copytree(trained("ve_volcano"), run)                     # eval.py writes under the run's folder

    def evaluate(*flags):
        return eval_script.main(["--exp_name", str(run), "--quiet", "--Ntest", "2", *map(str, flags)])

    assert evaluate("--mode", "superres", "--tag", "sr") == 0
    assert evaluate("--mode", "generate", "--tag", "gen") == 0
    folder = run / "eval" / "sr"
    summary = json.loads((folder / "metrics.json").read_text())
    values = summary["metrics"]
    assert summary["resolution"] == [32, 32] and summary["training_nyquist"] == 8
    for name in ("spectrum_error", "spectrum_error_low", "spectrum_error_high"):
        assert values[f"{name}_x_floor"] == pytest.approx(values[name] / values[f"floor_{name}"])
    assert values["spectrum_ratio_high"] > 0 and "w_total_x_floor" in values       # the old keys stay
    # the stored spectra are those the metrics were computed from
    data = np.load(folder / "samples.npz")
    real, gen = data["real_spectrum"][1:], data["spectrum"][1:]
    assert len(real) == 16
    err = np.abs(gen - real) / real
    assert values["spectrum_error_low"] == pytest.approx(err[:8].mean(), rel=1e-9)
    assert values["spectrum_error_high"] == pytest.approx(err[8:].mean(), rel=1e-9)
    # on the training grid there is nothing above its Nyquist wavenumber
    on_grid = json.loads((run / "eval" / "gen" / "metrics.json").read_text())["metrics"]
    assert "spectrum_error" in on_grid and "spectrum_error_high" not in on_grid

    assert evaluate("--mode", "plot", "--tag", "sr") == 0
    assert (folder / "spectrum.png").read_bytes()[:4] == b"\x89PNG"
    assert not (run / "eval" / "gen" / "spectrum.png").exists()
