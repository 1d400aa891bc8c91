"""Tests for model_code/noise.py: covariances against the kernel formula, exactness of the
factorisations, generator semantics, resolution consistency and argument checks."""

import math
import warnings

import numpy as np
import pytest
import torch

from model_code import noise as noise_mod
from model_code.noise import GaussianRandomField, WhiteNoise, standard_normal

N_MC = 20000  # Monte-Carlo samples for the empirical covariance tests
EPS = 0.01


# ----------------------------------------------------------------------------- helpers


def kernel_formula(kernel, length_scale, eps, p, q):
    """The covariance between grid points p, q (coordinates in [0,1)^2) written out by hand."""
    r2 = (p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2
    if kernel == "rbf":
        k = math.exp(-r2 / (2 * length_scale ** 2))
    else:
        k = math.exp(-math.sqrt(r2) / (2 * length_scale ** 2))
    return k + (eps ** 2 if r2 == 0 else 0.0)


def coords(h, w, idx):
    """Row-major flat index -> (k / H, l / W)."""
    return ((idx // w) / h, (idx % w) / w)


def pair_subset(h, w):
    """Pairs (i, j) of flat indices: diagonal, horizontal / vertical / diagonal neighbours,
    two steps apart, and distant points (including the opposite corner)."""
    def f(k, l):
        return k * w + l

    c = (h // 2, w // 2)
    return [
        (f(*c), f(*c)),                      # variance, interior
        (0, 0),                              # variance, corner
        (f(*c), f(c[0], c[1] + 1)),          # horizontal neighbour
        (f(*c), f(c[0] + 1, c[1])),          # vertical neighbour
        (f(*c), f(c[0] + 1, c[1] + 1)),      # diagonal neighbour
        (f(*c), f(c[0], c[1] + 2)),          # two steps
        (f(1, 1), f(c[0] + 1, c[1])),        # medium distance
        (0, f(h - 1, w - 1)),                # opposite corners (distant)
        (f(0, w - 1), f(h - 1, 0)),          # other diagonal corners
    ]


def mc_tolerance(c_ii, c_jj, c_ij, n):
    """5 standard errors of the zero-mean sample covariance (1/n) sum x_i x_j of a Gaussian pair:
    Var(x_i x_j) = C_ii C_jj + C_ij^2, so SE = sqrt((C_ii C_jj + C_ij^2) / n). For n = 20000 and
    unit variances this is 0.035 (uncorrelated) to 0.05 (fully correlated). With a fixed seed the
    test is deterministic; with a fresh seed a 5-SE deviation has probability ~6e-7 per pair."""
    return 5.0 * math.sqrt((c_ii * c_jj + c_ij ** 2) / n)


# ----------------------------------------------------------------------------- standard_normal


def test_standard_normal_shapes_and_generators():
    g = torch.Generator().manual_seed(0)
    z = standard_normal(3, (2, 4, 5), generator=g)
    assert z.shape == (3, 2, 4, 5) and z.dtype == torch.float32
    gens = [torch.Generator().manual_seed(s) for s in (7, 8)]
    z2 = standard_normal(2, (4,), generator=gens, dtype=torch.float64)
    assert z2.dtype == torch.float64
    assert torch.equal(z2[1], torch.randn(4, generator=torch.Generator().manual_seed(8), dtype=torch.float64))
    with pytest.raises(ValueError):
        standard_normal(3, (4,), generator=gens)


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("kernel,length_scale", [("rbf", 0.05), ("rbf", 0.3), ("exponential", 0.2),
                                                 ("exponential", 0.5)])
def test_factorisation_reproduces_covariance_exactly(kernel, length_scale):
    """The sampler is linear in its Gaussian draws, x = A z; feeding the unit vectors gives A, and
    A A^T (+ eps^2 I for the exponential nugget) must equal the dense covariance to round-off.
    This checks exactness in distribution without Monte-Carlo error."""
    h, w = 5, 7
    grf = GaussianRandomField(channels=2, kernel=kernel, length_scale=length_scale, eps=EPS)
    fac = grf.prepare((h, w), dtype=torch.float64)
    dense = grf.covariance((h, w), h * w).numpy()
    if kernel == "rbf":
        r, s = fac["modes"]
        d = r * s
        basis = torch.eye(d, dtype=torch.float64).reshape(d, 1, r, s)
        a = grf._color_rbf(fac, basis, None).reshape(d, h * w).T.numpy()
        implied = [a @ a.T + EPS ** 2 * np.eye(h * w)]  # plus the independent nugget eps * Z2
        cross = 0.0
    else:
        m1, m2 = fac["m"]
        d = 2 * m1 * m2
        basis = torch.eye(d, dtype=torch.float64).reshape(d, 1, 2, m1, m2)
        y = grf._color_exponential(fac, basis, torch.zeros(d, 2, h, w, dtype=torch.float64), h, w)
        a0 = y[:, 0].reshape(d, -1).T.numpy()
        a1 = y[:, 1].reshape(d, -1).T.numpy()
        implied = [a0 @ a0.T + EPS ** 2 * np.eye(h * w), a1 @ a1.T + EPS ** 2 * np.eye(h * w)]
        cross = np.abs(a0 @ a1.T).max()  # the two channels share a torus draw: must be independent
    for c in implied:
        np.testing.assert_allclose(c, dense, atol=1e-10)
    assert cross < 1e-12


def test_rbf_drops_only_negligible_modes():
    """Smooth fields keep few modes (the speed-up) yet reproduce the kernel to round-off."""
    grf = GaussianRandomField(channels=1, kernel="rbf", length_scale=0.3, eps=EPS)
    h, w = 24, 20
    fac = grf.prepare((h, w), dtype=torch.float64)
    r, s = fac["modes"]
    assert r < h and s < w  # some modes were dropped
    u = torch.kron(fac["u_y"], fac["u_xt"].T.contiguous()) * fac["scale"].reshape(1, -1)  # (H W, r s)
    implied = (u @ u.T).numpy() + EPS ** 2 * np.eye(h * w)
    np.testing.assert_allclose(implied, grf.covariance((h, w), h * w).numpy(), atol=1e-10)
    # a rough field keeps every mode
    rough = GaussianRandomField(channels=1, kernel="rbf", length_scale=0.02, eps=EPS).prepare((h, w))
    assert rough["modes"] == (h, w)


# ----------------------------------------------------------------------------- Monte Carlo


@pytest.mark.parametrize("resolution", [(8, 8), (12, 16)])
@pytest.mark.parametrize("kernel,length_scale", [("rbf", 0.1), ("exponential", 0.2)])
def test_empirical_covariance_matches_kernel(kernel, length_scale, resolution):
    h, w = resolution
    grf = GaussianRandomField(channels=2, kernel=kernel, length_scale=length_scale, eps=EPS)
    x = grf.sample(N_MC, resolution, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    flat = x[:, 0].reshape(N_MC, -1)  # channel 0; the other channels are checked in the independence test
    cov_method = grf.covariance(resolution, h * w)
    for i, j in pair_subset(h, w):
        expected = kernel_formula(kernel, length_scale, EPS, coords(h, w, i), coords(h, w, j))
        assert cov_method[i, j].item() == pytest.approx(expected, abs=1e-12)
        c_ii = kernel_formula(kernel, length_scale, EPS, coords(h, w, i), coords(h, w, i))
        c_jj = kernel_formula(kernel, length_scale, EPS, coords(h, w, j), coords(h, w, j))
        empirical = (flat[:, i] * flat[:, j]).mean().item()
        assert abs(empirical - expected) < mc_tolerance(c_ii, c_jj, expected, N_MC), (i, j, empirical, expected)
    # the diagonal is 1 + eps^2 everywhere
    assert torch.allclose(torch.diagonal(cov_method), torch.full((h * w,), 1 + EPS ** 2, dtype=torch.float64))
    # the neighbour pairs really are correlated in these settings (the test is not vacuous)
    c = h // 2 * w + w // 2
    assert cov_method[c, c + 1] > 0.2


def test_white_noise_statistics():
    wn = WhiteNoise(channels=2)
    x = wn.sample(N_MC, (6, 5), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert x.shape == (N_MC, 2, 6, 5)
    # per point: the mean has SE 1/sqrt(N), the second moment SE sqrt(2/N), products of
    # independent unit normals SE 1/sqrt(N); allow 5 SE
    assert x.mean(0).abs().max() < 5 / math.sqrt(N_MC)
    assert (x ** 2).mean(0).sub(1).abs().max() < 5 * math.sqrt(2 / N_MC)
    assert (x[:, :, :, :-1] * x[:, :, :, 1:]).mean(0).abs().max() < 5 / math.sqrt(N_MC)  # horizontal
    assert (x[:, :, :-1, :] * x[:, :, 1:, :]).mean(0).abs().max() < 5 / math.sqrt(N_MC)  # vertical
    assert (x[:, 0] * x[:, 1]).mean(0).abs().max() < 5 / math.sqrt(N_MC)  # channels
    assert torch.equal(wn.covariance((6, 5), 200), torch.eye(30, dtype=torch.float64))
    assert wn.pointwise_variance() == 1.0


# ----------------------------------------------------------------------------- generators


NOISES = [
    WhiteNoise(channels=2),
    GaussianRandomField(channels=2, kernel="rbf", length_scale=0.1, eps=EPS),
    GaussianRandomField(channels=3, kernel="exponential", length_scale=0.2, eps=EPS),
]


@pytest.mark.parametrize("noise", NOISES, ids=["white", "rbf", "exponential"])
def test_per_sample_generators_do_not_depend_on_batch(noise):
    seeds = [11, 12, 13, 14, 15]
    big = noise.sample(5, (8, 12), generator=[torch.Generator().manual_seed(s) for s in seeds])
    small = noise.sample(2, (8, 12), generator=[torch.Generator().manual_seed(s) for s in seeds[3:]])
    one = noise.sample(1, (8, 12), generator=[torch.Generator().manual_seed(seeds[2])])
    # Other batch sizes may take other float32 matmul / FFT paths: round-off relative to the field's scale
    # (|x| up to ~4); drawing from the wrong generator changes a sample by O(1).
    tol = 1e-4 * float(big.abs().max())
    torch.testing.assert_close(big[3:], small, rtol=0, atol=tol)
    torch.testing.assert_close(big[2:3], one, rtol=0, atol=tol)
    assert not torch.allclose(big[0], big[1])
    # same seed -> identical; different seed -> different
    a = noise.sample(4, (8, 12), generator=torch.Generator().manual_seed(3))
    b = noise.sample(4, (8, 12), generator=torch.Generator().manual_seed(3))
    c = noise.sample(4, (8, 12), generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("kernel,length_scale", [("rbf", 0.1), ("exponential", 0.2)])
def test_channels_are_independent(kernel, length_scale):
    # three channels: for the exponential kernel channels 0 and 1 come from the real and imaginary
    # parts of one complex torus draw, channel 2 from another
    grf = GaussianRandomField(channels=3, kernel=kernel, length_scale=length_scale, eps=EPS)
    x = grf.sample(N_MC, (8, 8), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x = x.reshape(N_MC, 3, 64)
    c_same = grf.covariance((8, 8), 64)
    for c0, c1 in [(0, 1), (0, 2), (1, 2)]:
        for i, j in [(27, 27), (27, 28), (27, 35)]:
            cross = (x[:, c0, i] * x[:, c1, j]).mean().item()
            # independent: Var(x_i y_j) = C_ii C_jj
            assert abs(cross) < 5 * math.sqrt(c_same[i, i].item() * c_same[j, j].item() / N_MC)
    for c in range(3):  # and each channel alone has the right covariance
        for i, j in [(27, 27), (27, 28)]:
            emp = (x[:, c, i] * x[:, c, j]).mean().item()
            exp = c_same[i, j].item()
            assert abs(emp - exp) < mc_tolerance(c_same[i, i].item(), c_same[j, j].item(), exp, N_MC)


# ----------------------------------------------------------------------------- resolutions


@pytest.mark.parametrize("kernel,length_scale", [("rbf", 0.15), ("exponential", 0.3)])
def test_super_resolution_consistency(kernel, length_scale):
    """Physical points (0.25, 0.5) and (0.5, 0.5) are grid points at n = 8 and n = 16; their
    covariance must not depend on the resolution (analytically and empirically)."""
    grf = GaussianRandomField(channels=1, kernel=kernel, length_scale=length_scale, eps=EPS)
    expected = kernel_formula(kernel, length_scale, EPS, (0.25, 0.5), (0.5, 0.5))
    assert expected > 0.2  # a non-trivial correlation
    gen = torch.Generator().manual_seed(6)
    tol = mc_tolerance(1 + EPS ** 2, 1 + EPS ** 2, expected, N_MC)
    empirical = {}
    for n in (8, 16):
        i, j = (n // 4) * n + n // 2, (n // 2) * n + n // 2
        assert coords(n, n, i) == (0.25, 0.5) and coords(n, n, j) == (0.5, 0.5)
        cov = grf.covariance(n, 200)
        assert cov[i, j].item() == pytest.approx(expected, abs=1e-12)
        x = grf.sample(N_MC, n, generator=gen, dtype=torch.float64)[:, 0].reshape(N_MC, -1)
        empirical[n] = (x[:, i] * x[:, j]).mean().item()
        assert abs(empirical[n] - expected) < tol
    # two independent estimates: the SE of their difference is sqrt(2) times one SE
    assert abs(empirical[8] - empirical[16]) < math.sqrt(2) * tol


@pytest.mark.parametrize("kernel", ["rbf", "exponential"])
def test_covariance_is_kernel_on_first_points(kernel):
    grf = GaussianRandomField(channels=2, kernel=kernel, length_scale=0.05, eps=EPS)
    h, w = 64, 48
    cov = grf.covariance((h, w), 200)
    assert cov.shape == (200, 200) and cov.dtype == torch.float64
    rng = np.random.default_rng(0)
    pairs = [tuple(int(v) for v in p) for p in rng.integers(0, 200, size=(50, 2))]
    for i, j in pairs + [(0, 1), (0, w), (w + 1, 2), (199, 199), (0, 199)]:
        expected = kernel_formula(kernel, 0.05, EPS, coords(h, w, i), coords(h, w, j))
        assert cov[i, j].item() == pytest.approx(expected, abs=1e-12)
    assert torch.allclose(cov, cov.T)
    with noise_mod._single_threaded():  # a 200 x 200 eigenproblem; fast on one thread even on a busy machine
        assert torch.linalg.eigvalsh(cov).min() > 0
    # a huge grid: only the requested block is computed
    assert grf.covariance(4096, 200).shape == (200, 200)
    # fewer grid points than requested -> the whole (small) grid
    assert grf.covariance(5, 200).shape == (25, 25)


def test_large_resolution_rbf_without_dense_matrix():
    """256 x 256 = 65536 points: a dense covariance would be 32 GiB in float64; the separable
    sampler needs two 256 x 256 eigendecompositions. Pooled variance over points and samples:
    ~64 * 2 * (1 / (2 pi l^2)) ~ 8000 effective independent values, SE ~ 1.6%, so 5% is ~3 SE."""
    grf = GaussianRandomField(channels=2, kernel="rbf", length_scale=0.05, eps=EPS)
    x = grf.sample(64, 256, generator=torch.Generator().manual_seed(7))
    assert x.shape == (64, 2, 256, 256)
    assert x.pow(2).mean().item() == pytest.approx(1 + EPS ** 2, rel=0.05)
    assert abs(x.mean().item()) < 0.05


def test_exponential_embedding_warning(monkeypatch):
    """If no non-negative definite embedding is found within the size limit, negatives are
    clipped and a warning says the sample is approximate."""
    grf = GaussianRandomField(channels=1, kernel="exponential", length_scale=1.0, eps=EPS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fac = grf.prepare(4)
    assert fac["exact"] and fac["m"][0] > 8  # found by growing the torus past 2n, no warning
    monkeypatch.setattr(noise_mod, "_CE_MAX_POINTS", 16 * 16)
    grf2 = GaussianRandomField(channels=1, kernel="exponential", length_scale=1.0, eps=EPS)
    with pytest.warns(RuntimeWarning, match="approximate"):
        x = grf2.sample(3, 4)
    assert torch.isfinite(x).all()


# ----------------------------------------------------------------------------- misc API


def test_describe_round_trip_and_variance():
    grf = GaussianRandomField(channels=3, kernel="exponential", length_scale=0.2, eps=0.1)
    d = grf.describe()
    assert d == {"type": "grf", "channels": 3, "kernel": "exponential", "length_scale": 0.2, "eps": 0.1}
    kwargs = {k: v for k, v in d.items() if k != "type"}
    assert GaussianRandomField(**kwargs).describe() == d
    assert grf.pointwise_variance() == pytest.approx(1.01)
    assert WhiteNoise(4).describe() == {"type": "white", "channels": 4}
    x = grf.sample(2, (3, 5))
    assert x.shape == (2, 3, 3, 5) and x.dtype == torch.float32


@pytest.mark.parametrize("kwargs", [
    dict(kernel="matern"),
    dict(length_scale=0.0),
    dict(length_scale=-1.0),
    dict(eps=-0.1),
    dict(channels=0),
    dict(length_scale=float("nan")),
])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        GaussianRandomField(**kwargs)


def test_bad_sample_arguments_raise():
    grf = GaussianRandomField()
    with pytest.raises(ValueError):
        grf.sample(2, (0, 4))
    with pytest.raises(ValueError):
        grf.sample(2, (4, 4, 4))
    with pytest.raises(ValueError):
        grf.sample(3, 4, generator=[torch.Generator()])
    with pytest.raises(ValueError):
        WhiteNoise(channels=0)
    with pytest.raises(ValueError, match="unknown kernel"):
        GaussianRandomField(kernel="gaussian")


@pytest.mark.parametrize("kernel", ["rbf", "exponential"])
def test_zero_nugget(kernel):
    """eps = 0: no nugget draws; variance k(0) = 1."""
    grf = GaussianRandomField(channels=2, kernel=kernel, length_scale=0.1, eps=0.0)
    assert grf.pointwise_variance() == 1.0
    x = grf.sample(4000, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    # per point variance estimate from 8000 fields: SE sqrt(2 / 8000) = 0.016
    assert x[:, :, 3, 5].pow(2).mean().item() == pytest.approx(1.0, abs=5 * math.sqrt(2 / 8000))
