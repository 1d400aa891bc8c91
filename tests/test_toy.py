"""The two-atom toy problem: analytic score, process, network, regularizers, train.py and eval.py.

Numbers are checked against analytic answers: finite differences of log p, the
Rayleigh law and the 1/2 mode balance of exact samples, the Fokker-Planck and
consistency identities of the exact score, the uniformity of the wrapped prior.
"""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scipy import stats

from model_code import build, config
from model_code import regularizers as reg
from model_code import toy_analysis as ta
from model_code.data.sources import Batch
from model_code.data.toy import TwoAtomData, mode_balance, nearest_mode, torus_delta, wrap
from model_code.errors import UserError
from model_code.nets.mlp import PermutationEquivariantMLP
from model_code.processes.wrapped_ve import (SigmaSchedule, WrappedVE, generate, reverse_sde_step,
                                             uniform_deviation_bound, wrapped_gaussian)
from model_code.toy_score import AnalyticScore, score_error

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "configs" / "toy" / "base_config.yaml"
EXPERIMENTS = ["none", "analytic_regression", "fokker_planck", "consistency", "consistency_analytic"]
SIGMA_D, SIGMA_MIN, SIGMA_MAX = 0.05, 0.005, 1.0

torch.set_num_threads(1)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def analytic():
    return AnalyticScore((0.25, 0.75), SIGMA_D)


@pytest.fixture(scope="module")
def schedule():
    return SigmaSchedule("geometric", SIGMA_MIN, SIGMA_MAX)


# --------------------------------------------------------------------------- analytic score

@pytest.mark.parametrize("sigma", [0.005, 0.05, 0.2, 1.0])
def test_analytic_score_matches_finite_differences_of_log_p(analytic, sigma):
    x = torch.rand(300, 2, generator=gen(1), dtype=torch.float64)
    s = torch.full((300,), sigma, dtype=torch.float64)
    h = 1e-6
    eye = torch.eye(2, dtype=torch.float64)
    fd = torch.stack([(analytic.log_prob(x + h * eye[i], s) - analytic.log_prob(x - h * eye[i], s)) / (2 * h)
                      for i in range(2)], dim=1)
    score = analytic(x, s)
    scale = score.abs().max().clamp_min(1.0)
    assert torch.allclose(fd, score, atol=1e-6 * float(scale), rtol=1e-5)


@pytest.mark.parametrize("sigma", [0.0, 0.02, 0.3])
def test_analytic_density_is_normalised_and_symmetric(analytic, sigma):
    n = 300
    g = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    x = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    p = analytic.log_prob(x, torch.full((len(x),), sigma, dtype=torch.float64)).exp()
    assert abs(float(p.mean()) - 1.0) < 1e-6            # midpoint rule on a smooth periodic density
    s = torch.full((len(x),), sigma, dtype=torch.float64)
    swapped = analytic(x.flip(1), s)
    assert torch.allclose(swapped, analytic(x, s).flip(1), atol=1e-9)   # equivariant under swapping atoms


def test_wrapped_gaussian_is_periodic_and_matches_gaussian_when_narrow():
    d = torch.linspace(-0.4, 0.4, 41, dtype=torch.float64)
    log_k, score = wrapped_gaussian(d, 0.01 ** 2)
    assert torch.allclose(score, -d / 0.01 ** 2, rtol=1e-10)
    log_k2, score2 = wrapped_gaussian(d + 3.0, 0.3 ** 2)
    log_k3, score3 = wrapped_gaussian(d, 0.3 ** 2)
    assert torch.allclose(log_k2, log_k3, atol=1e-12) and torch.allclose(score2, score3, atol=1e-10)


# --------------------------------------------------------------------------- data and prior

