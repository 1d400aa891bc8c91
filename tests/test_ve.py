"""The VE process, EDM preconditioning, loss, EMA and annealed Langevin against analytic answers."""
import math

import pytest
import torch

from model_code.denoiser import Denoiser
from model_code.ema import EMA
from model_code.losses import denoising_loss, loss_weight
from model_code.noise import GaussianRandomField, WhiteNoise
from model_code.processes.ve import VEProcess
from model_code.samplers import annealed_langevin, generate
from model_code.schedules import sigma_levels


class GaussianPosteriorMean(torch.nn.Module):
    """Exact denoiser for u ~ N(0, s^2 C) and noise N(0, C): D(x, sigma) = s^2 / (s^2 + sigma^2) x."""

    def __init__(self, s):
        super().__init__()
        self.s = s
        self.sigma_data = s

    def forward(self, x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return self.s ** 2 / (self.s ** 2 + sigma ** 2) * x

    def score(self, x, sigma):
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return (self(x, sigma) - x) / sigma ** 2


def test_sigma_levels_geometric_and_linear():
    s = sigma_levels(5.0, 0.05, 11)
    assert s[0] == pytest.approx(5.0) and s[-1] == pytest.approx(0.05)
    ratios = s[1:] / s[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))
    lin = sigma_levels(1.0, 0.1, 10, "linear")
    assert torch.allclose(lin[1:] - lin[:-1], torch.full((9,), -0.1, dtype=torch.float64))


def test_discrete_levels_uniform_with_replacement_for_batches_larger_than_L():
    proc = VEProcess(sigma_levels(1.0, 0.1, 4))
    draws = proc.sample_sigma(40_000, torch.Generator().manual_seed(0))
    counts = torch.stack([(draws == s.float()).sum() for s in proc.sigmas]).float()
    assert counts.sum() == 40_000
    # chi-square with 3 dof: 99.9 % quantile is 16.3
    assert ((counts - 10_000) ** 2 / 10_000).sum() < 16.3


def test_continuous_levels_log_uniform():
    proc = VEProcess(sigma_levels(10.0, 0.1, 5), level_sampling="continuous")
    d = proc.sample_sigma(50_000, torch.Generator().manual_seed(0)).double().log()
    # log sigma ~ U(log 0.1, log 10): mean 0, variance (log 100)^2 / 12
    assert d.mean().abs() < 0.02
    assert d.var().item() == pytest.approx(math.log(100) ** 2 / 12, rel=0.02)


def test_edm_coefficients_and_zero_backbone():
    class Zero(torch.nn.Module):
        def forward(self, x, c):
            return torch.zeros_like(x)
    d = Denoiser(Zero(), sigma_data=0.5)
    x = torch.randn(3, 2, 4, 4)
    sig = torch.tensor([0.1, 0.5, 3.0])
    c_skip, c_out, c_in, c_noise = d.coefficients(sig)
    # Unit-variance network input and target for data of std sigma_data (EDM Table 1).
    assert torch.allclose(c_in ** 2 * (sig ** 2 + 0.25), torch.ones(3))
    assert torch.allclose(c_skip ** 2 * (sig ** 2 + 0.25) - 2 * c_skip * 0.25 + 0.25, c_out ** 2)
    out = d(x, sig)
    assert torch.allclose(out, c_skip.view(-1, 1, 1, 1) * x)


def test_loss_of_the_optimal_denoiser_equals_one_under_edm_weighting():
    # u ~ N(0, s^2 I), x = u + sigma z: E|D*(x) - u|^2 per point = s^2 sigma^2/(s^2 + sigma^2) = c_out^2.
    s = 0.8
    opt = GaussianPosteriorMean(s)
    g = torch.Generator().manual_seed(0)
    u = s * torch.randn(4000, 1, 8, 8, generator=g)
    z = torch.randn(u.shape, generator=g)
    for sigma in (0.05, 0.8, 20.0):
        loss = denoising_loss(opt, u, torch.full((len(u),), sigma), z, "edm")
        assert loss.item() == pytest.approx(1.0, rel=0.02)
        # The score weighting gives s^2 / (s^2 + sigma^2).
        loss_s = denoising_loss(opt, u, torch.full((len(u),), sigma), z, "score")
        assert loss_s.item() == pytest.approx(s ** 2 / (s ** 2 + sigma ** 2), rel=0.02)
    assert loss_weight(torch.tensor(2.0), "score", 1.0) == pytest.approx(0.25)


def test_ema_warmup_and_state_round_trip():
    net = torch.nn.Linear(2, 2)
    ema = EMA(net, rate=0.999)
    assert ema.decay() == pytest.approx(0.1)          # (1 + 0) / (10 + 0)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net)
    # After one update with decay 0.1: 0.1 * old + 0.9 * new
    old = EMA(torch.nn.Linear(2, 2), 0.999)
    assert ema.step == 1 and ema.decay() == pytest.approx(2 / 11)
    ema2 = EMA(net, 0.5)
    ema2.load_state_dict(ema.state_dict())
    assert ema2.rate == 0.999 and ema2.step == 1
    assert torch.equal(ema2.shadow.weight, ema.shadow.weight)
    del old


