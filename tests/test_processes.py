"""Every process behind the Process protocol (model_code/processes/base.py).

One parametrised set of checks for all of them: shard losses add up to the full-batch loss,
a sample does not depend on the batch it is drawn in, describe() rebuilds the process, the
state survives a round trip, unknown sampler options are refused, and labels reach the
network. Then cheap analytic checks per process.
"""
import io
import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from model_code.data.toy import TwoAtomData
from model_code.nets.mlp import PermutationEquivariantMLP
from model_code.noise import GaussianRandomField, WhiteNoise
from model_code.processes import (Draw, InterpolantProcess, LevelsProcess, Process, VE, WrappedVEProcess,
                                  process_from_description)
from model_code.processes.linear import build_map
from model_code.processes.wrapped_ve import SigmaSchedule, generate
from model_code.regularizers import Regularized
from model_code.schedules import sigma_levels
from model_code.toy_score import AnalyticScore

try:                                           # the data sources' Batch, or a stand-in with the same fields
    from model_code.data.sources import Batch
except ImportError:                            # pragma: no cover
    def Batch(x, labels=None):
        return SimpleNamespace(x=x, labels=labels)

FIELD = (1, 6, 6)
N_CLASSES = 3


class TinyConv(nn.Module):
    """A 3x3 convolution conditioned on c (and on a class, when labels are given); per-sample."""

    def __init__(self, channels: int = 1, num_classes: int = N_CLASSES):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            for p in self.conv.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
        self.emb = nn.Parameter(0.1 * torch.randn(num_classes, channels, generator=g))
        self.seen = []

    def forward(self, x, c, labels=None):
        self.seen.append(None if labels is None else labels.clone())
        out = self.conv(x) + 0.1 * torch.tanh(c.float()).view(-1, 1, 1, 1).to(x)
        if labels is not None:
            out = out + self.emb[labels].view(len(x), -1, 1, 1).to(x)
        return out


class NoLabels(nn.Module):
    """A backbone that knows nothing of labels: the wrappers must not pass it any."""

    def __init__(self):
        super().__init__()
        self.inner = TinyConv()

    def forward(self, x, c):
        return self.inner(x, c)


def _fields(n=8, seed=0, shape=FIELD):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 1, 1, generator=g)
    return base + 0.3 * torch.rand(n, *shape, generator=g)


def _toy_batch(n=8, seed=0):
    return TwoAtomData().sample(n, torch.Generator().manual_seed(seed))


def _toy_net():
    torch.manual_seed(0)
    return PermutationEquivariantMLP(n_frequencies=2, hidden=16, depth=1, noise_dim=8)


def _wrapped():
    return WrappedVEProcess(SigmaSchedule("geometric", 0.01, 1.0), n_atoms=2)


def make_case(name):
    """(process, trained module, batch, one sample's shape, sampler options)."""
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    if name == "ve_white":
        p = VE(WhiteNoise(1), sigma_levels(5.0, 0.05, 6), "discrete", sigma_data=0.5, loss_weighting="edm")
        return p, p.wrap(TinyConv()), Batch(_fields(), labels), FIELD, {"T": 1, "epsilon": 1e-3}
    if name == "ve_grf":
        p = VE(GaussianRandomField(1, "rbf", 0.2, 0.1), sigma_levels(5.0, 0.05, 6), "continuous",
               loss_weighting="score")
        return p, p.wrap(NoLabels()), Batch(_fields()), FIELD, {"sampler": "euler_maruyama"}
    if name == "interpolant_rf":
        p = InterpolantProcess(GaussianRandomField(1, "rbf", 0.2, 0.1), "rectified_flow", "velocity", "velocity",
                               t_max=0.98)   # s = t / (1 - t) <= 49: float32 round-off stays below 1e-5
        return p, p.wrap(TinyConv()), Batch(_fields(), labels), FIELD, {"sampler": "heun_ode", "steps": 4}
    if name == "levels_heat":
        p = LevelsProcess(build_map("heat", FIELD, 4, blur_sigma_min=0.5, blur_sigma_max=3.0), sigma=0.01,
                          delta=0.02, prior_kind="dct_diag")
        p.fit(_fields(40, seed=1))
        return p, p.wrap(TinyConv()), Batch(_fields(), labels), FIELD, {}
    if name == "levels_fixed_random":
        p = LevelsProcess(build_map("fixed_random", (1, 3, 3), 3, seed=5), sigma=0.05, delta=0.05)
        p.fit(_fields(40, seed=1, shape=(1, 3, 3)))
        return p, p.wrap(NoLabels()), Batch(_fields(shape=(1, 3, 3))), (1, 3, 3), {}
    if name == "wrapped_ve":
        p = _wrapped()
        return p, p.wrap(_toy_net()), Batch(_toy_batch()), (2,), {"n_steps": 8}
    if name == "regularized_fokker_planck":
        p = Regularized(_wrapped(), "fokker_planck", weight=0.5, n_points=5, laplacian="hutchinson")
        return p, p.wrap(_toy_net()), Batch(_toy_batch()), (2,), {"n_steps": 8}
    raise KeyError(name)


