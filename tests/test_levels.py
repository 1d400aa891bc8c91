"""Level processes (model_code/processes/levels.py): prior, loss, discretised likelihood, ELBO, sampling modes."""
import math

import pytest
import torch
from torch import nn

from model_code.processes.levels import (GaussianPrior, LevelModel, elbo_summary, initial_and_noise,
                                         log_discretised_gaussian, negative_elbo_terms, sample_levels, slerp,
                                         training_loss)
from model_code.processes.heat import dct_matrix
from model_code.processes.linear import build_map

SHAPE = (1, 4, 4)
D = 16


class Zero(nn.Module):
    """F = 0, so mu(x, k) = x."""

    def forward(self, x, k):
        return torch.zeros_like(x)


def _data(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 1, 1, generator=g)
    return (base + 0.2 * torch.rand(n, *SHAPE, generator=g)).double()


@pytest.mark.parametrize("kind", ["full", "dct_diag"])
def test_prior_kl_matches_the_closed_form(kind):
    u = _data()
    sigma = 0.05
    prior = GaussianPrior.fit(u, sigma, kind)
    if kind == "full":
        cov = prior.factor @ prior.factor.T
        mean = prior.mean
    else:
        c = torch.kron(dct_matrix(4), dct_matrix(4))           # flattened 2-D DCT
        cov = c.T @ torch.diag(prior.factor ** 2) @ c
        mean = c.T @ prior.mean
    p = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    a = u[:5]
    for i in range(5):
        q = torch.distributions.MultivariateNormal(a[i].reshape(-1), covariance_matrix=sigma ** 2 * torch.eye(D,
                                                                                           dtype=torch.float64))
        assert math.isclose(prior.kl_from(a[i:i + 1], sigma).item(), torch.distributions.kl_divergence(q, p).item(),
                            rel_tol=1e-8)
    # The full prior is the fitted Gaussian: Sigma = Cov + sigma^2 I.
    if kind == "full":
        emp = torch.cov(u.reshape(len(u), -1).T)
        assert torch.allclose(cov, emp + sigma ** 2 * torch.eye(D, dtype=torch.float64), atol=1e-10)


