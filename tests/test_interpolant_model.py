"""Interpolant models (functional flow matching) inside the VE machinery."""
import pytest
import torch

from model_code import build, config
from model_code.denoiser import InterpolantDenoiser
from model_code.losses import interpolant_loss
from model_code.processes.interpolant import build_interpolant
from model_code.samplers import generate, heun_ode
from model_code.schedules import edm_sigmas


class ExactVelocity(torch.nn.Module):
    """E[alpha' x0 + sigma' x1 | x_t] for x0 ~ N(0, s^2 I), x1 ~ N(0, I)."""

    def __init__(self, proc, s):
        super().__init__()
        self.proc, self.s = proc, s

    def forward(self, x_t, t):
        t = t.double().view(-1, 1, 1, 1)
        a, g = self.proc.alpha(t), self.proc.sigma(t)
        da, dg = self.proc.d_alpha(t), self.proc.d_sigma(t)
        v = a ** 2 * self.s ** 2 + g ** 2
        return ((da * a * self.s ** 2 + dg * g) / v * x_t.double()).to(x_t.dtype)


@pytest.mark.parametrize("name", ["rectified_flow", "cosine", "linear_vp"])
def test_exact_velocity_model_is_the_exact_ve_denoiser(name):
    s = 0.8
    proc = build_interpolant(name)
    model = InterpolantDenoiser(ExactVelocity(proc, s), proc, "velocity")
    y = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    for ve_sigma in (0.05, 0.5, 5.0):  # linear_vp reaches s = 0.01 only at t = t_min
        expected = s ** 2 / (s ** 2 + ve_sigma ** 2) * y
        assert torch.allclose(model(y, ve_sigma), expected, rtol=1e-6, atol=1e-9)


def test_flow_matching_loss_is_minimal_at_the_exact_velocity():
    s = 0.8
    proc = build_interpolant("rectified_flow")
    exact = InterpolantDenoiser(ExactVelocity(proc, s), proc, "velocity")
    g = torch.Generator().manual_seed(0)
    x0 = s * torch.randn(4000, 1, 4, 4, generator=g, dtype=torch.float64)
    x1 = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.rand(4000, generator=g, dtype=torch.float64) * 0.98 + 0.01
    best = interpolant_loss(exact, x0, x1, t).item()
    scaled = InterpolantDenoiser(ExactVelocity(proc, s * 1.3), proc, "velocity")
    assert interpolant_loss(scaled, x0, x1, t).item() > best
    # Another output type regressed on velocity: x0-prediction of the exact model gives the same loss.
    as_x0 = InterpolantDenoiser(lambda x_t, tt: exact(x_t / proc.alpha(tt).view(-1, 1, 1, 1).to(x_t),
                                                      (proc.sigma(tt) / proc.alpha(tt)).double()), proc, "x0")
    assert interpolant_loss(as_x0, x0, x1, t).item() == pytest.approx(best, rel=1e-6)


def test_heun_on_the_exact_flow_recovers_the_data_variance():
    s = 0.8
    proc = build_interpolant("rectified_flow")
    model = InterpolantDenoiser(ExactVelocity(proc, s), proc, "velocity")
    from model_code.noise import WhiteNoise
    out = generate(model, WhiteNoise(1), edm_sigmas(200.0, 0.002, 40), 2000, (2, 2), list(range(2000)), 2000,
                   sampler=heun_ode)
    assert out.var().item() == pytest.approx(s ** 2, rel=0.08)


def test_flow_matching_run_trains_and_samples(tmp_path):
    """A tiny interpolant run trains through build_trainer; its best checkpoint rebuilds (build.load_run) and
    samples on a grid twice as fine as the one it was trained on (the model is resolution-free)."""
    cfg = config.load([], ["process=interpolant", "dataset=grf", "resolution=8", "npad=0", "grf_n_train=16",
                           "grf_n_valid=8", "batch_size=8", "epochs=2", "record_interval=1", "Ntest=4",
                           "val_batch_size=4", "arch=fno", "d_co_domain=8", "n_layers=2", "n_modes=3",
                           "embedding_dim=8", "n_plot=2", "tensorboard=false", "sampler=heun_ode",
                           "ode_steps=4", "sigma_max=80", "sigma_min=0.005", "device=cpu"])
    assert (cfg.process.type, cfg.sampler.name, cfg.sampler.steps) == ("interpolant", "heun_ode", 4)
    trainer = build.build_trainer(cfg, tmp_path, None, progress=False)
    trainer.fit()
    run = build.load_run(tmp_path, "model.w_total.pt", "cpu")
    assert isinstance(run.model, InterpolantDenoiser) and run.model.model_output == "velocity"
    assert run.process.name == "interpolant" and run.shape == (1, 8, 8)
    options = build.sampler_setup(run.cfg)
    assert options["sampler"] == "heun_ode" and len(options["sigmas"]) == 4
    x = run.process.sample(run.model, [1, 2, 3], (1, 16, 16), "cpu", **options)
    assert x.shape == (3, 1, 16, 16) and torch.isfinite(x).all()
    # sample k depends on its seed only, not on the batch it is drawn in
    assert torch.allclose(run.process.sample(run.model, [2], (1, 16, 16), "cpu", **options)[0], x[1], atol=1e-5)
