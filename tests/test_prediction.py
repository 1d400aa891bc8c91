"""Interpolant schedules, prediction-type conversions and training-time samplers against
analytic answers (docs/maths.md). Float64 throughout, t in [0.05, 0.95]."""
import itertools
import math

import pytest
import torch

from model_code import prediction as P
from model_code.noise import GaussianRandomField, WhiteNoise
from model_code.processes.interpolant import (
    INTERPOLANTS, VE, Cosine, LinearVP, RectifiedFlow, build_interpolant, expand_like,
)
from model_code.schedules import sample_time

DT = torch.float64
RES = 12
B = 6


def make_proc(name):
    return {"rectified_flow": RectifiedFlow(), "cosine": Cosine(), "linear_vp": LinearVP(0.1, 20.0),
            "ve": VE(0.02, 50.0)}[name]


NOISES = {
    "white": lambda: WhiteNoise(channels=2),
    "grf": lambda: GaussianRandomField(channels=2, kernel="rbf", length_scale=0.1, eps=0.01),
}


def make_batch(noise_name, seed=0):
    """(x0, x1, t): smooth-ish data, noise from noise.py, t ~ U[0.05, 0.95], float64."""
    g = torch.Generator().manual_seed(seed)
    x1 = NOISES[noise_name]().sample(B, RES, generator=g, dtype=DT)
    grid = torch.arange(RES, dtype=DT) / RES
    phase = 2 * math.pi * torch.rand(B, 1, 1, 1, generator=g, dtype=DT)
    x0 = torch.sin(2 * math.pi * grid[None, None, :, None] + phase) * torch.cos(2 * math.pi * grid)
    x0 = x0.expand(B, 2, RES, RES) + 0.3 * torch.randn(B, 2, RES, RES, generator=g, dtype=DT)
    t = 0.05 + 0.9 * torch.rand(B, generator=g, dtype=DT)
    return x0, x1, t


def close(a, b, rtol=1e-9):
    scale = max(float(b.abs().max()), 1.0)
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale)


# ----------------------------------------------------------------------------- registry


def test_registry_and_build():
    assert set(INTERPOLANTS) == {"rectified_flow", "cosine", "linear_vp", "ve"}
    assert isinstance(build_interpolant("linear_vp", beta_min=0.2, beta_max=10.0), LinearVP)
    with pytest.raises(ValueError, match="unknown interpolant"):
        build_interpolant("ddpm")
    with pytest.raises(ValueError, match="bad parameters"):
        build_interpolant("ve", beta_max=3.0)
    with pytest.raises(ValueError, match="unknown prediction type"):
        P.convert(torch.zeros(1, 1, 2, 2), "eps", "x0", torch.zeros(1, 1, 2, 2), 0.5, RectifiedFlow())


def test_expand_like_broadcasts_over_any_rank():
    t = torch.tensor([0.1, 0.2, 0.3], dtype=DT)
    for shape in [(3, 4), (3, 2, 5), (3, 2, 4, 4), (3, 1, 2, 3, 4)]:
        x = torch.ones(shape, dtype=torch.float32)
        out = expand_like(t, x) * x
        assert out.dtype == torch.float32
        assert torch.allclose(out.reshape(3, -1), t.float()[:, None].expand(3, out[0].numel()))
    assert expand_like(0.5, torch.ones(2, 3)).dim() == 0


# ----------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("name", list(INTERPOLANTS))
def test_derivatives_match_finite_differences(name):
    proc = make_proc(name)
    t = torch.linspace(0.05, 0.95, 19, dtype=DT)
    h = 1e-6
    for f, df in [(proc.alpha, proc.d_alpha), (proc.sigma, proc.d_sigma)]:
        fd = (f(t + h) - f(t - h)) / (2 * h)
        close(df(t), fd, rtol=1e-6)
    c = proc(t)
    # every schedule: alpha decreasing, sigma increasing, velocity determinant positive
    assert (c.d_alpha <= 0).all() and (c.d_sigma > 0).all()
    assert (c.alpha * c.d_sigma - c.sigma * c.d_alpha > 0).all()