@pytest.mark.parametrize("kind", ["full", "dct_diag"])
def test_prior_samples_have_the_fitted_moments(kind):
    u = _data(2000)
    prior = GaussianPrior.fit(u, 0.05, kind)
    z = torch.randn(40000, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = prior.from_white(z).double().reshape(len(z), -1)
    target = u.reshape(len(u), -1)
    assert torch.allclose(x.mean(0), target.mean(0), atol=0.01)
    if kind == "full":
        assert torch.allclose(torch.cov(x.T), torch.cov(target.T) + 0.05 ** 2 * torch.eye(D, dtype=torch.float64),
                              atol=0.01)
    state = GaussianPrior.from_state(prior.state_dict())
    assert torch.equal(state.from_white(z[:3]), prior.from_white(z[:3]))


def test_discretised_gaussian_is_a_distribution_over_the_bins():
    levels = 17
    grid = torch.arange(levels, dtype=torch.float64) / (levels - 1)
    for mean, std in ((0.3, 0.0125), (0.0, 0.2), (1.0, 0.05), (0.52, 1e-3), (5.0, 0.1)):
        logp = log_discretised_gaussian(grid, torch.full_like(grid, mean), std, levels)
        assert math.isclose(logp.exp().sum().item(), 1.0, abs_tol=1e-9), (mean, std)
    # A middle bin against Phi directly.
    n = torch.distributions.Normal(0.5, 0.05)
    x = torch.tensor([0.5], dtype=torch.float64)
    expected = math.log(n.cdf(torch.tensor(0.5 + 1 / 32)) - n.cdf(torch.tensor(0.5 - 1 / 32)))
    assert math.isclose(log_discretised_gaussian(x, x, 0.05, 17).item(), expected, rel_tol=1e-6)
    # Far in the tail it stays finite.
    assert torch.isfinite(log_discretised_gaussian(x, x + 0.9, 1e-3, 17)).all()


def test_training_loss_target_is_not_the_input():
    # Identity map, F = 0: mu(x, k) - u_{k-1} = sigma eps, so the loss is sigma^2 on average.
    u = _data(4000).float()
    model = LevelModel(Zero())
    loss = training_loss(model, build_map("identity", SHAPE, 5), u, 0.1, torch.Generator().manual_seed(0))
    assert math.isclose(loss.item(), 0.01, rel_tol=0.02)
    # constant velocity: target T(k-1) u_0 differs from T(k) u_0 by u_0 / K, so the loss is larger.
    cv = build_map("constant_velocity", SHAPE, 5)
    loss = training_loss(model, cv, u, 0.1, torch.Generator().manual_seed(0))
    assert math.isclose(loss.item(), 0.01 + (u ** 2).mean().item() / 25, rel_tol=0.03)


def test_elbo_terms_of_a_known_model():
    # Identity map, mu(x) = x: E L_k = D sigma^2/delta^2 - D/2 + D log(delta/sigma) for 1 <= k < K.
    K, sigma, delta = 4, 0.02, 0.03
    u = _data(3000).float()
    fmap = build_map("identity", SHAPE, K)
    prior = GaussianPrior.fit(u.double(), sigma, "full")
    terms = negative_elbo_terms(LevelModel(Zero()), fmap, prior, u, sigma, delta, 256,
                                torch.Generator().manual_seed(0))
    expected = D * sigma ** 2 / delta ** 2 - D / 2 + D * math.log(delta / sigma)
    for k in range(1, K):
        assert math.isclose(terms[:, k].mean().item(), expected, rel_tol=0.02)
    assert torch.allclose(terms[:, K], prior.kl_from(u, sigma))
    summary = elbo_summary(terms, D)
    assert math.isclose(summary["bpd"], terms.sum(1).mean().item() / (D * math.log(2)), rel_tol=1e-9)
    assert len(summary["per_level_bpd"]) == K + 1
    assert math.isclose(sum(summary["per_level_bpd"]), summary["bpd"], rel_tol=1e-9)


def test_sampling_modes():
    prior = GaussianPrior.fit(_data(), 0.05, "full")
    K = 3
    u_K, noise = initial_and_noise("random", prior, K, [0, 1, 2])
    alone, noise_alone = initial_and_noise("random", prior, K, [2])
    assert torch.equal(u_K[2], alone[0]) and torch.equal(noise[2], noise_alone[0])     # batch-independent
    same, n_same = initial_and_noise("same_init", prior, K, [0, 1, 2])
    assert torch.equal(same[1], same[0]) and torch.equal(same[0], u_K[0]) and not torch.equal(n_same[0], n_same[1])
    share, n_share = initial_and_noise("share_noise", prior, K, [0, 1, 2])
    assert not torch.equal(share[0], share[1]) and torch.equal(n_share[0], n_share[2])
    interp, n_interp = initial_and_noise("interpolate", prior, K, [0, 1], num_points=5)
    assert interp.shape[0] == 5 and torch.allclose(interp[0], u_K[0]) and torch.allclose(interp[-1], u_K[1], atol=1e-6)
    assert torch.equal(n_interp[0], n_interp[4])
    z = slerp(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 3)
    assert torch.allclose(z.norm(dim=1), torch.ones(3))


def test_sampler_follows_the_update_rule():
    # mu(x, k) = x: u_0 = u_K + delta * (noise of steps K..2); the last step adds no noise.
    K, delta = 4, 0.1
    u_K = torch.randn(2, *SHAPE)
    noise = torch.randn(2, K, *SHAPE)
    u0, traj = sample_levels(LevelModel(Zero()), u_K, noise, delta, K, keep_trajectory=True)
    assert torch.allclose(u0, u_K + delta * noise[:, :K - 1].sum(1), atol=1e-6)
    assert traj.shape == (K + 1, 2, *SHAPE) and torch.equal(traj[0], u_K) and torch.equal(traj[-1], u0)
