"""Tests for model_code.metrics against hand-computed, analytic and scipy values."""

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from model_code import metrics as M


def phase_batch(angles):
    """Angles of shape (N, H, W) (or a 1-D list for one sample) -> phase data (N, 2, H, W)."""
    a = torch.as_tensor(np.asarray(angles, dtype=np.float64))
    if a.dim() == 1:
        a = a.reshape(1, 1, -1)
    return torch.stack([torch.cos(a), torch.sin(a)], dim=1)


def formula_stats(angles):
    """Circular variance and skewness of one angle set, by numpy complex arithmetic."""
    angles = np.asarray(angles, dtype=np.float64)
    z1 = np.mean(np.exp(1j * angles))
    z2 = np.mean(np.exp(2j * angles))
    r1, t1 = abs(z1), np.angle(z1)
    r2, t2 = abs(z2), np.angle(z2)
    return 1 - r1, r2 * np.sin(t2 - 2 * t1) / (1 - r1) ** 1.5


def random_phase(n, h, w, seed, kappa=2.0):
    rng = np.random.default_rng(seed)
    mu = rng.uniform(-np.pi, np.pi, size=(n, 1, 1))
    return phase_batch(rng.vonmises(mu, kappa, size=(n, h, w)))


# ---------------------------------------------------------------------------
# circular statistics
# ---------------------------------------------------------------------------


def test_circular_moments_of_known_set():
    phi = torch.tensor([[0.0, 0.0, 0.0, math.pi / 2]], dtype=torch.float64)
    r1, t1 = M.circular_moments(phi, 1)
    assert r1.shape == (1,) and t1.shape == (1,)
    assert r1.item() == pytest.approx(math.sqrt(10) / 4, abs=1e-12)
    assert t1.item() == pytest.approx(math.atan2(1, 3), abs=1e-12)
    r2, t2 = M.circular_moments(phi, 2)
    assert r2.item() == pytest.approx(0.5, abs=1e-12)
    assert t2.item() == pytest.approx(0.0, abs=1e-12)


def test_all_angles_equal_have_zero_variance_and_skewness():
    s = M.circular_stats(phase_batch([[[0.7] * 5] * 4]))
    assert s["var"].item() == pytest.approx(0.0, abs=1e-12)
    assert s["skew"].item() == 0.0


@pytest.mark.parametrize("angles", [[0.0, math.pi], [0.0, math.pi / 2, math.pi, 3 * math.pi / 2]])
def test_balanced_sets_have_unit_variance(angles):
    s = M.circular_stats(phase_batch(angles))
    assert s["var"].item() == pytest.approx(1.0, abs=1e-12)


def test_von_mises_variance_matches_bessel_ratio():
    kappa = 2.0
    x = random_phase(3, 128, 128, seed=0, kappa=kappa)
    s = M.circular_stats(x)
    expected = 1 - scipy.special.i1(kappa) / scipy.special.i0(kappa)
    # 16384 points per sample: the standard error of R1 is about 0.005.
    np.testing.assert_allclose(s["var"].numpy(), expected, atol=0.02)
    # The von Mises distribution is symmetric.
    assert s["skew"].abs().max().item() < 0.1


def test_symmetric_set_has_zero_skewness():
    a = 0.9
    s = M.circular_stats(phase_batch([-a, 0.0, a]))
    assert s["skew"].item() == pytest.approx(0.0, abs=1e-12)


def test_mirror_flips_skewness_sign():
    angles = [0.0, 0.1, 0.3, 1.7, -0.4]
    s = M.circular_stats(phase_batch(angles))["skew"].item()
    m = M.circular_stats(phase_batch([-v for v in angles]))["skew"].item()
    assert abs(s) > 1e-3
    assert m == pytest.approx(-s, abs=1e-12)