def test_known_schedule_values():
    t = torch.linspace(0.0, 1.0, 11, dtype=DT)
    rf = RectifiedFlow()(t)
    close(rf.alpha, 1 - t)
    close(rf.sigma, t)
    cos = Cosine()(t)
    close(cos.alpha ** 2 + cos.sigma ** 2, torch.ones_like(t))
    assert float(cos.alpha[-1]) == pytest.approx(0.0, abs=1e-15) and float(cos.sigma[0]) == 0.0

    vp = LinearVP(beta_min=0.1, beta_max=20.0)
    c = vp(t)
    close(c.alpha ** 2 + c.sigma ** 2, torch.ones_like(t), rtol=1e-12)
    assert float(vp.alpha(0.0)) == 1.0 and float(vp.sigma(0.0)) == 0.0
    assert float(vp.alpha(1.0)) == pytest.approx(math.exp(-0.25 * (0.1 + 20.0)), rel=1e-12)
    # alpha = exp(-0.5 int_0^t beta) against a numerical integral of beta
    s = torch.linspace(0.0, 0.7, 70001, dtype=DT)
    integral = torch.trapezoid(vp.beta(s), s)
    assert float(vp.alpha(0.7)) == pytest.approx(math.exp(-0.5 * float(integral)), rel=1e-9)
    assert torch.isfinite(vp.d_sigma(torch.tensor([0.0], dtype=DT))).all()

    ve = VE(sigma_min=0.02, sigma_max=50.0)
    c = ve(t)
    assert torch.equal(c.alpha, torch.ones_like(t)) and torch.equal(c.d_alpha, torch.zeros_like(t))
    assert float(ve.sigma(0.0)) == pytest.approx(0.02, rel=1e-12)
    assert float(ve.sigma(1.0)) == pytest.approx(50.0, rel=1e-12)
    close(c.sigma[1:-1] ** 2, c.sigma[:-2] * c.sigma[2:])  # geometric
    close(ve.t_from_sigma(c.sigma), t)


@pytest.mark.parametrize("name", list(INTERPOLANTS))
def test_sample_xt_and_velocity(name):
    proc = make_proc(name)
    x0, x1, t = make_batch("grf", seed=3)
    c = proc(t)
    xt = proc.sample_xt(x0, x1, t)
    for i in range(B):
        close(xt[i], float(c.alpha[i]) * x0[i] + float(c.sigma[i]) * x1[i])
    h = 1e-6
    fd = (proc.sample_xt(x0, x1, t + h) - proc.sample_xt(x0, x1, t - h)) / (2 * h)
    close(proc.velocity(x0, x1, t), fd, rtol=1e-6)
    # float32 fields get float32 results from float64 coefficients
    assert proc.sample_xt(x0.float(), x1.float(), t).dtype == torch.float32


# ----------------------------------------------------------------------------- conversions


@pytest.mark.parametrize("noise", list(NOISES))
@pytest.mark.parametrize("name", list(INTERPOLANTS))
def test_round_trips_between_every_pair_of_types(name, noise):
    proc = make_proc(name)
    x0, x1, t = make_batch(noise, seed=1)
    xt = proc.sample_xt(x0, x1, t)
    g = torch.Generator().manual_seed(11)
    for a, b in itertools.product(P.KINDS, P.KINDS):
        # a consistent output (the true value) and an arbitrary one (a network's guess)
        outputs = [P.regression_target(a, x0, x1, t, proc),
                   torch.randn(x0.shape, generator=g, dtype=DT)]
        for out in outputs:
            there = P.convert(out, a, b, xt, t, proc)
            back = P.convert(there, b, a, xt, t, proc)
            close(back, out)
        # the route through x0 alone gives the same answer as the direct solve
        close(P.from_x0(b, P.to_x0(a, outputs[1], xt, t, proc), xt, t, proc),
              P.convert(outputs[1], a, b, xt, t, proc), rtol=1e-8)