def test_data_are_wrapped_symmetric_and_sigma_d_wide():
    data = TwoAtomData((0.25, 0.75), SIGMA_D)
    x = data.sample(20000, gen(2), dtype=torch.float64)
    assert float(x.min()) >= 0 and float(x.max()) < 1
    f, se = mode_balance(x, data.modes())
    assert abs(f - 0.5) < 4 * se
    idx, _ = nearest_mode(x, data.modes())
    d = torus_delta(x, data.modes()[idx])
    assert abs(float(d.std()) - SIGMA_D) < 0.002
    fresh = data.sample(5, gen(3))
    assert not torch.equal(fresh, data.sample(5, gen(4)))


def test_wrapped_prior_is_uniform_within_1e3(analytic):
    dev_bound = uniform_deviation_bound(math.sqrt(SIGMA_D ** 2 + SIGMA_MAX ** 2), 2)
    assert dev_bound < 1e-3
    n = 120
    g = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    x = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    for sigma in (SIGMA_MAX, 0.3):          # the bound holds where it is loose too
        p = analytic.log_prob(x, torch.full((len(x),), sigma, dtype=torch.float64)).exp()
        bound = uniform_deviation_bound(math.sqrt(SIGMA_D ** 2 + sigma ** 2), 2)
        assert float((p - 1).abs().max()) <= bound
    p1 = analytic.log_prob(x, torch.full((len(x),), SIGMA_MAX, dtype=torch.float64)).exp()
    assert float((p1 - 1).abs().max()) < 1e-3
    # the published sigma_max = 0.2 is far from uniform (first Fourier coefficient ~0.45)
    assert uniform_deviation_bound(math.sqrt(SIGMA_D ** 2 + 0.2 ** 2), 2) > 0.5


def test_exact_prior_is_data_plus_wrapped_noise():
    data = TwoAtomData((0.25, 0.75), SIGMA_D)
    proc = WrappedVE(SigmaSchedule("geometric", SIGMA_MIN, 0.2), prior="exact")
    x = proc.sample_prior(20000, 2, gen(5), data=data)
    # x2 - x1 = +-1/2 + N(0, 2v), v = sigma_d^2 + 0.2^2: E cos(2 pi (x2 - x1)) = -exp(-4 pi^2 v)
    v = SIGMA_D ** 2 + 0.2 ** 2
    m = float(torch.cos(2 * math.pi * (x[:, 1] - x[:, 0])).mean())
    assert abs(m + math.exp(-4 * math.pi ** 2 * v)) < 0.02
    # a uniform prior would give 0: the test tells the two apart
    u = WrappedVE(SigmaSchedule("geometric", SIGMA_MIN, 0.2), prior="uniform").sample_prior(20000, 2, gen(6))
    assert abs(float(torch.cos(2 * math.pi * (u[:, 1] - u[:, 0])).mean())) < 0.03


# --------------------------------------------------------------------------- sampling with the analytic score

def test_analytic_samples_balance_and_rayleigh(analytic):
    data = TwoAtomData((0.25, 0.75), SIGMA_D)
    proc = WrappedVE(SigmaSchedule("geometric", SIGMA_MIN, SIGMA_MAX), prior="uniform")
    n = 3000
    x = generate(analytic, proc, n, 2, gen(6), sampler="euler_maruyama", n_steps=300)
    f, se = mode_balance(x, data.modes())
    assert abs(f - 0.5) < 3.5 * 0.5 / math.sqrt(n)
    _, r = nearest_mode(x, data.modes())
    ks = stats.kstest(r.numpy(), "rayleigh", args=(0.0, math.sqrt(SIGMA_D ** 2 + SIGMA_MIN ** 2)))
    assert ks.pvalue > 0.01, ks
    # a wrong width is rejected by the same test (the test has power)
    assert stats.kstest(r.numpy(), "rayleigh", args=(0.0, 1.15 * SIGMA_D)).pvalue < 1e-3