def test_skewness_of_asymmetric_set_matches_formula():
    angles = [0.0, 0.0, 0.0, math.pi / 2]
    var, skew = formula_stats(angles)
    s = M.circular_stats(phase_batch(angles))
    assert s["var"].item() == pytest.approx(var, abs=1e-12)
    assert s["skew"].item() == pytest.approx(skew, abs=1e-12)
    # and by hand: T2 = 0, T1 = atan(1/3), R2 = 1/2, R1 = sqrt(10) / 4
    by_hand = 0.5 * math.sin(-2 * math.atan(1 / 3)) / (1 - math.sqrt(10) / 4) ** 1.5
    assert s["skew"].item() == pytest.approx(by_hand, abs=1e-12)


def test_stats_of_a_batch_are_per_sample():
    rng = np.random.default_rng(1)
    angles = rng.uniform(-np.pi, np.pi, size=(4, 3, 5))
    s = M.circular_stats(phase_batch(angles))
    for i in range(4):
        var, skew = formula_stats(angles[i].ravel())
        assert s["var"][i].item() == pytest.approx(var, abs=1e-12)
        assert s["skew"][i].item() == pytest.approx(skew, abs=1e-10)


def test_statistics_invariant_under_global_rotation():
    rng = np.random.default_rng(2)
    angles = rng.vonmises(0.3, 1.5, size=(2, 6, 6))
    s0 = M.circular_stats(phase_batch(angles))
    s1 = M.circular_stats(phase_batch(angles + 2.4))
    np.testing.assert_allclose(s1["var"].numpy(), s0["var"].numpy(), atol=1e-12)
    np.testing.assert_allclose(s1["skew"].numpy(), s0["skew"].numpy(), atol=1e-10)


def test_amplitude_of_phase_channels_is_ignored():
    x = random_phase(2, 8, 8, seed=3)
    scale = torch.rand(2, 1, 8, 8, dtype=torch.float64) + 0.5
    s0, s1 = M.circular_stats(x), M.circular_stats(x * scale)
    np.testing.assert_allclose(s1["var"].numpy(), s0["var"].numpy(), atol=1e-12)
    np.testing.assert_allclose(s1["skew"].numpy(), s0["skew"].numpy(), atol=1e-10)


def test_circular_stats_needs_two_channels():
    with pytest.raises(ValueError):
        M.circular_stats(torch.zeros(2, 3, 4, 4))


# ---------------------------------------------------------------------------
# real statistics and sample_stats
# ---------------------------------------------------------------------------


def test_real_stats_match_numpy_and_scipy():
    rng = np.random.default_rng(4)
    x = rng.gamma(2.0, size=(5, 3, 6, 7))
    s = M.real_stats(torch.tensor(x, dtype=torch.float32))
    flat = x.reshape(5, -1).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(s["var"].numpy(), np.var(flat, axis=1, ddof=0), rtol=1e-10)
    np.testing.assert_allclose(s["skew"].numpy(), scipy.stats.skew(flat, axis=1), rtol=1e-10)
    assert (s["skew"] > 0).all()  # gamma data is right-skewed


def test_real_stats_of_constant_sample_is_zero():
    s = M.real_stats(torch.full((1, 1, 3, 3), 2.5))
    assert s["var"].item() == 0.0 and s["skew"].item() == 0.0


def test_sample_stats_dispatches_on_kind():
    x = random_phase(2, 4, 4, seed=5)
    for kind, fn in (("phase", M.circular_stats), ("real", M.real_stats)):
        a, b = M.sample_stats(x, kind), fn(x)
        assert torch.equal(a["var"], b["var"]) and torch.equal(a["skew"], b["skew"])
    with pytest.raises(ValueError):
        M.sample_stats(x, "complex")


# ---------------------------------------------------------------------------
# mean phase, circular difference, Wasserstein
# ---------------------------------------------------------------------------


def test_mean_phase():
    # Two samples at +170 deg and -170 deg average to 180 deg, not 0.
    a, b = math.radians(170), math.radians(-170)
    x = phase_batch([[[a, 0.2]], [[b, 0.4]]])
    mp = M.mean_phase(x)
    assert mp.shape == (1, 2)
    assert abs(M.circular_difference(mp[0, 0], math.pi).item()) < 1e-12
    assert mp[0, 1].item() == pytest.approx(0.3, abs=1e-12)