CASES = ["ve_white", "ve_grf", "interpolant_rf", "levels_heat", "levels_fixed_random", "wrapped_ve",
         "regularized_fokker_planck"]
SHARDS = [slice(0, 2), slice(2, 5), slice(5, 8)]


def _loss(p, model, batch, seed, shard=slice(None), step=10):
    return p.loss(model, batch, torch.Generator().manual_seed(seed), shard, step)


def _close(a, b, rel=1e-5):
    """|a - b| <= rel * max |b| elementwise (a relative tolerance on the scale of b)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(((a - b).abs() <= rel * b.abs().max().clamp_min(1e-12)).all())


# ----------------------------------------------------------------------------- the protocol, for every process

@pytest.mark.parametrize("name", CASES)
def test_shard_losses_add_up_to_the_full_batch_loss(name):
    p, model, batch, _, _ = make_case(name)
    assert isinstance(p, Process)
    full = _loss(p, model, batch, seed=3)
    assert isinstance(full, Draw) and full.loss.dim() == 0 and full.loss.requires_grad
    parts = [_loss(p, model, batch, seed=3, shard=s) for s in SHARDS]
    sizes = [len(range(len(batch.x))[s]) for s in SHARDS]
    total = sum(d.loss.double() * n for d, n in zip(parts, sizes)) / sum(sizes)
    assert _close(total, full.loss.double()), (float(total), float(full.loss))
    for key, value in full.terms.items():
        assert _close(sum(d.terms[key] * n for d, n in zip(parts, sizes)) / sum(sizes), value), key


@pytest.mark.parametrize("name", CASES)
def test_a_sample_does_not_depend_on_its_batch(name):
    p, model, _, shape, options = make_case(name)
    alone = p.sample(model, [11], shape, "cpu", **options)
    batch = p.sample(model, [7, 11, 13], shape, "cpu", **options)
    assert alone.shape == (1, *shape) and batch.shape == (3, *shape)
    assert alone.dtype == torch.float32 and alone.device.type == "cpu" and torch.isfinite(batch).all()
    assert _close(batch[1], alone[0])
    assert not torch.allclose(batch[0], batch[1])


@pytest.mark.parametrize("name", CASES)
def test_describe_rebuilds_the_same_process(name):
    p, model, batch, _, _ = make_case(name)
    desc = json.loads(json.dumps(p.describe()))           # plain JSON data
    assert desc["type"] == p.name
    q = process_from_description(desc)
    assert type(q) is type(p) and q.describe() == desc
    a, b = _loss(p, model, batch, seed=5), _loss(q, model, batch, seed=5)
    assert _close(b.loss, a.loss, rel=1e-6) and b.terms.keys() == a.terms.keys()


@pytest.mark.parametrize("name", CASES)
def test_state_dict_round_trip(name):
    p, model, _, shape, options = make_case(name)
    buffer = io.BytesIO()
    torch.save(p.state_dict(), buffer)
    q = process_from_description(p.describe())
    buffer.seek(0)
    q.load_state_dict(torch.load(buffer, weights_only=True))
    assert _close(q.sample(model, [1, 2], shape, "cpu", **options), p.sample(model, [1, 2], shape, "cpu", **options))


@pytest.mark.parametrize("name", CASES)
def test_unknown_sampler_options_are_refused(name):
    p, model, _, shape, _ = make_case(name)
    with pytest.raises(TypeError):
        p.sample(model, [1], shape, "cpu", no_such_option=1)


def test_the_levels_prior_is_the_state():
    p, model, _, shape, _ = make_case("levels_heat")
    state = p.state_dict()
    assert set(state) == {"prior"}
    q = process_from_description(p.describe())
    with pytest.raises(RuntimeError, match="fit"):
        q.sample(model, [1], shape, "cpu")
    q.load_state_dict(state)
    assert torch.equal(q.prior.mean, p.prior.mean) and torch.equal(q.prior.factor, p.prior.factor)


@pytest.mark.parametrize("name", ["ve_white", "interpolant_rf", "levels_heat"])
def test_labels_reach_the_network(name):
    p, model, batch, shape, options = make_case(name)
    net = model.backbone if hasattr(model, "backbone") else model.net
    net.seen.clear()
    _loss(p, model, batch, seed=1, shard=slice(2, 5))
    assert net.seen and all(torch.equal(s, batch.labels[2:5]) for s in net.seen)
    net.seen.clear()
    labels = torch.tensor([2, 0, 1])
    out = p.sample(model, [4, 5, 6], shape, "cpu", labels=labels, **options)
    assert net.seen and all(torch.equal(s, labels) for s in net.seen)
    plain = p.sample(model, [4, 5, 6], shape, "cpu", **options)
    assert not torch.allclose(out, plain)                  # the class embedding changes the samples
    with pytest.raises(ValueError, match="label"):
        p.sample(model, [4, 5], shape, "cpu", labels=labels, **options)


# ----------------------------------------------------------------------------- VE

def test_ve_loss_of_the_exact_gaussian_denoiser_is_one():
    """u ~ N(0, s^2 I), white noise: D*(x, sigma) = s^2 / (s^2 + sigma^2) x, whose error variance per
    point is s^2 sigma^2 / (s^2 + sigma^2) = c_out^2 for sigma_data = s; the EDM weight 1 / c_out^2
    makes the expected loss exactly 1 at every sigma."""
    s = 0.5
    p = VE(WhiteNoise(1), sigma_levels(20.0, 0.01, 10), "continuous", sigma_data=s, loss_weighting="edm")

    def exact(x, sigma, labels=None, scale=1.0):
        sig = torch.as_tensor(sigma).view(-1, 1, 1, 1).to(x)
        return scale * s ** 2 / (s ** 2 + sig ** 2) * x

    u = s * torch.randn(1024, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    batch = Batch(u)
    value = _loss(p, exact, batch, seed=1).loss.item()
    assert value == pytest.approx(1.0, abs=0.08)
    worse = _loss(p, lambda x, sigma: exact(x, sigma, scale=1.2), batch, seed=1).loss.item()
    assert worse > value


def test_ve_keeps_its_levels_api():
    p = VE(WhiteNoise(1), sigma_levels(5.0, 0.05, 6))
    assert p.sigma_max == pytest.approx(5.0) and p.sigma_min == pytest.approx(0.05) and len(p.sigmas) == 6
    sig = p.sample_sigma(5, torch.Generator().manual_seed(0))
    assert sig.shape == (5,)
    assert p.perturb(torch.zeros(5, 1, 2, 2), sig, torch.ones(5, 1, 2, 2))[:, 0, 0, 0].tolist() == sig.tolist()


# ----------------------------------------------------------------------------- interpolant

def test_interpolant_loss_of_the_exact_x0_predictor():
    """Rectified flow, x0 ~ N(0, I), x1 ~ N(0, I): E[x0 | x_t] = (1 - t) / ((1 - t)^2 + t^2) x_t with
    posterior variance f(t) = t^2 / ((1 - t)^2 + t^2); f(t) + f(1 - t) = 1, so E_t f = 1/2 for t ~ U(0, 1)."""
    p = InterpolantProcess(WhiteNoise(1), "rectified_flow", model_output="x0", loss_target="x0")

    def exact_x0(x_t, t):
        t = t.double().view(-1, 1, 1, 1)
        return ((1 - t) / ((1 - t) ** 2 + t ** 2) * x_t.double()).to(x_t)

    u = torch.randn(4096, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    assert _loss(p, p.wrap(exact_x0), Batch(u), seed=1).loss.item() == pytest.approx(0.5, abs=0.04)


# ----------------------------------------------------------------------------- levels

class ExactInverse(nn.Module):
    """mu(x, k) = T(k-1) T(k)^{-1} x: the exact reverse step of an invertible map when sigma -> 0."""

    def __init__(self, fmap):
        super().__init__()
        self.fmap = fmap

    def forward(self, x, k, labels=None):
        k = k.long()
        return self.fmap.apply(self.fmap.inverse(x.double(), k), k - 1).to(x)


def test_levels_loss_vanishes_for_the_exact_map_as_sigma_goes_to_zero():
    fmap = build_map("fixed_random", (1, 3, 3), 3, seed=2)
    batch = Batch(_fields(16, shape=(1, 3, 3)).double())
    losses = [_loss(LevelsProcess(fmap, sigma=s, delta=0.1), ExactInverse(fmap), batch, seed=0).loss.item()
              for s in (1e-2, 1e-4, 1e-6)]
    assert losses[2] < 1e-9 and losses[1] < losses[0]
    assert losses[0] / losses[1] == pytest.approx(1e4, rel=1e-3)          # the loss is sigma^2 times a constant
    identity = _loss(LevelsProcess(fmap, sigma=1e-6, delta=0.1), lambda x, k: x, batch, seed=0).loss.item()
    assert identity > 1e-3


def test_levels_elbo_terms_and_modes():
    p, model, batch, shape, _ = make_case("levels_heat")
    terms = p.elbo_terms(model, batch.x.clamp(0, 1), torch.Generator().manual_seed(0))
    assert terms.shape == (8, p.K + 1) and torch.isfinite(terms).all()
    same = p.sample(model, [1, 2, 3], shape, "cpu", mode="same_init")
    assert same.shape == (3, *shape)
    u0, traj = p.sample(model, [1, 2], shape, "cpu", keep_trajectory=True, batch_size=1)
    assert traj.shape == (p.K + 1, 2, *shape) and torch.allclose(traj[-1], u0)
    assert p.sample(model, [1, 2], shape, "cpu", mode="interpolate", num_points=4).shape == (4, *shape)
    with pytest.raises(ValueError, match="mode"):
        p.sample(model, [1], shape, "cpu", mode="bogus")


# ----------------------------------------------------------------------------- toy

def test_wrapped_ve_sample_is_the_single_generator_reverse_sde():
    p, model, _, shape, _ = make_case("wrapped_ve")
    ours = p.sample(model, [3, 9], shape, "cpu", n_steps=8)
    for row, seed in zip(ours, [3, 9]):
        ref = generate(model, p, 1, 2, torch.Generator().manual_seed(seed), n_steps=8)[0]
        assert _close(row, ref.float())


def test_regularizer_is_zero_for_the_analytic_score_and_off_during_burn_in():
    analytic = AnalyticScore()
    batch = Batch(_toy_batch(16))
    reg = Regularized(_wrapped(), "analytic_regression", weight=2.0, n_points=0, analytic=analytic)
    draw = _loss(reg, analytic, batch, seed=0)
    assert draw.terms["regularizer"] == 0.0 and draw.terms["total"] == pytest.approx(draw.terms["dsm"])
    net = _toy_net()
    burn = Regularized(_wrapped(), "fokker_planck", weight=1.0, burn_in=5, n_points=4)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    off = burn.loss(net, batch, g1, step=4)
    plain = burn.process.loss(net, batch, g2)
    assert off.loss.item() == plain.loss.item() and off.terms["regularizer"] == 0.0
    assert torch.equal(g1.get_state(), g2.get_state())
    on = burn.loss(net, batch, torch.Generator().manual_seed(1), step=5)
    assert on.terms["regularizer"] > 0 and on.loss.item() > off.loss.item()


@pytest.mark.parametrize("kind, laplacian", [("fokker_planck", "exact"), ("fokker_planck", "hutchinson"),
                                             ("analytic_regression", "exact"), ("consistency", "exact"),
                                             ("consistency_analytic", "exact")])
def test_every_regularizer_adds_up_over_shards(kind, laplacian):
    reg = Regularized(_wrapped(), kind, weight=0.7, n_points=5, analytic=AnalyticScore(), laplacian=laplacian,
                      consistency={"n_steps": 2, "n_samples": 2})
    net, batch = _toy_net(), Batch(_toy_batch())
    full = _loss(reg, net, batch, seed=2)
    assert full.terms["regularizer"] != 0.0
    for shards in (SHARDS, [slice(0, 6), slice(6, 8)]):       # the second: one shard holds no regularized row
        parts = [_loss(reg, net, batch, seed=2, shard=s) for s in shards]
        sizes = [len(range(8)[s]) for s in shards]
        assert _close(sum(d.loss.double() * n for d, n in zip(parts, sizes)) / 8, full.loss.double())
    q = process_from_description(json.loads(json.dumps(reg.describe())))
    assert _close(_loss(q, net, batch, seed=2).loss, full.loss, rel=1e-6)


def test_bad_descriptions_and_arguments_are_value_errors():
    with pytest.raises(ValueError, match="process type"):
        process_from_description({"type": "nope"})
    with pytest.raises(ValueError, match="bad description"):
        process_from_description({"type": "wrapped_ve", "schedule": {}, "bogus": 1})
    with pytest.raises(ValueError, match="regularizer"):
        Regularized(_wrapped(), "nope")
    with pytest.raises(ValueError, match="analytic"):
        Regularized(_wrapped(), "analytic_regression")
    with pytest.raises(ValueError, match="sampler"):
        VE(WhiteNoise(1), [1.0, 0.1]).sample(lambda x, s: x, [1], (1, 2, 2), "cpu", sampler="nope")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("name", CASES)
def test_a_gpu_batch_with_a_cpu_generator_gives_the_cpu_loss(name):
    p, model, batch, shape, options = make_case(name)
    cpu = _loss(p, model, batch, seed=4).loss.item()
    gpu_batch = Batch(batch.x.cuda(), None if batch.labels is None else batch.labels.cuda())
    gpu = _loss(p, model.cuda(), gpu_batch, seed=4).loss.item()
    assert gpu == pytest.approx(cpu, rel=1e-4)
    on_gpu = p.loss(model, gpu_batch, torch.Generator(device="cuda").manual_seed(4), slice(1, 5), 10)
    assert torch.isfinite(on_gpu.loss)
    out = p.sample(model, [1, 2], shape, "cuda", **options)
    assert out.device.type == "cpu" and torch.isfinite(out).all()