def test_analytic_samples_probability_flow_ode(analytic):
    data = TwoAtomData((0.25, 0.75), SIGMA_D)
    proc = WrappedVE(SigmaSchedule("geometric", SIGMA_MIN, SIGMA_MAX), prior="exact")
    x = generate(analytic, proc, 1500, 2, gen(7), sampler="heun_ode", n_steps=60, data=data)
    _, r = nearest_mode(x, data.modes())
    assert stats.kstest(r.numpy(), "rayleigh", args=(0.0, SIGMA_D)).pvalue > 0.01


# --------------------------------------------------------------------------- network

def test_mlp_is_permutation_equivariant_and_periodic():
    torch.manual_seed(0)
    net = PermutationEquivariantMLP(n_frequencies=3, hidden=32, depth=2, noise_dim=8)
    x = torch.rand(64, 2, generator=gen(8))
    sigma = torch.exp(torch.empty(64).uniform_(-5, 0, generator=gen(9)))
    out = net(x, sigma)
    assert out.shape == (64, 2)
    # Permuted inputs reach the float32 matmuls in other rows / summation orders: round-off ~ eps_32 times
    # the output scale (~12 here), BLAS-dependent; a non-equivariant net is off by O(that scale).
    scale = float(out.detach().abs().max())
    assert torch.allclose(net(x.flip(1), sigma), out.flip(1), atol=1e-4 * scale)
    assert torch.allclose(net(x + 1.0, sigma), out, atol=1e-3 * scale)
    three = torch.rand(5, 3, generator=gen(10))
    perm = [2, 0, 1]
    out3 = net(three, sigma[:5])
    assert torch.allclose(net(three[:, perm], sigma[:5]), out3[:, perm], atol=1e-4 * float(out3.detach().abs().max()))


# --------------------------------------------------------------------------- regularizers

class GaussianScore(torch.nn.Module):
    """s = -x / (a + c sigma^2): the exact 1-D Gaussian score for c = 1."""

    def __init__(self, a, c):
        super().__init__()
        self.a, self.c = a, c

    def forward(self, x, sigma):
        return -x / (self.a + self.c * sigma[:, None] ** 2)


def test_fokker_planck_residual_known_answers():
    x = torch.linspace(-1, 1, 11, dtype=torch.float64)[:, None]
    sigma = torch.full((11,), 0.3, dtype=torch.float64)
    r = reg.fokker_planck_residual(GaussianScore(0.2, 1.0), x, sigma)
    assert float(r.detach().abs().max()) < 1e-12
    # s = -x / (a + 2 tau): d_tau s = 2x/(a+2tau)^2, grad(div s + s^2)/2 = x/(a+2tau)^2
    r = reg.fokker_planck_residual(GaussianScore(0.2, 2.0), x, sigma)
    assert torch.allclose(r, x / (0.2 + 2 * 0.09) ** 2, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.005, 0.05, 0.3])
def test_fokker_planck_residual_of_analytic_score_vanishes(analytic, sigma):
    x = torch.rand(50, 2, generator=gen(11), dtype=torch.float64)
    s = torch.full((50,), sigma, dtype=torch.float64)
    exact = reg.fokker_planck_residual(analytic, x, s, "exact")
    assert float((sigma ** 3 * exact).detach().abs().max()) < 1e-9
    # Hutchinson is exact in expectation: the mean over all four Rademacher probes is the exact residual
    probes = [torch.tensor([a, b], dtype=torch.float64).expand(50, 2) for a in (-1, 1) for b in (-1, 1)]
    hutch = torch.stack([reg.fokker_planck_residual(analytic, x, s, "hutchinson", probe=v) for v in probes]).mean(0)
    assert torch.allclose(sigma ** 3 * hutch, sigma ** 3 * exact, atol=1e-9)