def test_circular_difference_wraps_into_half_open_interval():
    deg = math.radians
    a = torch.tensor([deg(179), 0.0, math.pi, 0.1], dtype=torch.float64)
    b = torch.tensor([deg(-179), math.pi, -math.pi, 0.1 + 4 * math.pi], dtype=torch.float64)
    d = M.circular_difference(a, b)
    np.testing.assert_allclose(d.numpy(), [deg(-2), math.pi, 0.0, 0.0], atol=1e-12)
    rng = np.random.default_rng(6)
    a, b = rng.uniform(-20, 20, size=(2, 1000))
    d = M.circular_difference(torch.tensor(a), torch.tensor(b)).numpy()
    assert (d > -math.pi).all() and (d <= math.pi).all()
    np.testing.assert_allclose(np.exp(1j * d), np.exp(1j * (a - b)), atol=1e-10)


def test_wasserstein_matches_scipy():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=50), rng.normal(0.5, 2.0, size=80)
    expected = scipy.stats.wasserstein_distance(a, b)
    assert M.wasserstein(torch.tensor(a), torch.tensor(b)) == pytest.approx(expected, rel=1e-12)
    assert M.wasserstein([1.5], [4.0]) == pytest.approx(2.5)
    assert M.wasserstein(torch.tensor(a), torch.tensor(a + 0.3)) == pytest.approx(0.3, abs=1e-12)


def test_wasserstein_refuses_non_finite_values():
    with pytest.raises(ValueError):
        M.wasserstein([1.0, float("nan")], [1.0])
    with pytest.raises(ValueError):
        M.wasserstein([1.0], [float("inf")])


# ---------------------------------------------------------------------------
# validation metrics and floors
# ---------------------------------------------------------------------------


def test_validation_metrics_on_phase_data():
    real, gen = random_phase(20, 8, 8, seed=8), random_phase(15, 8, 8, seed=9, kappa=1.0)
    m = M.validation_metrics(real, gen, "phase")
    assert set(m) == set(M.METRIC_NAMES) | {"n_nonfinite"}
    assert m["n_nonfinite"] == 0
    sr, sg = M.circular_stats(real), M.circular_stats(gen)
    w1 = scipy.stats.wasserstein_distance
    assert m["w_var"] == pytest.approx(w1(sr["var"].numpy(), sg["var"].numpy()), rel=1e-12)
    assert m["w_skew"] == pytest.approx(w1(sr["skew"].numpy(), sg["skew"].numpy()), rel=1e-12)
    assert m["w_total"] == pytest.approx(m["w_var"] + m["w_skew"], rel=1e-12)
    assert m["w_var"] > 0.1  # kappa 1 vs 2: variances 0.55 vs 0.30
    # cached real statistics give the same answer
    assert M.validation_metrics(real, gen, "phase", real_stats_cached=sr) == m


def test_identical_sets_give_zeros():
    x = random_phase(6, 5, 5, seed=10)
    m = M.validation_metrics(x, x.clone(), "phase")
    for name in M.METRIC_NAMES:
        assert m[name] == pytest.approx(0.0, abs=1e-20)
    assert m["n_nonfinite"] == 0


def test_mean_phase_l2_uses_circular_difference():
    real = phase_batch(np.full((3, 2, 2), math.radians(179)))
    gen = phase_batch(np.full((4, 2, 2), math.radians(-179)))
    m = M.validation_metrics(real, gen, "phase")
    assert m["mean_phase_l2"] == pytest.approx(math.radians(2) ** 2, rel=1e-9)


def test_mean_l2_by_hand_and_no_phase_term_for_real_data():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 1, 1, 2)
    gen = torch.tensor([[0.0, 0.0], [2.0, 2.0], [1.0, 1.0]]).reshape(3, 1, 1, 2)
    m = M.validation_metrics(real, gen, "real")
    # means: real (2, 3), generated (1, 1); squared differences (1, 4); mean 2.5
    assert m["mean_l2"] == pytest.approx(2.5)
    assert "mean_phase_l2" not in m
    # per-sample variances: real (0.25, 0.25), generated (0, 0, 0) -> W1 = 0.25
    assert m["w_var"] == pytest.approx(0.25)
    assert m["w_skew"] == pytest.approx(0.0)


