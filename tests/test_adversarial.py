"""GANO (processes/adversarial.py): the function-space gradient penalty, the generator's gradient,
the critic / generator update schedule, sampling at any resolution, and a tiny run that learns.

The behaviour GANO shares with every system (resume, preemption, kill -9, N processes = 1,
Slurm, eval.py modes) is tested by the parametrised tests over tests/systems.py ("gano_grf").
"""
import math

import pytest
import torch
from torch import nn

from model_code import build, checkpoint, config
from model_code.data.sources import Batch
from model_code.noise import GaussianRandomField
from model_code.processes.adversarial import (AdversarialModel, AdversarialProcess, FunctionalCritic,
                                              function_space_norm, gradient_penalty)
from model_code.processes.base import sample_in_batches

from helpers import cli_exit
from systems import ROOT


def grid(n):
    t = torch.arange(n, dtype=torch.float64) / n
    return torch.meshgrid(t, t, indexing="ij")


class LinearCritic:
    """D(u) = integral of w(s) . u(s) ds as the grid mean, w = (a sin 2 pi y, b cos 4 pi x) on two channels."""

    def __init__(self, a, b):
        self.a, self.b = a, b

    def weight(self, n):
        y, x = grid(n)
        return torch.stack([self.a * torch.sin(2 * math.pi * y), self.b * torch.cos(4 * math.pi * x)])

    def __call__(self, u):
        return (self.weight(u.shape[-1]) * u).mean(dim=(-3, -2, -1)) * u.shape[-3]


@pytest.mark.parametrize("n", [16, 48])
def test_gradient_penalty_of_a_linear_critic_is_its_analytic_value_at_every_resolution(n):
    """For D(u) = int w . u, dD/du = w everywhere, ||w||_L2^2 = (a^2 + b^2) / 2 exactly on a uniform grid,
    so the penalty is (sqrt((a^2 + b^2) / 2) - 1)^2 whatever the fields and the mixing weights."""
    a, b = 1.5, 0.5
    critic = LinearCritic(a, b)
    gen = torch.Generator().manual_seed(n)
    real, fake = (torch.randn(5, 2, n, n, generator=gen, dtype=torch.float64) for _ in range(2))
    mix = torch.rand(5, generator=gen, dtype=torch.float64)
    expected = (math.sqrt((a * a + b * b) / 2) - 1) ** 2
    assert gradient_penalty(critic, real, fake, mix).item() == pytest.approx(expected, rel=1e-10)
    # the grid gradient itself is w / N per point: the Euclidean norm would shrink like 1 / n
    grad = critic.weight(n).unsqueeze(0) / (n * n)
    assert function_space_norm(grad).item() == pytest.approx(math.sqrt((a * a + b * b) / 2), rel=1e-10)
    assert grad.flatten().norm().item() == pytest.approx(math.sqrt((a * a + b * b) / 2) / n, rel=1e-10)


class Identity(nn.Module):
    def forward(self, x, c):
        return x[:, :1]


def test_the_functional_critic_is_an_integral_whose_penalty_agrees_across_resolutions():
    """With f = identity the critic is linear, D(u) = int k(s) u(s) ds with k its weight network:
    its penalty is (||k||_L2 - 1)^2, the same at 32 and 96 px up to the quadrature error of ||k||."""
    torch.manual_seed(0)
    critic = FunctionalCritic(Identity(), kernel_width=8).double()
    fine = critic.weight(torch.stack(grid(512), dim=-1)).pow(2).mean().sqrt().item()   # ||k||_L2, fine quadrature
    values = []
    for n in (32, 96):
        gen = torch.Generator().manual_seed(n)
        real, fake = (torch.randn(3, 1, n, n, generator=gen, dtype=torch.float64) for _ in range(2))
        values.append(gradient_penalty(critic, real, fake, torch.rand(3, generator=gen, dtype=torch.float64)).item())
        # the critic of a constant function c is c * int k on every grid
        ones = torch.ones(1, 1, n, n, dtype=torch.float64)
        assert critic(3 * ones).item() == pytest.approx(3 * critic(ones).item(), rel=1e-12)
    assert values[0] == pytest.approx((fine - 1) ** 2, rel=0.05, abs=1e-4)
    assert values[1] == pytest.approx((fine - 1) ** 2, rel=0.02, abs=1e-4)