def test_hutchinson_agrees_with_exact_for_a_network_in_expectation():
    torch.manual_seed(1)
    net = PermutationEquivariantMLP(n_frequencies=2, hidden=16, depth=2, noise_dim=8).double()
    x = torch.rand(8, 2, generator=gen(12), dtype=torch.float64)
    s = torch.full((8,), 0.1, dtype=torch.float64)
    exact = reg.fokker_planck_residual(net, x, s, "exact")
    probes = [torch.tensor([a, b], dtype=torch.float64).expand(8, 2) for a in (-1, 1) for b in (-1, 1)]
    mean = torch.stack([reg.fokker_planck_residual(net, x, s, "hutchinson", probe=v) for v in probes]).mean(0)
    assert torch.allclose(mean, exact, rtol=1e-4, atol=1e-4 * float(exact.detach().abs().max()))
    one = reg.fokker_planck_residual(net, x, s, "hutchinson", generator=gen(13))
    assert not torch.allclose(one, exact)            # a single probe is noisy, only its mean is exact


def test_consistency_identity_of_analytic_score(analytic, schedule):
    """s*(x, sigma_t) = E[s*(X_t', sigma_t') | X_t = x] with X_t' from the exact reverse SDE."""
    x = torch.tensor([[0.3, 0.6], [0.2, 0.8]], dtype=torch.float64)
    t = torch.full((2,), 0.5, dtype=torch.float64)
    m, n_steps, g = 3000, 10, gen(14)
    xr, tr = x.repeat_interleave(m, 0), t.repeat_interleave(m)
    te = tr - 0.1
    for k in range(n_steps):
        ta, tb = tr + (te - tr) * k / n_steps, tr + (te - tr) * (k + 1) / n_steps
        z = torch.randn(xr.shape, generator=g, dtype=torch.float64)
        xr = reverse_sde_step(analytic, xr, schedule.sigma(ta), schedule.sigma(tb), z)
    later = analytic(wrap(xr), schedule.sigma(te)).view(2, m, 2)
    se = later.std(1) / math.sqrt(m)
    diff = later.mean(1) - analytic(x, schedule.sigma(t))
    assert bool((diff.abs() < 4 * se + 0.02 * analytic(x, schedule.sigma(t)).abs()).all()), (diff, se)


def _toy_parts(*overrides):
    cfg = config.load([BASE], ["net.hidden=16", "net.depth=2", *overrides])
    torch.manual_seed(0)
    return cfg, build.build_parts(cfg, None, "cpu")


@pytest.mark.parametrize("kind", EXPERIMENTS[1:])
def test_regularizers_give_finite_losses_and_gradients(kind):
    cfg, parts = _toy_parts(f"regularizer.kind={kind}", "regularizer.n_points=8", "regularizer.weight=0.5",
                            "regularizer.burn_in=3")
    process, model = parts.process, parts.model
    assert isinstance(process, reg.Regularized) and process.kind == kind and process.name == "wrapped_ve"
    batch = Batch(TwoAtomData((0.25, 0.75), SIGMA_D).sample(16, gen(15)))
    draw = process.loss(model, batch, gen(16), step=3)
    assert set(draw.terms) == {"dsm", "regularizer", "total"}
    assert draw.terms["total"] == pytest.approx(draw.terms["dsm"] + 0.5 * draw.terms["regularizer"], rel=1e-6)
    assert float(draw.loss.detach()) == pytest.approx(draw.terms["total"], rel=1e-6)
    draw.loss.backward()
    assert all(math.isfinite(v) for v in draw.terms.values())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    # before the burn-in the loss is plain DSM, with the same draws of t and z
    early = process.loss(model, batch, gen(16), step=2)
    assert early.terms["regularizer"] == 0.0 and early.terms["dsm"] == pytest.approx(draw.terms["dsm"], rel=1e-6)
    # the inner process alone gives the same DSM loss
    assert process.process.loss(model, batch, gen(16)).terms["dsm"] == pytest.approx(draw.terms["dsm"], rel=1e-6)