@pytest.mark.parametrize("noise", list(NOISES))
@pytest.mark.parametrize("name", list(INTERPOLANTS))
def test_regression_targets_are_consistent(name, noise):
    proc = make_proc(name)
    x0, x1, t = make_batch(noise, seed=2)
    xt = proc.sample_xt(x0, x1, t)
    targets = {k: P.regression_target(k, x0, x1, t, proc) for k in P.KINDS}
    close(targets["x0"], x0)
    close(targets["noise"], x1)
    for k in P.KINDS:
        close(targets[k], P.convert(x0, "x0", k, xt, t, proc))
        close(targets[k], P.from_x0(k, x0, xt, t, proc))
        close(P.to_x0(k, targets[k], xt, t, proc), x0)
        pair = P.to_pair(k, targets[k], xt, t, proc)
        close(pair[0], x0)
        close(pair[1], x1)
    preds = P.all_predictions(targets["v"], "v", xt, t, proc)
    for k in P.KINDS:
        close(getattr(preds, k), targets[k])
    # velocity target = d/dt x_t along the same pair
    h = 1e-6
    fd = (proc.sample_xt(x0, x1, t + h) - proc.sample_xt(x0, x1, t - h)) / (2 * h)
    close(targets["velocity"], fd, rtol=1e-6)
    # score target = -x1 / sigma; and C-score = -(x_t - alpha x0) / sigma^2
    c = proc.coefficients(t, x0)
    close(targets["score"], -(xt - c.alpha * x0) / c.sigma ** 2)


def test_known_prediction_values():
    x0, x1, t = make_batch("white", seed=4)
    rf = RectifiedFlow()
    close(P.regression_target("velocity", x0, x1, t, rf), x1 - x0)
    close(P.regression_target("v", x0, x1, t, rf), (1 - t)[:, None, None, None] * x1 - t[:, None, None, None] * x0)
    cos = Cosine()
    phi = (0.5 * math.pi * t)[:, None, None, None]
    v = torch.cos(phi) * x1 - torch.sin(phi) * x0  # Salimans & Ho: v = alpha eps - sigma x
    close(P.regression_target("v", x0, x1, t, cos), v)
    close(P.regression_target("velocity", x0, x1, t, cos), 0.5 * math.pi * v)  # u = dx/dphi * dphi/dt
    xt = cos.sample_xt(x0, x1, t)
    close(P.convert(v, "v", "x0", xt, t, cos), torch.cos(phi) * xt - torch.sin(phi) * v)
    ve = VE(0.02, 50.0)
    xt = ve.sample_xt(x0, x1, t)
    sig = ve.sigma(t)[:, None, None, None]
    # VE score from a denoiser D: (D - x) / sigma^2, as in denoiser.py
    close(P.convert(x0, "x0", "score", xt, t, ve), (x0 - xt) / sig ** 2)


def test_endpoints_stay_finite():
    x0, x1, _ = make_batch("white", seed=5)
    for name in INTERPOLANTS:
        proc = make_proc(name)
        for t in (0.0, 1.0):
            tt = torch.full((B,), t, dtype=DT)
            xt = proc.sample_xt(x0, x1, tt)
            for a, b in itertools.product(P.KINDS, P.KINDS):
                out = P.convert(x0, a, b, xt, tt, proc)
                assert torch.isfinite(out).all(), (name, t, a, b)


@pytest.mark.parametrize("name", list(INTERPOLANTS))
def test_gaussian_data_exact_posterior_and_score(name):
    """x0 ~ N(0, s^2 I), white noise: x_t ~ N(0, v I), v = alpha^2 s^2 + sigma^2,
    E[x0|x_t] = alpha s^2 / v x_t, score -x_t / v, probability-flow velocity v' / (2 v) x_t."""
    proc = make_proc(name)
    s = 0.7
    _, _, t = make_batch("white", seed=6)
    xt = torch.randn(B, 2, RES, RES, generator=torch.Generator().manual_seed(7), dtype=DT)
    c = proc.coefficients(t, xt)
    var = c.alpha ** 2 * s ** 2 + c.sigma ** 2
    d_var = 2 * c.alpha * c.d_alpha * s ** 2 + 2 * c.sigma * c.d_sigma
    ex0 = c.alpha * s ** 2 / var * xt
    close(P.convert(ex0, "x0", "score", xt, t, proc), -xt / var)
    close(P.convert(ex0, "x0", "noise", xt, t, proc), c.sigma / var * xt)  # E[x1|x_t]
    # the ODE dx/dt = E[u|x] keeps N(0, v(t) I): dx/dt = v'/(2v) x
    close(P.convert(ex0, "x0", "velocity", xt, t, proc), d_var / (2 * var) * xt)
    # back from the exact score to the posterior mean
    close(P.convert(-xt / var, "score", "x0", xt, t, proc), ex0)