def test_non_finite_generated_samples_are_excluded_and_counted():
    real = random_phase(5, 4, 4, seed=11)
    bad = real[:2].clone()
    bad[0, 0, 1, 2] = float("nan")
    bad[1, 1, 0, 0] = float("inf")
    m = M.validation_metrics(real, torch.cat([real, bad]), "phase")
    assert m["n_nonfinite"] == 2
    for name in M.METRIC_NAMES:
        assert m[name] == pytest.approx(0.0, abs=1e-20)
    all_bad = M.validation_metrics(real, bad, "phase")
    assert all_bad["n_nonfinite"] == 2 and math.isnan(all_bad["w_total"])


def test_validation_metrics_refuses_bad_inputs():
    x = random_phase(4, 4, 4, seed=12)
    with pytest.raises(ValueError):
        M.validation_metrics(x, x, "volcano")
    with pytest.raises(ValueError):
        M.validation_metrics(x, random_phase(4, 8, 8, seed=12), "phase")


def test_floor_metrics_deterministic_and_positive():
    real = random_phase(41, 6, 6, seed=13)
    f0 = M.floor_metrics(real, "phase", seed=3)
    assert f0 == M.floor_metrics(real, "phase", seed=3)
    assert f0 != M.floor_metrics(real, "phase", seed=4)
    for name in ("w_var", "w_skew", "w_total", "mean_l2", "mean_phase_l2"):
        assert f0[name] > 0
    a, b = M.split_halves(41, seed=3)
    assert len(a) == len(b) == 20
    assert len(set(a.tolist()) | set(b.tolist())) == 40


def test_relative_to_floor():
    metrics = {"w_var": 0.6, "w_skew": 0.9, "w_total": 1.5, "mean_l2": 7.0}
    floor = {"w_var": 0.2, "w_skew": 0.0, "w_total": 0.3, "mean_l2": 1.0}
    r = M.relative_to_floor(metrics, floor)
    assert r == pytest.approx({"w_var_x_floor": 3.0, "w_total_x_floor": 5.0})


# ---------------------------------------------------------------------------
# power spectrum
# ---------------------------------------------------------------------------


def test_radial_power_spectrum_of_pure_cosines():
    n = 32
    t = torch.arange(n, dtype=torch.float64) / n
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    x = torch.stack([torch.cos(2 * math.pi * 3 * xx), torch.cos(2 * math.pi * (3 * xx + 4 * yy))])
    x = x.reshape(2, 1, n, n)
    k = np.fft.fftfreq(n, 1 / n)
    count = np.bincount(np.round(np.hypot(k[:, None], k[None, :])).astype(int).ravel())

    spec = M.radial_power_spectrum(x[:1])
    assert spec.shape == (n // 2 + 1,)
    assert spec.argmax().item() == 3
    # two modes (+-3, 0) of power 1/4 each, averaged over the shell
    assert spec[3].item() == pytest.approx(0.5 / count[3], rel=1e-12)
    others = torch.cat([spec[:3], spec[4:]])
    assert others.abs().max().item() < 1e-20

    # wavenumber (3, 4) has radius 5; averaging over samples halves each line
    spec2 = M.radial_power_spectrum(x)
    assert spec2[3].item() == pytest.approx(0.25 / count[3], rel=1e-12)
    assert spec2[5].item() == pytest.approx(0.25 / count[5], rel=1e-12)

    # the same function at a finer resolution has the same spectrum where both resolve it
    t2 = torch.arange(2 * n, dtype=torch.float64) / (2 * n)
    fine = torch.cos(2 * math.pi * 3 * t2).expand(2 * n, 2 * n).reshape(1, 1, 2 * n, 2 * n)
    k2 = np.fft.fftfreq(2 * n, 1 / (2 * n))
    count2 = np.bincount(np.round(np.hypot(k2[:, None], k2[None, :])).astype(int).ravel())
    assert M.radial_power_spectrum(fine)[3].item() * count2[3] == pytest.approx(0.5, rel=1e-12)