@pytest.mark.parametrize("kind", EXPERIMENTS)
def test_shard_losses_weighted_by_size_add_up_to_the_batch_loss(kind):
    """Every random number is drawn for the whole batch: sum_s (|s| / B) loss(s) = loss(batch) (2 ranks' view)."""
    cfg, parts = _toy_parts(f"regularizer.kind={kind}", "regularizer.n_points=6", "regularizer.laplacian=hutchinson")
    model = parts.model.double()
    batch = Batch(TwoAtomData((0.25, 0.75), SIGMA_D).sample(10, gen(22), dtype=torch.float64))
    whole = float(parts.process.loss(model, batch, gen(23)).loss.detach())
    shards = [slice(0, 3), slice(3, 10)]
    parts_sum = sum(float(parts.process.loss(model, batch, gen(23), shard=s).loss.detach()) * (s.stop - s.start)
                    for s in shards) / 10
    assert parts_sum == pytest.approx(whole, rel=1e-9, abs=1e-12)


def test_analytic_regression_and_score_error_are_zero_for_the_exact_score(analytic, schedule):
    data = TwoAtomData((0.25, 0.75), SIGMA_D)
    x = torch.rand(32, 2, generator=gen(19), dtype=torch.float64)
    s = torch.full((32,), 0.1, dtype=torch.float64)
    assert float(reg.analytic_regression(analytic, analytic, x, s)) == 0.0
    rows = score_error(analytic, analytic, data, schedule, [0.0, 0.5], 100, gen(20))
    assert all(r["weighted"] == 0.0 and r["reference"] > 0 for r in rows)


# --------------------------------------------------------------------------- configuration and entry points

def test_config_errors_are_user_errors():
    with pytest.raises(UserError, match="no_such_key"):
        config.load([BASE], ["train.no_such_key=1"])
    with pytest.raises(UserError, match="prior"):
        config.load([BASE], ["process.sigma_max=0.2"])
    cfg = config.load([BASE], ["process.sigma_max=0.2", "process.prior=exact"])
    assert cfg.process.wrapped_ve.prior == "exact"
    with pytest.raises(UserError, match="regularizer.kind"):
        config.load([BASE], ["regularizer.kind=magic"])
    with pytest.raises(UserError, match="not found"):
        config.load([REPO / "configs" / "toy" / "nope.yaml"])
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA"):
            build.resolve_device(config.load([BASE], ["train.device=cuda"]).train.device)


def test_every_experiment_config_loads_and_sets_its_regularizer():
    for name in EXPERIMENTS:
        cfg = config.load([BASE, REPO / "configs" / "toy" / name / "specific_config.yaml"])
        assert cfg.objective.regularizer.kind == name
        assert (cfg.data.dataset, cfg.process.type, cfg.net.type) == ("two_atoms", "wrapped_ve", "mlp")
        run_sh = REPO / "configs" / "toy" / name / "run.sh"
        assert os.access(run_sh, os.X_OK)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("WORKDIR", None)
    return env