def _emp_cov(x, i, j):
    f = x.flatten(1)
    return ((f[:, i] - f[:, i].mean()) * (f[:, j] - f[:, j].mean())).mean().item()


@pytest.mark.parametrize("noise", [WhiteNoise(1), GaussianRandomField(1, "rbf", 0.2, 0.1)])
def test_annealed_langevin_with_exact_denoiser_recovers_data_covariance(noise):
    # Data N(0, s^2 C) with noise N(0, C): the exact preconditioned score makes Langevin target s^2 C.
    s = 0.7
    den = GaussianPosteriorMean(s)
    res = (6, 6)
    sigmas = sigma_levels(10.0, 0.05, 30)
    n = 3000
    # One batched generator: per-sample generators cost one RNG call per sample and step.
    g = torch.Generator().manual_seed(0)
    x = float(sigmas[0]) * noise.sample(n, res, g)
    samples = annealed_langevin(den, x, sigmas, lambda: noise.sample(n, res, g), T=30, epsilon=0.003,
                                final_denoise=False)
    C = noise.covariance(res, 36).double()
    tol = 4 * math.sqrt(2 / n) * s ** 2 * C[0, 0].item() + 0.02  # MC error plus small Langevin bias
    for i, j in [(0, 0), (7, 7), (0, 1), (0, 6), (14, 21), (0, 35)]:
        assert _emp_cov(samples, i, j) == pytest.approx(s ** 2 * C[i, j].item(), abs=tol)


def test_final_denoise_step_and_per_sample_seeds():
    den = GaussianPosteriorMean(0.5)
    noise = WhiteNoise(1)
    sigmas = sigma_levels(3.0, 0.1, 5)
    a = generate(den, noise, sigmas, 5, (4, 4), [11, 12, 13, 14, 15], 5, T=2, epsilon=1e-3)
    b = generate(den, noise, sigmas, 3, (4, 4), [13, 14, 15], 2, T=2, epsilon=1e-3)
    assert torch.allclose(a[2:], b)        # sample k depends only on its seed, not the batch
    raw = generate(den, noise, sigmas, 5, (4, 4), [11, 12, 13, 14, 15], 5, T=2, epsilon=1e-3, final_denoise=False)
    assert torch.allclose(a, den(raw, 0.1))
    with pytest.raises(ValueError, match="one seed per sample"):
        generate(den, noise, sigmas, 4, (4, 4), [1, 2], 2)


@pytest.mark.parametrize("noise", [WhiteNoise(1), GaussianRandomField(1, "rbf", 0.2, 0.1)])
def test_heun_ode_matches_the_exact_probability_flow_of_gaussian_data(noise):
    # For u ~ N(0, s^2 C) and noise N(0, C) the ODE dx/dsigma = (x - D)/sigma has the solution
    # x(sigma) = x(sigma_1) sqrt((s^2 + sigma^2) / (s^2 + sigma_1^2)), so x(0) = x(sigma_1) s / sqrt(s^2 + sigma_1^2).
    from model_code.samplers import heun_ode
    from model_code.schedules import edm_sigmas
    s, sigma_1 = 0.7, 10.0
    x = sigma_1 * noise.sample(8, (6, 6), torch.Generator().manual_seed(0))
    expected = x * s / math.sqrt(s ** 2 + sigma_1 ** 2)
    errors = []
    for n in (40, 80):
        out = heun_ode(GaussianPosteriorMean(s), x.clone(), edm_sigmas(sigma_1, 0.002, n))
        errors.append(((out - expected).abs().max() / expected.abs().max()).item())
    assert errors[1] < 3e-3
    assert errors[1] < errors[0] / 3          # second order: halving the step divides the error by ~4


def test_edm_sigma_grid():
    from model_code.schedules import edm_sigmas
    g = edm_sigmas(80.0, 0.002, 18)
    assert g[0].item() == pytest.approx(80.0) and g[-1].item() == pytest.approx(0.002)
    assert torch.all(g[1:] < g[:-1])
    # rho = 1 is a linear grid
    assert torch.allclose(edm_sigmas(1.0, 0.1, 10, rho=1.0), torch.linspace(1.0, 0.1, 10, dtype=torch.float64))


def test_edm_lognormal_levels():
    proc = VEProcess(sigma_levels(1000.0, 1e-4, 5), level_sampling="edm_lognormal")
    d = proc.sample_sigma(50_000, torch.Generator().manual_seed(0)).double().log()
    # ln sigma ~ N(-1.2, 1.2^2); the clip at [1e-4, 1000] (7 standard deviations) changes nothing here
    assert d.mean().item() == pytest.approx(-1.2, abs=0.02)
    assert d.std().item() == pytest.approx(1.2, rel=0.02)