class SmallOperator(nn.Module):
    """A pointwise stand-in for the UNO (float64, so finite differences are exact to ~1e-8)."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.a, self.b = nn.Conv2d(c_in, 6, 1), nn.Conv2d(6, c_out, 1)

    def forward(self, x, c):
        return self.b(torch.tanh(self.a(x)))


def small_gano(n_critic=3, channels=1):
    torch.manual_seed(1)
    noise = GaussianRandomField(channels=channels, kernel="rbf", length_scale=0.2, eps=0.01)
    process = AdversarialProcess(noise, {"type": "fno", "config": {}}, n_critic=n_critic, lambda_grad=10.0)
    model = AdversarialModel(SmallOperator(channels, channels), FunctionalCritic(SmallOperator(channels, 1), 8))
    return process, model.double()


def test_generator_gradient_matches_a_finite_difference_with_the_critic_fixed():
    process, model = small_gano(n_critic=1)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    params = model.generator_parameters()
    direction = [torch.randn(p.shape, generator=torch.Generator().manual_seed(k), dtype=p.dtype)
                 for k, p in enumerate(params)]

    def generator_loss(grad=False):
        seen = []

        def update(loss, parameters=None):          # the critic update does nothing: the critic stays fixed
            parameters = list(parameters)
            if parameters == params:
                seen.append(torch.autograd.grad(loss, params) if grad else loss.item())

        process.train_step(model, Batch(x, None), torch.Generator().manual_seed(5), slice(None), 0, update)
        (value,) = seen
        return value

    grads = generator_loss(grad=True)
    analytic = sum((g * d).sum() for g, d in zip(grads, direction)).item()
    eps = 1e-5
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(eps * d)
    plus = generator_loss()
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.sub_(2 * eps * d)
    minus = generator_loss()
    assert analytic == pytest.approx((plus - minus) / (2 * eps), rel=1e-6, abs=1e-9)
    assert abs(analytic) > 1e-4                     # a real gradient, not zero against zero


def test_the_critic_steps_every_step_and_the_generator_every_n_critic_th():
    process, model = small_gano(n_critic=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    calls = []

    def update(loss, parameters=None):
        parameters = list(parameters)
        calls.append("critic" if parameters == list(model.critic.parameters()) else "generator")
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=parameters)
        optimizer.step()

    for step in range(6):
        before = [p.clone() for p in model.generator.parameters()]
        draw = process.train_step(model, Batch(x, None), gen, slice(None), step, update)
        moved = any(not torch.equal(a, b) for a, b in zip(before, model.generator.parameters()))
        assert moved == ((step + 1) % 3 == 0), step
        assert set(draw.terms) == {"wasserstein", "penalty", "generator"}
        assert draw.loss.item() == pytest.approx(-draw.terms["wasserstein"] + 10.0 * draw.terms["penalty"], rel=1e-9)
    assert calls == ["critic", "critic", "critic", "generator"] * 2 and len(calls) == 8


def test_samples_do_not_depend_on_the_batch_and_run_at_any_resolution():
    process, model = small_gano()
    model = model.float()
    seeds = list(range(100, 106))
    one = sample_in_batches(process, model, seeds, (1, 16, 16), "cpu", 6)
    split = sample_in_batches(process, model, seeds, (1, 16, 16), "cpu", 4)
    torch.testing.assert_close(one, split, rtol=1e-6, atol=1e-6)      # the same up to float summation order
    fine = process.sample(model, seeds[:2], (1, 32, 32), "cpu")
    assert fine.shape == (2, 1, 32, 32) and torch.isfinite(fine).all()
    # one network evaluation: the sample is G(z) for z the GRF input of that seed
    z = process.noise.sample(1, (16, 16), [torch.Generator().manual_seed(100)])
    with torch.no_grad():
        torch.testing.assert_close(one[:1], model(z), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="unconditional"):
        process.sample(model, seeds, (1, 16, 16), "cpu", labels=torch.zeros(6, dtype=torch.long))


def test_configs_build_the_published_optimiser_settings_and_reject_nonsense(capsys):
    cfg = config.load([ROOT / "configs/gano/grf_32px.yaml"], ["net.width=4", "net.channel_multipliers=[1,2]",
                                                            "net.n_modes=3", "process.adversarial.critic_lr=0.003"])
    parts = build.build_parts(cfg, None, torch.device("cpu"))
    optimizer = build.build_optimizer(cfg, parts.model)
    generator = {id(p) for p in parts.model.generator_parameters()}
    for group in optimizer.param_groups:
        mine = {id(p) for p in group["params"]}
        is_generator = mine <= generator
        assert is_generator or not mine & generator
        assert group["lr"] == (0.001 if is_generator else 0.003)
        assert group["betas"] == (0.5, 0.9)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(parts.model.parameters()))
    assert parts.process.describe()["critic"]["config"]["out_channels"] == 1
    # the published json file: GANO's keys map onto the schema
    published = config.load([ROOT / "exps/json/gano-copied.json"], ["process.type=adversarial"])
    assert published.process.adversarial.n_critic == 10 and published.process.adversarial.lambda_grad == 10.0
    assert published.process.adversarial.output == "identity"
    import train
    status, lines = cli_exit(capsys, train.main, "train.py", "--config", str(ROOT / "configs/gano/grf_32px.yaml"),
                             "--savedir", str(ROOT / "runs" / "never"), "net.type=unet")
    assert status == 2 and len(lines) == 1 and "adversarial" in lines[0] and "uno or fno" in lines[0]
    assert not (ROOT / "runs" / "never").exists()


def test_a_tiny_grf_run_lowers_the_wasserstein_distance_to_the_data():
    """300 steps on 16 px GRF fields lower w_total (the Wasserstein distances between the generated and the
    real fields' per-sample variance and skewness, on 256 held-out fields) under its initial value at
    the best of the evaluations every 100 steps (the one model.w_total.pt keeps). (The critic's own estimate
    is no yardstick here: it rises while the critic learns.)"""
    import json
    import tempfile

    cfg = config.load([ROOT / "configs/gano/grf_32px.yaml"], [
        "data.resolution=16", "data.grf_n_train=256", "data.grf_n_valid=256", "net.width=8",
        "net.channel_multipliers=[1,2]", "net.n_modes=6", "net.embedding_dim=8", "train.tensorboard=false",
        "train.epochs=null", "train.steps=300", "train.record_interval=100", "train.log_interval=100",
        "train.checkpoint_interval=100",       # (the default, every unit, would write model.pt at every step)
        "eval.n_samples=256", "train.max_minutes=null", "optim.ema_rate=null", "process.adversarial.n_critic=2",
        "train.device=cpu", "train.threads=1"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as folder:
            trainer = build.build_trainer(cfg, folder, None)
            (field_stats,) = trainer.evaluators
            before = field_stats(trainer.context())["w_total"]
            trainer.fit()
            rows = [json.loads(line) for line in open(f"{folder}/results.json")]
            best = checkpoint.load(f"{folder}/model.w_total.pt")["best"]["w_total"]
    finally:
        torch.set_num_threads(threads)
    values = [r["w_total"] for r in rows if "w_total" in r]
    assert len(values) == 3 and best == min(values)
    # A generator that does not learn keeps w_total at `before` (the evaluation draws fixed seeds). How far
    # 300 adversarial steps get is chaotic: two UNO forward paths equal to 3e-7 reached 0.6x and 0.81x of
    # `before`, so the bound sits well above those and below no learning (1.0).
    assert best < 0.95 * before, (before, values)