TRAIN_ARGS = ["--config", str(BASE), "--config", str(REPO / "configs" / "toy" / "none" / "specific_config.yaml"),
              "--quiet", "train.steps=400", "train.log_every=50", "train.figure_every=400",
              "train.checkpoint_every=200"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A 400-step run of the 'none' experiment through train.py (in this process: no second start-up)."""
    import train

    work = tmp_path_factory.mktemp("toy") / "run"
    assert train.main([*TRAIN_ARGS, "--workdir", str(work)]) == 0
    torch.set_num_threads(1)
    return work


def test_train_py_writes_files_lowers_loss_and_resumes(toy_run, capsys):
    import json

    import train

    work = toy_run
    for name in ("config.json", "provenance.json", "model.pt", "model.score_error.pt", "results.json"):
        assert (work / name).is_file(), name
    assert any((work / "tb").glob("events.out.tfevents.*")) and (work / "samples" / "400.png").is_file()
    lines = [json.loads(ln) for ln in (work / "results.json").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == list(range(50, 401, 50))
    assert all(ln["loss"] == ln["dsm"] for ln in lines)                  # no regularizer
    assert lines[-1]["dsm"] < lines[0]["dsm"] - 0.05        # the DSM floor is ~1, so the excess drops
    assert "score_error" in lines[-1] and "score_error" not in lines[0]
    run = build.load_run(work, "model.pt", "cpu")
    assert run.cfg.train.steps == 400 and isinstance(run.model, PermutationEquivariantMLP)
    assert run.state["step"] == 400 and run.kind == "atoms" and run.shape == (2,)
    assert config.from_dict(json.loads((work / "config.json").read_text())) == run.cfg
    untrained = build.build_parts(run.cfg, None, "cpu").net          # the same initial weights (same seed)
    data, analytic, schedule = ta.toy_parts(run.cfg)
    ts = [0.0, 0.2, 0.4, 0.6, 0.8]        # the excess DSM loss, integrated over t (crudely)
    before = sum(r["weighted"] for r in score_error(ta.as_score(untrained), analytic, data, schedule, ts, 500,
                                                    gen(21)))
    after = sum(r["weighted"] for r in score_error(ta.as_score(run.model), analytic, data, schedule, ts, 500,
                                                   gen(21)))
    assert after < 0.6 * before
    # same config again: resumes at the end, nothing duplicated
    capsys.readouterr()
    assert train.main([*TRAIN_ARGS, "--workdir", str(work)]) == 0
    assert "resuming" in capsys.readouterr().err
    assert len((work / "results.json").read_text().splitlines()) == len(lines)
    # a different config in the same folder is refused, nothing overwritten
    with pytest.raises(UserError, match=r"different config \(differs in: optim\.lr\)"):
        train.main([*TRAIN_ARGS, "--workdir", str(work), "train.lr=0.5"])
    assert build.load_run(work, "model.pt", "cpu").cfg.optim.lr == 1e-3


def test_eval_py_score_mode_measures_the_run_against_the_analytic_score(toy_run, tmp_path):
    import json

    import numpy as np

    out = subprocess.run([sys.executable, str(REPO / "eval.py"), "--exp_name", str(toy_run), "--mode", "score",
                          "--Ntest", "300", "--steps", "50", "--savedir", str(tmp_path), "--quiet"],
                         capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "score-latest-reverse_sde-steps50"
    summary = json.loads((folder / "metrics.json").read_text())
    m = summary["metrics"]
    assert summary["step"] == 400 and summary["n"] == 300 and m["n_samples"] == 300
    # the law the reverse SDE ends in: data widened by sigma_min
    assert m["rayleigh_scale"] == pytest.approx(math.sqrt(SIGMA_D ** 2 + SIGMA_MIN ** 2), rel=1e-12)
    assert 0 <= m["mode_balance"] <= 1 and m["mode_balance_se"] == pytest.approx(
        math.sqrt(m["mode_balance"] * (1 - m["mode_balance"]) / 300), rel=1e-6)
    per_t = summary["score_error_per_t"]
    assert [r["t"] for r in per_t] == pytest.approx(list(np.linspace(0, 1, 21)))
    assert m["score_error_mean"] == pytest.approx(np.mean([r["weighted"] for r in per_t]), rel=1e-9)
    assert m["relative_error_overall"] == pytest.approx(
        sum(r["weighted"] for r in per_t) / sum(r["reference"] for r in per_t), rel=1e-9)
    # the zero score's error at t = 0, two separated Gaussians: E sigma^2 |s*|^2 = 2 sigma^2 / (sigma_d^2 + sigma^2)
    assert per_t[0]["reference"] == pytest.approx(2 * SIGMA_MIN ** 2 / (SIGMA_D ** 2 + SIGMA_MIN ** 2), rel=0.1)
    samples = np.load(folder / "samples.npz")["samples"]
    assert samples.shape == (300, 2) and samples.min() >= 0 and samples.max() < 1
    # the same evaluation again is refused without --overwrite; a mode of another system is refused
    import eval as eval_py

    with pytest.raises(UserError, match="overwrite"):
        eval_py.main(["--exp_name", str(toy_run), "--mode", "score", "--Ntest", "300", "--steps", "50",
                      "--savedir", str(tmp_path), "--quiet"])
    with pytest.raises(UserError, match=r"--mode generate does not apply .* use --mode score"):
        eval_py.main(["--exp_name", str(toy_run), "--mode", "generate", "--savedir", str(tmp_path), "--quiet"])


def test_run_sh_trains_from_any_directory(tmp_path):
    import json

    work = tmp_path / "fp"
    env = dict(_env(), WORKDIR=str(work))
    out = subprocess.run([str(REPO / "configs" / "toy" / "fokker_planck" / "run.sh"), "train.steps=20",
                          "train.log_every=10", "train.figure_every=20", "regularizer.burn_in=10",
                          "regularizer.laplacian=hutchinson", "regularizer.weight=0.5", "net.hidden=32", "--quiet"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (work / "model.pt").is_file()
    saved = json.loads((work / "config.json").read_text())
    assert saved["objective"]["regularizer"]["kind"] == "fokker_planck"
    assert saved["objective"]["regularizer"]["laplacian"] == "hutchinson"
    first, last = [json.loads(ln) for ln in (work / "results.json").read_text().splitlines()]
    assert first["regularizer"] == 0.0 and first["total"] == pytest.approx(first["dsm"])     # burn-in
    assert math.isfinite(last["regularizer"]) and last["regularizer"] > 0
    # per step total = dsm + weight * regularizer, so the same holds for the logged means
    assert last["total"] == pytest.approx(last["dsm"] + 0.5 * last["regularizer"], rel=1e-6)
    assert last["loss"] == pytest.approx(last["total"], rel=1e-6)


def test_analyse_toy_help_explains_every_flag():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "analyse_toy.py"), "--help"],
                         capture_output=True, text=True, env=_env(), timeout=60)
    assert out.returncode == 0
    for flag in ("--runs-dir", "--experiments", "--base-config", "--out", "--n-samples", "--sampler",
                 "--n-steps", "--n-times", "--n-error", "--gif-frames", "--grid", "--no-ema", "--seed", "--threads",
                 "--frames", "--no-gif", "--snr", "--corrector-steps", "--marginal-bins", "predictor_corrector"):
        assert flag in out.stdout
    text = " ".join(out.stdout.split())
    assert "(default: generated_artifacts)" in text and "score_field.mp4" in text and "marginal.png" in text


@pytest.mark.slow
def test_analyse_toy_end_to_end(tmp_path):
    runs = tmp_path / "runs"
    env = dict(_env(), WORKDIR=str(runs / "none"))
    subprocess.run([str(REPO / "configs" / "toy" / "none" / "run.sh"), "train.steps=50", "train.figure_every=50",
                    "--quiet"], check=True, capture_output=True, env=env, timeout=120)
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "analyse_toy.py"), "--runs-dir", str(runs),
                          "--out", str(tmp_path / "out"), "--experiments", "analytical", "none", "consistency",
                          "--n-samples", "600", "--n-steps", "100", "--n-times", "3", "--n-error", "200",
                          "--gif-frames", "2", "--grid", "7"],
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    assert "skipping consistency" in out.stderr
    import json
    res = {r["name"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())}
    assert res["analytical"]["score_error_mean"] == 0.0
    assert abs(res["analytical"]["mode_balance"] - 0.5) < 4 * 0.5 / math.sqrt(600)
    assert res["analytical"]["ks_pvalue"] > 0.001
    assert res["none"]["score_error_mean"] > 0
    for f in ("table.org", "score_error.png", "analytical/samples.png", "analytical/radial.png",
              "analytical/marginal.png", "none/samples.npz", "none/score_field.gif", "none/score_field.mp4"):
        assert (tmp_path / "out" / f).is_file(), f


def test_predictor_corrector_with_the_analytic_score_draws_the_data_law():
    """Reverse-SDE predictor + Langevin corrector (samplers.predictor_corrector on the torus) with the exact
    score: the lower / upper atom ~ N(0.25 / 0.75, s^2), s^2 = sigma_d^2 + sigma_min^2 (no final denoising),
    and each ordering half of the time, all within 4 standard errors of n samples."""
    cfg = config.load([str(BASE)], [])
    process, exact = ta.exact_model(cfg)
    n = 1500
    x = ta.pc_samples(process, exact, range(n), 2, n_steps=150).double()
    assert x.shape == (n, 2) and ((x >= 0) & (x < 1)).all()
    lo, hi = x.min(1).values, x.max(1).values
    var = SIGMA_D ** 2 + SIGMA_MIN ** 2
    for atoms, mu in ((lo, 0.25), (hi, 0.75)):
        assert abs(float(atoms.mean()) - mu) < 4 * math.sqrt(var / n)
        assert abs(float(atoms.var()) - var) < 4 * var * math.sqrt(2 / (n - 1))
    balance, se = mode_balance(x, TwoAtomData().modes())
    assert abs(balance - 0.5) < 4 * 0.5 / math.sqrt(n)
    # sample k is seed k's whatever the batch, and the corrector really moves the samples
    assert torch.equal(ta.pc_samples(process, exact, [7, 3], 2, n_steps=150).double(), x[[7, 3]])
    em = process.sample(exact, [7, 3], (2,), "cpu", n_steps=150)
    assert not torch.allclose(em.double(), x[[7, 3]])
    none = ta.pc_samples(process, exact, [7, 3], 2, n_steps=150, corrector_steps=0)
    assert torch.allclose(none, em, atol=1e-6)        # no corrector steps: the reverse SDE itself


def test_atom_marginal_is_a_density_and_the_histogram_matches_it():
    y = (torch.arange(20000, dtype=torch.float64) + 0.5) / 20000
    for var in (0.05 ** 2, 0.05 ** 2 + 0.2 ** 2, 1.0):
        p = ta.atom_marginal(y.numpy(), (0.25, 0.75), var)
        assert (p > 0).all() and abs(p.mean() - 1) < 1e-9             # the midpoint rule on [0, 1)
    assert abs(ta.atom_marginal([0.25], (0.25, 0.75), 1e-4)[0] - 0.5 / math.sqrt(2 * math.pi * 1e-4)) < 1e-6
    data = TwoAtomData()
    exact = data.sample(3000, gen(4), dtype=torch.float64)
    got = ta.marginal_analysis(exact, data, 0.0, bins=50)
    assert got["marginal_tv"] < 1.5 * got["marginal_tv_expected"]
    shifted = ta.marginal_analysis(wrap(exact + 0.03), data, 0.0, bins=50)
    assert shifted["marginal_tv"] > 3 * got["marginal_tv_expected"]


def test_analyse_toy_predictor_corrector_writes_the_seeds_artifacts(tmp_path):
    import json

    import numpy as np

    out = subprocess.run([sys.executable, str(REPO / "scripts" / "analyse_toy.py"), "--out", str(tmp_path),
                          "--experiments", "analytical", "--sampler", "predictor_corrector", "--n-samples", "400",
                          "--n-steps", "60", "--n-times", "2", "--n-error", "50", "--frames", "3", "--grid", "5",
                          "--batch", "150"], capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    d = tmp_path / "analytical"
    for f in ("samples.png", "radial.png", "marginal.png", "score_field.mp4", "score_field.gif"):
        assert (d / f).is_file(), f
    saved = np.load(d / "samples.npz")
    assert saved["samples"].shape == (400, 2) and list(saved["seeds"]) == list(range(400))
    assert str(saved["sampler"]) == "predictor_corrector" and float(saved["sigma_end"]) == SIGMA_MIN
    res = json.loads((tmp_path / "results.json").read_text())[0]
    assert res["sampler"] == "predictor_corrector" and res["corrector_steps"] == 1
    assert res["marginal_tv"] < 2 * res["marginal_tv_expected"]
    from model_code.video import read_mp4

    assert len(read_mp4(d / "score_field.mp4")) == 3