def test_gaussian_grf_score_is_C_preconditioned():
    """x0 ~ N(0, s^2 C), x1 ~ N(0, C) (GRF): x_t ~ N(0, v C) and C grad log p_t(x) = -x / v,
    compared with autograd of the exact density (the dense C of a small grid)."""
    grf = GaussianRandomField(channels=1, kernel="rbf", length_scale=0.2, eps=0.1)
    res = 5
    cov = grf.covariance(res, n_points=res * res)
    s, proc, t = 0.8, Cosine(), torch.tensor([0.3], dtype=DT)
    c = proc(t)
    var = float(c.alpha ** 2 * s ** 2 + c.sigma ** 2)
    xt = grf.sample(1, res, generator=torch.Generator().manual_seed(8), dtype=DT)
    x = xt.reshape(-1).clone().requires_grad_(True)
    dist = torch.distributions.MultivariateNormal(torch.zeros(res * res, dtype=DT), var * cov)
    (grad,) = torch.autograd.grad(dist.log_prob(x), x)
    c_score = (cov @ grad).reshape(xt.shape)
    ex0 = float(c.alpha) * s ** 2 / var * xt
    close(P.convert(ex0, "x0", "score", xt, t, proc), c_score, rtol=1e-8)


# ----------------------------------------------------------------------------- time samplers

N_MC = 200_000


def test_uniform_time_sampler():
    u = sample_time("uniform", N_MC, torch.Generator().manual_seed(0), dtype=DT)
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert float(u.mean()) == pytest.approx(0.5, abs=4e-3)
    assert float(u.var()) == pytest.approx(1 / 12, abs=1e-3)
    w = sample_time("uniform", 1000, torch.Generator().manual_seed(0), low=0.05, high=0.95)
    assert float(w.min()) >= 0.05 and float(w.max()) <= 0.95 and w.dtype == torch.float32


@pytest.mark.parametrize("m,s", [(None, None), (0.5, 0.8), (-1.0, 1.5)])
def test_logit_normal_time_sampler(m, s):
    params = {} if m is None else {"m": m, "s": s}
    m, s = (0.0, 1.0) if m is None else (m, s)
    t = sample_time("logit_normal", N_MC, torch.Generator().manual_seed(1), dtype=DT, **params)
    assert float(t.min()) > 0.0 and float(t.max()) < 1.0
    logit = torch.log(t) - torch.log1p(-t)
    assert float(logit.mean()) == pytest.approx(m, abs=5 * s / math.sqrt(N_MC))
    assert float(logit.std()) == pytest.approx(s, rel=1e-2)


def test_edm_lognormal_sampler():
    sig = sample_time("edm_lognormal", N_MC, torch.Generator().manual_seed(2), dtype=DT)
    assert float(sig.min()) > 0.0
    assert float(sig.log().mean()) == pytest.approx(-1.2, abs=5 * 1.2 / math.sqrt(N_MC))
    assert float(sig.log().std()) == pytest.approx(1.2, rel=1e-2)
    sig2 = sample_time("edm_lognormal", N_MC, torch.Generator().manual_seed(2), dtype=DT, P_mean=0.5, P_std=0.3)
    assert float(sig2.log().mean()) == pytest.approx(0.5, abs=5 * 0.3 / math.sqrt(N_MC))


def test_time_samplers_use_only_the_generator():
    for kind in ("uniform", "logit_normal", "edm_lognormal"):
        state = torch.get_rng_state()
        a = sample_time(kind, 64, torch.Generator().manual_seed(5))
        b = sample_time(kind, 64, torch.Generator().manual_seed(5))
        c = sample_time(kind, 64, torch.Generator().manual_seed(6))
        assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
        assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="unknown time sampler"):
        sample_time("beta", 3, torch.Generator())
    with pytest.raises(ValueError, match="unknown parameter"):
        sample_time("uniform", 3, torch.Generator(), m=0.0)
