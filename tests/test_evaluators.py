"""Evaluators (model_code/evaluators.py) and the digits classifier's Frechet distance (digits_classifier.py)."""
import math
import types

import pytest
import torch
from torch import nn

from model_code import digits_classifier as dc
from model_code import metrics as M
from model_code.evaluators import FieldStats, Frechet, LevelsELBO, ToyScoreError


def context(**kw):
    base = dict(model=None, process=None, valid=None, valid_labels=None, device=torch.device("cpu"), step=0)
    base.update(kw)
    return types.SimpleNamespace(**base)


def grf_fields(n, seed, res=16):
    from model_code.data.grf import PeriodicGRF

    return PeriodicGRF().sample(n, res, torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- FieldStats


def test_field_stats_of_known_transformations():
    valid = grf_fields(200, 0)
    asked = []

    def generate(n):
        asked.append(n)
        return 2 * valid[:n]

    ev = FieldStats("real", valid, seed=0, warn=False)
    assert ev.metrics == ("w_var", "w_skew", "w_total", "mean_l2")
    out = ev(context(valid=valid, generate=generate))
    assert asked == [200] and ev.last_samples.shape == valid.shape
    var = M.real_stats(valid)["var"]
    # Doubling every field: variances x4 (W1 = 3 mean var, same order), skewness unchanged, mean field x2.
    assert out["w_var"] == pytest.approx(3 * float(var.mean()), rel=1e-9)
    assert out["w_skew"] == pytest.approx(0.0, abs=1e-9)
    assert out["mean_l2"] == pytest.approx(float(valid.double().mean(0).pow(2).mean()), rel=1e-9)
    floor = M.floor_metrics(valid, "real", seed=0)
    assert out["floor_w_var"] == pytest.approx(floor["w_var"])
    assert out["w_var_x_floor"] == pytest.approx(out["w_var"] / floor["w_var"])
    assert out["floor_w_var_p05"] <= out["floor_w_var_p95"]
    same = FieldStats("image", valid, n=50, warn=False)(context(valid=valid, generate=lambda n: valid[:n]))
    assert same["w_skew"] < 0.1 * out["w_var"] and same["n_nonfinite"] == 0


def test_field_stats_phase_data_reports_the_phase_mean():
    phi = torch.rand(60, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 * math.pi
    valid = torch.cat([phi.cos(), phi.sin()], dim=1)
    ev = FieldStats("phase", valid, warn=False)
    assert "mean_phase_l2" in ev.metrics
    out = ev(context(valid=valid, generate=lambda n: valid))
    assert out["w_var"] == 0 and out["mean_l2"] == 0 and out["mean_phase_l2"] == pytest.approx(0, abs=1e-20)
    with pytest.raises(ValueError):
        FieldStats("atoms", valid)


# --------------------------------------------------------------------------- LevelsELBO


class GaussianProcessStub:
    """elbo_terms: column 0 the exact -log N(u0; 0, I) in nats, column 1 generator noise with mean 0."""

    def __init__(self):
        self.rows = 0

    def elbo_terms(self, model, u0, generator, delta=None):
        self.rows += len(u0)
        d = u0[0].numel()
        nll = 0.5 * u0.double().pow(2).flatten(1).sum(1) + 0.5 * d * math.log(2 * math.pi)
        noise = torch.randn(len(u0), generator=generator, dtype=torch.float64)
        return torch.stack([nll, noise], dim=1)


def test_levels_elbo_in_bits_per_dimension():
    valid = torch.randn(700, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    stub = GaussianProcessStub()
    ev = LevelsELBO(n_images=600, batch_size=128, seed=5)
    assert ev.metrics == ("val_bpd",)
    out = ev(context(valid=valid, process=stub))
    assert stub.rows == 600                                  # the first n_images, all batches
    d = 64
    noise = torch.cat([torch.randn(len(range(600)[i:i + 128]), dtype=torch.float64,
                                   generator=torch.Generator().manual_seed(ev.batch_seed(j)))
                       for j, i in enumerate(range(0, 600, 128))])
    u = valid[:600].double()
    exact = (0.5 * u.pow(2).mean() * d + 0.5 * d * math.log(2 * math.pi) + noise.mean()) / (d * math.log(2))
    assert out["val_bpd"] == pytest.approx(float(exact), rel=1e-12)
    # Standard normal data: the entropy 0.5 log2(2 pi e) = 2.047 bits per dimension (MC error ~0.006).
    assert out["val_bpd"] == pytest.approx(0.5 * math.log2(2 * math.pi * math.e), abs=0.03)
    assert ev(context(valid=valid, process=stub))["val_bpd"] == out["val_bpd"]      # same noise every time
    other = LevelsELBO(n_images=600, batch_size=128, seed=6)(context(valid=valid, process=stub))
    assert other["val_bpd"] != out["val_bpd"]


def test_levels_elbo_shared_over_ranks_gives_the_same_number():
    from model_code.distributed import Context

    valid = torch.randn(300, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    ev = LevelsELBO(n_images=300, batch_size=64, seed=2)
    single = ev(context(valid=valid, process=GaussianProcessStub()))["val_bpd"]
    parts = {}

    class Rank(Context):
        def gather_cat(self, part):                       # rank 1 runs first; rank 0 then sees both parts
            parts[self.rank] = part
            return torch.cat([parts[r] for r in sorted(parts)])

    ranks = [Rank(rank=0, world_size=2), Rank(rank=1, world_size=2)]
    stub = GaussianProcessStub()
    ev(context(valid=valid, process=stub, dist=ranks[1]))
    assert stub.rows == 108                               # rank 1: batches 3, 4 (64 + 44 rows) of 0..4
    assert ev(context(valid=valid, process=stub, dist=ranks[0]))["val_bpd"] == pytest.approx(single, rel=1e-12)


# --------------------------------------------------------------------------- ToyScoreError


class ZeroScore(nn.Module):
    def forward(self, x, sigma, labels=None):
        return torch.zeros_like(x)


def test_toy_score_error_of_exact_and_zero_scores():
    from model_code.data.toy import TwoAtomData
    from model_code.processes.wrapped_ve import SigmaSchedule
    from model_code.toy_score import AnalyticScore

    data, analytic = TwoAtomData(), AnalyticScore()
    schedule = SigmaSchedule("geometric", 0.005, 1.0)
    ts = (0.0, 0.3, 0.5)
    ev = ToyScoreError(analytic, data, schedule, ts=ts, n=4000, seed=0)
    assert ev.metrics == ("score_error",)
    assert ev(context(model=analytic))["score_error"] == 0.0
    zero = ev(context(model=ZeroScore()))
    # Well-separated modes at these small sigma: p_t is locally N(m, v I) in 2-D, v = sigma_d^2 + sigma^2, so
    # E sigma^2 |s*|^2 = 2 sigma^2 / v (the Fisher information); MC relative error ~ 1 / sqrt(n) per t.
    sig = [float(schedule.sigma(torch.tensor(t, dtype=torch.float64))) for t in ts]
    expected = sum(2 * s ** 2 / (0.05 ** 2 + s ** 2) for s in sig) / len(sig)
    assert zero["score_error"] == pytest.approx(expected, rel=0.04)
    assert zero["score_error_relative"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- digits classifier + Frechet


@pytest.fixture(scope="module")
def digits():
    from model_code.data.images import load_digits_arrays

    return load_digits_arrays()


def test_classifier_accuracy_and_determinism(digits):
    model = dc.classifier()
    assert dc.test_accuracy() >= 0.95
    images, labels = digits
    assert dc.accuracy(model, images, labels) >= 0.95
    assert dc.classifier() is model                                  # trained once per process
    again, acc = dc.train_classifier()                               # a second build: the same weights
    assert acc == dc.test_accuracy()
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    f = dc.features(images[:10])
    assert f.shape == (10, dc.FEATURE_DIM) and torch.equal(f, again.features(images[:10]).detach())


def test_frechet_separates_real_from_noise(digits):
    images, _ = digits
    a, b = M.split_halves(len(images), seed=0)
    real_vs_real = dc.frechet_digits(images[a], images[b])
    assert real_vs_real == pytest.approx(dc.frechet_floor(images, seed=0))
    noise = torch.rand(len(a), 1, 8, 8, generator=torch.Generator().manual_seed(0))
    real_vs_noise = dc.frechet_digits(noise, images[b])
    assert real_vs_noise > 20 * real_vs_real
    assert dc.frechet_digits(images, images) == pytest.approx(0.0, abs=1e-6)
    # Other sizes / channels: mean over the channels, area-resized to 8 x 8.
    big = images.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2).expand(-1, 3, -1, -1)
    assert torch.allclose(dc.to_digit_images(big), images)
    with_nan = torch.cat([images[a], torch.full((3, 1, 8, 8), float("nan"))])
    assert dc.frechet_digits(with_nan, images[b]) == pytest.approx(real_vs_real)


def test_classifier_disk_cache(tmp_path, monkeypatch):
    model = dc.classifier()
    monkeypatch.setattr(dc, "_cached_accuracy", dc._cached_accuracy)     # restored after the test
    monkeypatch.setattr(dc, "_cached", None)
    monkeypatch.setattr(dc, "train_classifier", lambda seed=dc.SEED: (model, 0.97))
    assert dc.classifier(tmp_path) is model and (tmp_path / dc.CACHE_NAME).is_file()
    monkeypatch.setattr(dc, "_cached", None)
    monkeypatch.setattr(dc, "train_classifier", lambda seed=dc.SEED: pytest.fail("should load the cache"))
    loaded = dc.classifier(tmp_path)
    assert loaded is not model and dc.test_accuracy() == 0.97
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_frechet_evaluator(digits):
    images, _ = digits
    first, second = M.split_halves(len(images), seed=1)      # the file's order is by writer: shuffle
    valid, rest = images[first], images[second]
    noise = torch.rand(800, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    ev = Frechet(n=800)
    assert ev.metrics == ("frechet",)
    good = ev(context(valid=valid, generate=lambda n: rest[:n]))
    bad = ev(context(valid=valid, generate=lambda n: noise[:n]))
    assert good["frechet_floor"] == pytest.approx(dc.frechet_floor(valid, 0)) == bad["frechet_floor"]
    assert good["frechet"] == pytest.approx(dc.frechet_digits(rest[:800], valid))
    assert good["frechet"] < 2 * good["frechet_floor"] and bad["frechet"] > 20 * good["frechet_floor"]
