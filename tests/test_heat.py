"""Heat dissipation (model_code/processes/heat.py): DCT, blur = Gaussian filter, mean kept."""
import math

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
import torch

from model_code.processes.heat import HeatDissipation, blur_sigmas, dct2, dct_matrix, heat_eigenvalues, idct2


@pytest.mark.parametrize("n", [1, 2, 7, 8, 28])
def test_dct_matrix_is_orthonormal_and_matches_scipy(n):
    c = dct_matrix(n)
    assert torch.allclose(c @ c.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    x = np.random.default_rng(n).normal(size=n)
    assert np.allclose(c.numpy() @ x, scipy.fft.dct(x, type=2, norm="ortho"), atol=1e-12)


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 7, 12), (2, 28, 28)])
def test_dct2_round_trip_and_scipy(shape):
    u = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c_h, c_w = dct_matrix(shape[1]), dct_matrix(shape[2])
    c = dct2(u, c_h, c_w)
    assert np.allclose(c.numpy(), scipy.fft.dctn(u.numpy(), type=2, norm="ortho", axes=(-2, -1)), atol=1e-12)
    assert torch.allclose(idct2(c, c_h, c_w), u, atol=1e-12)
    # Orthonormal: energy is kept (Parseval).
    assert torch.allclose((c ** 2).sum(), (u ** 2).sum())


def test_eigenvalues_and_schedule():
    lam = heat_eigenvalues(4, 5)
    assert lam[0, 0] == 0
    assert math.isclose(lam[1, 2].item(), math.pi ** 2 * (1 / 16 + 4 / 25))
    s = blur_sigmas(5, 0.5, 8.0)
    assert s[0] == 0 and math.isclose(s[1].item(), 0.5) and math.isclose(s[-1].item(), 8.0)
    ratios = s[2:] / s[1:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))            # log-spaced


@pytest.mark.parametrize("sigma_b", [1.5, 2.0, 3.0])
def test_heat_blur_equals_gaussian_blur_on_interior_pixels(sigma_b):
    # t = sigma_B^2 / 2 of the heat equation is a Gaussian blur of std sigma_B pixels.
    u = torch.rand(2, 1, 40, 36, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    heat = HeatDissipation((1, 40, 36), K=1, blur_sigma_min=sigma_b, blur_sigma_max=sigma_b)
    blurred = heat.apply(u, 1).numpy()[:, 0]
    m = int(4 * sigma_b)
    for i in range(2):
        # Interior pixels do not see the boundary: any boundary mode of the filter agrees there.
        ref = scipy.ndimage.gaussian_filter(u[i, 0].numpy(), sigma_b, mode="constant", truncate=4.0)
        assert np.abs(blurred[i, m:-m, m:-m] - ref[m:-m, m:-m]).max() < 1e-4
        # Neumann = the half-sample symmetric extension ('reflect'): equal everywhere.
        ref = scipy.ndimage.gaussian_filter(u[i, 0].numpy(), sigma_b, mode="reflect", truncate=8.0)
        assert np.abs(blurred[i] - ref).max() < 1e-5


def test_heat_keeps_the_mean_and_level_zero_is_identity():
    u = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    heat = HeatDissipation((3, 16, 16), K=10, blur_sigma_min=0.5, blur_sigma_max=20)
    k = torch.tensor([0, 1, 4, 9, 10])
    out = heat.apply(u, k)
    # float32 DCT round trip (4 BLAS matmuls of size 16): round-off ~ eps_32 sqrt(16) |u|, up to ~64 eps_32 |u|
    # in the worst case, BLAS-dependent; 1e-4 |u| is ~800 eps_32 |u|, far below a lost mean or a blurred level 0.
    tol = 1e-4 * float(u.abs().max())
    assert torch.allclose(out.mean((-2, -1)), u.mean((-2, -1)), atol=tol)
    assert torch.allclose(out[0], u[0], atol=tol)
    # At sigma_B = 20 px a 16 px image is constant up to exp(-pi^2/256 * 200) ~ 5e-4 of its first mode.
    assert (out[4] - out[4].mean((-2, -1), keepdim=True)).abs().max() < 1e-3
    # More blur, less energy away from the mean.
    var = out.var((-2, -1)).mean(1)
    assert torch.all(var[1:] < var[:-1])
    assert torch.equal(u, torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(2)))  # input untouched
