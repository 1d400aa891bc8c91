"""Linear-transform forward processes (model_code/processes/linear.py)."""
import math

import pytest
import torch

from model_code.processes import linear
from model_code.processes.linear import FUNCTION_MAP, binary_product_norms, build_map, per_level

SHAPE = (1, 4, 4)
K = 6
MAPS = ["identity", "constant_velocity", "constant_deceleration", "fixed_random", "random_product"]


def _u(n=5, seed=0):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", MAPS + ["heat"])
def test_level_zero_is_identity_and_input_untouched(name):
    fmap = build_map(name, SHAPE, K, seed=3)
    u = _u()
    before = u.clone()
    # Exact for the matrix maps; heat does a float32 DCT round trip (BLAS matmuls, ~eps_32 |u| per element).
    assert torch.allclose(fmap.apply(u, 0), u, atol=1e-4 * float(u.abs().max()))
    out = fmap.apply(u, torch.arange(5))
    assert torch.equal(u, before)                       # never in place
    assert out.data_ptr() != u.data_ptr()
    assert fmap.describe()["name"] == name


@pytest.mark.parametrize("name", ["fixed_random", "random_product"])
def test_random_maps_are_reproducible_from_their_seed(name):
    a, b, c = build_map(name, SHAPE, K, seed=7), build_map(name, SHAPE, K, seed=7), build_map(name, SHAPE, K, seed=8)
    assert torch.equal(a.matrices, b.matrices)
    assert not torch.allclose(a.matrices[1:], c.matrices[1:])
    # Unaffected by the global RNG.
    torch.manual_seed(123)
    assert torch.equal(build_map(name, SHAPE, K, seed=7).matrices, a.matrices)


def test_scalar_maps_have_the_analytic_values():
    u = _u()
    k = torch.tensor([0, 1, 3, 5, 6])
    s = k.double() / K
    cv = build_map("constant_velocity", SHAPE, K).apply(u, k)
    cd = build_map("constant_deceleration", SHAPE, K).apply(u, k)
    assert torch.allclose(cv, u * (1 - s).float().view(-1, 1, 1, 1), atol=1e-6)
    assert torch.allclose(cd, u * ((1 - s) ** 2).float().view(-1, 1, 1, 1), atol=1e-6)
    assert torch.allclose(build_map("identity", SHAPE, K).apply(u, k), u)
    # Constant deceleration: at rest at the origin at the horizon (x(K) = 0 and x'(K) = 0).
    x = lambda t: (1 - t / K) ** 2                      # noqa: E731
    assert x(K) == 0 and abs((x(K) - x(K - 1e-6)) / 1e-6) < 1e-5
    assert abs((x(1e-6) - x(0)) / 1e-6 + 2 / K) < 1e-5  # initial velocity -2 u_0 / K


def test_batched_application_equals_level_by_level():
    fmap = build_map("fixed_random", SHAPE, K, seed=1)
    u, k = _u(8), torch.tensor([3, 1, 3, 0, 6, 1, 2, 6])
    out = fmap.apply(u, k)
    for i in range(8):
        expected = (fmap.matrices[k[i]] @ u[i].reshape(-1)).view(SHAPE)
        # batched vs single float32 matmul: different BLAS kernels, round-off ~ eps_32 sqrt(D) |T u|
        assert torch.allclose(out[i], expected, atol=1e-4 * float(expected.abs().max()))


@pytest.mark.parametrize("name", MAPS)
def test_invertible_where_claimed(name):
    fmap = build_map(name, SHAPE, K, seed=2)
    claimed = fmap.invertible_levels()
    u = _u(K + 1)
    levels = torch.arange(K + 1)
    for lv in levels[claimed].tolist():
        x = fmap.apply(u[lv:lv + 1], lv)
        assert torch.allclose(fmap.inverse(x, lv), u[lv:lv + 1], atol=1e-4), (name, lv)
    if name in ("constant_velocity", "constant_deceleration"):
        assert claimed.tolist() == [True] * K + [False]  # T(K) = 0
        assert torch.equal(fmap.apply(u, K), torch.zeros_like(u))
    else:
        assert bool(claimed.all())


def test_random_product_is_orthogonal_and_stable():
    D = math.prod(SHAPE)
    fmap = build_map("random_product", SHAPE, 40, seed=0)
    eye = torch.eye(D)
    for t in fmap.matrices[[1, 10, 40]]:
        assert torch.allclose(t @ t.T, eye, atol=1e-4)
    # T(k) = R_k T(k-1): the product structure.
    r2 = fmap.matrices[2] @ fmap.matrices[1].T
    assert torch.allclose(r2 @ r2.T, eye, atol=1e-4)
    u = _u(1)
    norms = fmap.apply(u.expand(41, *u.shape[1:]), torch.arange(41)).flatten(1).norm(dim=1)
    assert torch.allclose(norms, u[0].norm().expand(41), rtol=1e-4)


def test_naive_binary_product_blows_up_geometrically():
    # The seed's product of 0/1 matrices: the norm grows like (D/2)^k (top eigenvalue of E[R] = D/2).
    D = 64
    norms = binary_product_norms(D, 12, torch.Generator().manual_seed(0))
    growth = (norms[1:] / norms[:-1])
    assert torch.allclose(growth, torch.full_like(growth, D / 2), rtol=0.15)
    assert norms[-1] > 1e17
    # float32 overflows (inf -> NaN loss) after log(3.4e38) / log(D/2) levels: 26 for D = 64, 15 for MNIST.
    assert math.log(torch.finfo(torch.float32).max) / math.log(D / 2) < 26
    assert math.log(torch.finfo(torch.float32).max) / math.log(784 / 2) < 15


def test_adding_a_map_is_one_function_and_one_line(monkeypatch):
    def cubic(k, K, D, generator, previous):
        return (1 - k / K) ** 3

    monkeypatch.setitem(FUNCTION_MAP, "cubic", per_level(cubic, invertible="below_K"))
    fmap = build_map("cubic", SHAPE, K)
    u = _u(1)
    assert torch.allclose(fmap.apply(u, 3), u * 0.125)
    assert fmap.describe()["name"] == "cubic"


def test_heat_is_registered_and_too_large_matrix_stacks_are_refused():
    assert build_map("heat", SHAPE, K, blur_sigma_min=0.5, blur_sigma_max=2.0).describe()["blur_sigma_max"] == 2.0
    with pytest.raises(ValueError, match="too large"):
        build_map("fixed_random", (1, 48, 48), 200)
    with pytest.raises(KeyError):
        build_map("nope", SHAPE, K)
    assert linear.MAX_MATRIX_ENTRIES > 0
