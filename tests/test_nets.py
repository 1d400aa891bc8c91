"""Tests for the noise-conditioned neural-operator backbones (CPU, small sizes)."""

import io
import json
import subprocess
import sys

import pytest
import torch

from model_code.nets.embedding import NoiseLevelEmbedding
from model_code.nets.neuralop_nets import (
    ConditionedFNO,
    ConditionedUNO,
    count_parameters,
    grid_coordinates,
    uno_layout,
)

SMALL = dict(width=8, n_modes=8, embedding_dim=16)
NETS = [ConditionedFNO, ConditionedUNO]
NET_IDS = ["fno", "uno"]

_cache = {}


def small_net(cls, **kwargs):
    torch.manual_seed(0)
    return cls(**{**SMALL, **kwargs})


def cached_net(cls):
    """One shared small net per class for read-only tests (construction is the slow part)."""
    if cls not in _cache:
        _cache[cls] = small_net(cls).eval()
    return _cache[cls]


def perturb_film(net, std=0.2, seed=1):
    """Give the zero-initialised FiLM layers non-zero weights (as training would)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.film.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return net


def rand(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cls", NETS, ids=NET_IDS)
def test_film_scales_and_shifts_each_sample(cls):
    """Layer i's FiLM is h * (1 + scale_i(e)) + shift_i(e), per sample and channel: a channel whose
    scale is -1 is zeroed and then carries only its shift."""
    net = perturb_film(small_net(cls))
    channels = net.film[0].out_features // 2
    e = rand((2, net.film[0].in_features), seed=3)
    h = rand((2, channels, 5, 4), seed=4)
    with torch.no_grad():
        net.film[0].bias[0] = -1.0 - net.film[0].weight[0] @ e[1]      # sample 1, channel 0: scale -1
    out = net._apply_film(0, h, e)
    scale, shift = net.film[0](e).chunk(2, dim=1)
    want = h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    assert torch.allclose(out, want, rtol=1e-6, atol=1e-6)
    # 1 + scale is zero only to the rounding of two float32 dot products, times |h|
    assert torch.allclose(out[1, 0], shift[1, 0].expand(5, 4), rtol=0, atol=1e-5 * h.abs().max().item())


# ----------------------------------------------------------------------------- embedding


def test_noise_embedding_shape_and_dependence():
    torch.manual_seed(0)
    emb = NoiseLevelEmbedding(24, n_frequencies=8)
    c = torch.tensor([-2.0, 0.0, 0.5, 2.0])
    out = emb(c)
    assert out.shape == (4, 24)
    assert torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[3])
    # per sample: a batch equals its rows computed one by one
    rows = torch.cat([emb(c[i : i + 1]) for i in range(4)])
    # batch (gemm) vs one row (gemv) in float32: round-off relative to the output scale, BLAS-dependent
    torch.testing.assert_close(out, rows, rtol=1e-5, atol=1e-4 * float(out.detach().abs().max()))
    # the frequencies are not checkpoint state
    assert "frequencies" not in emb.state_dict()


def test_embedding_does_not_import_neuralop():
    code = "import sys, model_code.nets.embedding; assert 'neuralop' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("cls", NETS, ids=NET_IDS)
@pytest.mark.parametrize("n", [16, 30, 32, 60, 64])
def test_output_shape_any_resolution(cls, n):
    net = cached_net(cls)
    x = rand((2, 2, n, n))
    with torch.no_grad():
        y = net(x, torch.tensor([0.3, -1.2]))
        assert y.shape == x.shape
        assert torch.isfinite(y).all()
        # super-resolution: the same net at twice the resolution
        x2 = rand((1, 2, 2 * n, 2 * n))
        y2 = net(x2, torch.tensor([0.0]))
        assert y2.shape == x2.shape


@pytest.mark.parametrize("cls", NETS, ids=NET_IDS)
def test_non_square_and_domain_padding(cls):
    net = small_net(cls, domain_padding=0.1).eval()
    with torch.no_grad():
        for shape in [(30, 30), (60, 64), (17, 32)]:
            x = rand((2, 2, *shape))
            assert net(x, torch.zeros(2)).shape == x.shape


def test_grid_coordinates_same_points_at_any_resolution():
    g16 = grid_coordinates(torch.zeros(1, 1, 16, 16))
    g32 = grid_coordinates(torch.zeros(1, 1, 32, 32))
    assert g16.shape == (1, 2, 16, 16)
    torch.testing.assert_close(g32[..., ::2, ::2], g16)
    assert g16[0, 0, 1, 0] == pytest.approx(1 / 16) and g16[0, 1, 0, 1] == pytest.approx(1 / 16)
    assert g16.min() == 0 and g16.max() < 1


def test_uno_layout():
    layout = uno_layout(32, (1, 2, 4, 4), (16, 16))
    assert layout["widths"] == [32, 64, 128, 128, 128, 64, 32, 32]
    assert layout["scalings"] == [1.0, 0.5, 0.5, 0.5, 2.0, 2.0, 2.0, 1.0]
    assert layout["skips"] == {5: 2, 6: 1, 7: 0}
    assert [m[0] for m in layout["modes"]] == [16, 8, 4, 4, 4, 4, 8, 16]
    # skip sources and targets meet at the same level (same resolution)
    for target, source in layout["skips"].items():
        assert layout["levels"][target - 1] == layout["levels"][source]
    assert layout["levels"][-1] == 0
    # few modes are never raised above n_modes
    assert max(m[0] for m in uno_layout(8, (1, 2), (3, 3))["modes"]) == 3


# ----------------------------------------------------------------------------- conditioning


@pytest.mark.parametrize("cls", NETS, ids=NET_IDS)
def test_film_is_zero_initialised(cls):
    net = small_net(cls)
    for layer in net.film:
        assert torch.count_nonzero(layer.weight) == 0 and torch.count_nonzero(layer.bias) == 0
    x = rand((1, 2, 16, 16))
    c1, c2 = torch.tensor([-1.5]), torch.tensor([1.5])
    with torch.no_grad():
        # the bias after lifting is active from the start ...
        assert not torch.allclose(net(x, c1), net(x, c2))
        # ... and is the only path through which the noise level acts at initialisation
        net.lift_bias.weight.zero_()
        torch.testing.assert_close(net(x, c1), net(x, c2))


@pytest.mark.parametrize("cls", NETS, ids=NET_IDS)
def test_conditioning_is_per_sample(cls):
    net = perturb_film(small_net(cls)).eval()
    x = rand((1, 2, 32, 32))
    c1, c2 = torch.tensor([-1.0]), torch.tensor([1.0])
    with torch.no_grad():
        net.lift_bias.weight.zero_()  # only the FiLM path is left
        y1, y2 = net(x, c1), net(x, c2)
        assert (y1 - y2).abs().max() > 1e-3 * y1.abs().max()
        batch = net(x.expand(2, -1, -1, -1).contiguous(), torch.cat([c1, c2]))
        torch.testing.assert_close(batch[0:1], y1, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(batch[1:2], y2, rtol=1e-4, atol=1e-5)
        # a scalar c_noise is broadcast over the batch
        torch.testing.assert_close(net(x, torch.tensor(-1.0)), y1)
    with pytest.raises(ValueError):
        net(x, torch.zeros(3))


# ----------------------------------------------------------------------------- nonlinearity


def test_uno_is_not_affine():
    net = perturb_film(small_net(ConditionedUNO)).eval()
    x = rand((2, 2, 32, 32))
    c = torch.tensor([0.2, -0.7])
    with torch.no_grad():
        f2x, fx, f0 = net(2 * x, c), net(x, c), net(torch.zeros_like(x), c)
    # compare with the part of the output that depends on x (F(0) is mostly a constant)
    residual = (f2x - 2 * fx + f0).norm()
    assert residual > 0.05 * (f2x - f0).norm()


def test_uno_applies_explicit_activation_after_every_layer_but_the_last():
    net = small_net(ConditionedUNO)
    calls = []
    net.activation.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    with torch.no_grad():
        net(rand((1, 2, 32, 32)), torch.zeros(1))
    assert len(calls) == len(net.fno_blocks) - 1


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("cls", NETS, ids=NET_IDS)
def test_rebuild_from_config_and_state_dict(cls):
    net = perturb_film(small_net(cls, factorization="tucker", rank=0.5, domain_padding=0.125)).eval()
    config = json.loads(json.dumps(net.config))
    buffer = io.BytesIO()
    torch.save({"config": config, "state": net.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # no pickled functions in the state dict
    torch.manual_seed(123)  # a different random init that load_state_dict must overwrite
    rebuilt = type(net)(**saved["config"]).eval()
    rebuilt.load_state_dict(saved["state"], strict=True)
    x = rand((2, 2, 30, 30))
    c = torch.tensor([0.4, -1.1])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, c), net(x, c), rtol=0, atol=0)
    assert rebuilt.config == net.config


@pytest.mark.parametrize("cls", NETS, ids=NET_IDS)
def test_tucker_factorization_has_fewer_parameters(cls):
    dense = cached_net(cls)
    tucker = small_net(cls, factorization="tucker", rank=0.1)
    assert count_parameters(tucker) < count_parameters(dense)
    with torch.no_grad():
        y = tucker(rand((2, 2, 32, 32)), torch.zeros(2))
    assert y.shape == (2, 2, 32, 32) and torch.isfinite(y).all()


def test_count_parameters_counts_complex_as_two():
    lin = torch.nn.Linear(3, 2)
    assert count_parameters(lin) == 8
    module = torch.nn.Module()
    module.w = torch.nn.Parameter(torch.zeros(5, dtype=torch.cfloat))
    assert count_parameters(module) == 10


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("cls", NETS, ids=NET_IDS)
def test_gradients_reach_every_parameter(cls):
    net = small_net(cls).train()
    x = rand((2, 2, 32, 32))
    loss = (net(x, torch.tensor([0.5, -0.5])) - x).pow(2).mean()
    loss.backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None]
    assert not missing
    zero = [name for name, p in net.named_parameters() if not torch.count_nonzero(p.grad)]
    assert not zero
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_uno_construction_prints_nothing(capsys):
    small_net(ConditionedUNO, channel_multipliers=(1, 2))
    small_net(ConditionedFNO, n_layers=2)
    captured = capsys.readouterr()
    assert captured.out == ""


def test_factorization_names():
    assert ConditionedFNO(**SMALL, n_layers=1, factorization="None").config["factorization"] is None
    assert ConditionedFNO(**SMALL, n_layers=1, factorization="Tucker").config["factorization"] == "tucker"


def test_invalid_arguments():
    with pytest.raises(ValueError):
        ConditionedFNO(**SMALL, factorization="svd")
    with pytest.raises(ValueError):
        ConditionedUNO(**SMALL, channel_multipliers=())
    with pytest.raises(ValueError):
        cached_net(ConditionedFNO)(torch.zeros(1, 3, 16, 16), torch.zeros(1))


# ----------------------------------------------------------------------------- registry

REGISTRY_CASES = {
    "fno": (dict(in_channels=2, out_channels=2, width=8, n_layers=2, n_modes=4, embedding_dim=16), (2, 2, 12, 12)),
    "uno": (dict(in_channels=2, out_channels=2, width=8, channel_multipliers=[1, 2], n_modes=4, embedding_dim=16),
            (2, 2, 12, 12)),
    "unet": (dict(in_channels=1, model_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_levels=[1],
                  num_heads=2, num_classes=4), (2, 1, 8, 8)),
    "mlp": (dict(n_frequencies=2, hidden=16, depth=2, noise_dim=8), (2, 2)),
}


@pytest.mark.parametrize("kind", list(REGISTRY_CASES))
def test_describe_round_trip_rebuilds_identical_outputs(kind):
    from model_code.nets import NETS, build_net, describe_net, net_from_description

    config, shape = REGISTRY_CASES[kind]
    torch.manual_seed(0)
    net = build_net(kind, **config)
    assert isinstance(net, NETS[kind])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():                 # non-zero everywhere (zero-initialised layers included)
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    desc = json.loads(json.dumps(describe_net(net)))          # survives JSON (checkpoints, config.json)
    assert desc["type"] == kind and desc["config"] == net.config
    torch.manual_seed(99)
    rebuilt = net_from_description(desc)
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    x = rand(shape, seed=2) if kind != "mlp" else torch.rand(shape, generator=torch.Generator().manual_seed(2))
    c = torch.tensor([0.3, 0.8])
    labels = torch.tensor([1, 3]) if kind == "unet" else None
    with torch.no_grad():
        out = net.eval()(x, c, labels)
        torch.testing.assert_close(rebuilt.eval()(x, c, labels), out, rtol=0, atol=0)
    assert out.abs().max() > 0
    if kind != "unet":                              # no classes: labels=None accepted, labels refused
        with pytest.raises(ValueError, match="class"):
            net(x, c, torch.tensor([0, 1]))


def test_registry_errors_and_older_spellings():
    from model_code.errors import UserError
    from model_code.nets import describe_net, net_from_description

    with pytest.raises(UserError, match="unknown network 'resnet'"):
        net_from_description({"type": "resnet", "config": {}})
    with pytest.raises(UserError, match="cannot build the fno network"):
        net_from_description({"type": "fno", "config": {"widht": 8}})
    with pytest.raises(UserError, match="cannot build the unet network"):
        net_from_description({"type": "unet", "config": {"channel_mult": [1, 2], "attention_levels": [5]}})
    with pytest.raises(UserError):
        net_from_description("fno")
    old = net_from_description({"type": "ConditionedFNO", "config": REGISTRY_CASES["fno"][0]})   # build.describe_net
    assert isinstance(old, ConditionedFNO) and describe_net(old)["type"] == "fno"
    with pytest.raises(ValueError):
        describe_net(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------- fused UNO blocks


@pytest.mark.parametrize("sizes", [(60, 30), (30, 60), (15, 8), (8, 15), (17, 17), ((12, 20), (6, 10))])
def test_bicubic_as_matrix_products_equals_interpolate(sizes):
    from model_code.nets.neuralop_nets import _bicubic

    n_in, n_out = ([s, s] if isinstance(s, int) else list(s) for s in sizes)
    x = torch.randn(2, 3, *n_in, dtype=torch.float64)
    ref = torch.nn.functional.interpolate(x, size=n_out, mode="bicubic", align_corners=True)
    assert torch.allclose(_bicubic(x, n_out), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", [
    dict(n=31, kwargs=dict(channel_multipliers=(1, 2, 2))),                       # odd sizes 31 -> 16 -> 8
    dict(n=40, kwargs=dict(channel_multipliers=(1, 2, 4, 4), factorization="tucker", rank=0.5,
                           domain_padding=0.1)),                                  # 48 -> 24 -> 12 -> 6
    dict(n=(20, 28), kwargs=dict(channel_multipliers=(1, 3))),                     # non-square
], ids=["odd", "tucker_padded", "non_square"])
def test_uno_fused_blocks_equal_neuralops_forward(case):
    """The project's block path against neuralop's own FNOBlocks.forward (fused_skips=False), same
    weights: outputs and every gradient agree to float32 rounding (neuralop's spectral convolution
    works in complex64 only). A wrong resampling or skip weight gives differences of order 1."""
    net = small_net(ConditionedUNO, **case["kwargs"])
    perturb_film(net)
    with torch.no_grad():                        # weights off their initial scale, as after training
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert net.fused_skips
    h, w = (case["n"], case["n"]) if isinstance(case["n"], int) else case["n"]
    x = torch.randn(3, 2, h, w)
    c = torch.rand(3)
    results = []
    for fused in (False, True):
        net.fused_skips = fused
        net.zero_grad()
        xi = x.clone().requires_grad_()
        y = net(xi, c)
        (y * torch.cos(y)).sum().backward()
        results.append([y.detach(), xi.grad] + [p.grad for p in net.parameters()])
    for ref, new in zip(*results):
        assert (new - ref).abs().max() <= 2e-5 * ref.abs().max()


# ----------------------------------------------------------------------------- spectral convolution by matrix DFTs


def _spectral_conv_results(conv, x, out_shape, fast, dtype):
    """Output and every gradient (input, added term, parameters) of one spectral convolution."""
    from model_code.nets.spectral import spectral_conv

    conv.zero_grad()
    xi = x.clone().requires_grad_()
    add = rand((x.shape[0], conv.out_channels, *out_shape), seed=2).to(dtype).requires_grad_()
    y = spectral_conv(conv, xi, out_shape, add=add) if fast else conv(xi, output_shape=out_shape) + add
    (y * torch.cos(y)).sum().backward()
    return [y.detach(), xi.grad, add.grad] + [p.grad for p in conv.parameters()]


@pytest.mark.parametrize("factorization", [None, "tucker"])
@pytest.mark.parametrize("n_in, n_out, modes, norm, bias", [
    ((16, 16), (16, 16), (6, 6), "forward", True),       # same size
    ((15, 21), (8, 11), (8, 8), "forward", True),         # shrinking, odd input height (fftshift twice != id)
    ((9, 9), (18, 18), (8, 6), "ortho", True),            # growing from an odd grid
    ((8, 11), (15, 21), (6, 10), "backward", False),      # growing, non-square, no bias
    ((6, 6), (6, 6), (10, 10), "forward", True),          # more modes than the grid holds
], ids=["same", "shrink_odd", "grow_odd", "grow_non_square", "modes_over_grid"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spectral_conv_equals_neuralops(factorization, n_in, n_out, modes, norm, bias, dtype, monkeypatch):
    """The matrix-DFT spectral convolution against neuralop's SpectralConv.forward: outputs and all
    gradients to float32 rounding, and to 1e-10 in float64 (neuralop's output spectrum is complex64
    whatever the input; a patched torch.zeros makes it complex128 for that comparison)."""
    from neuralop.layers.spectral_convolution import SpectralConv

    from model_code.nets.spectral import fast_spectral_ok

    torch.manual_seed(0)
    conv = SpectralConv(3, 4, modes, factorization=factorization, rank=0.5, implementation="factorized",
                        fft_norm=norm, bias=bias)
    assert fast_spectral_ok(conv)
    if dtype == torch.float64:
        for p in conv.parameters():
            p.data = p.data.to(torch.complex128 if p.is_complex() else dtype)
        zeros = torch.zeros
        monkeypatch.setattr(torch, "zeros", lambda *a, dtype=None, **k: zeros(
            *a, dtype=torch.complex128 if dtype == torch.cfloat else dtype, **k))
    x = rand((2, 3, *n_in)).to(dtype)
    ref, new = (_spectral_conv_results(conv, x, list(n_out), fast, dtype) for fast in (False, True))
    tol = 2e-5 if dtype == torch.float32 else 1e-10
    for r, n in zip(ref, new):
        assert n.dtype == r.dtype and n.shape == r.shape
        assert (n - r).abs().max() <= tol * r.abs().max()


def _contraction_results(conv, contract, spec, grad, grid):
    """Output of one weight contraction and the gradients of the spectrum and every weight parameter."""
    from model_code.nets.spectral import _mode_weight

    conv.zero_grad()
    spec = spec.clone().requires_grad_()
    out = contract(spec, _mode_weight(conv, [grid[0], grid[1] // 2 + 1]))
    (out * grad).real.sum().backward()
    return [out.detach(), spec.grad] + [p.grad for p in conv.weight.parameters()]


@pytest.mark.parametrize("channels, modes, grid, rank", [
    ((3, 4), (6, 6), (16, 16), 0.5),
    ((5, 2), (8, 6), (9, 9), (3, 2, 5, 2)),         # odd grid, uneven ranks (input rank > output)
    ((6, 7), (10, 10), (6, 6), 0.2),                # more modes than the grid: a sliced tucker weight
    ((2, 5), (5, 7), (12, 10), (2, 5, 1, 1)),       # odd modes, rank-1 mode factors
], ids=["square", "odd_uneven_rank", "sliced", "odd_modes_rank1"])
def test_tucker_contraction_equals_neuralops(channels, modes, grid, rank):
    """_contract_tucker against neuralop's own tucker einsum: outputs and the gradients of the
    spectrum, the core and each factor, to float32 rounding."""
    from neuralop.layers.spectral_convolution import SpectralConv

    from model_code.nets.spectral import _contract, _mode_weight

    torch.manual_seed(0)
    conv = SpectralConv(*channels, modes, factorization="tucker", rank=rank, implementation="factorized")
    rows, cols = _mode_weight(conv, [grid[0], grid[1] // 2 + 1]).shape[-2:]
    spec = torch.complex(rand((3, channels[0], rows, cols), seed=1), rand((3, channels[0], rows, cols), seed=2))
    grad = torch.complex(rand((3, channels[1], rows, cols), seed=3), rand((3, channels[1], rows, cols), seed=4))
    ref = _contraction_results(conv, lambda s, w: conv._contract(s, w, separable=False), spec, grad, grid)
    new = _contraction_results(conv, lambda s, w: _contract(conv, s, w), spec, grad, grid)
    assert len(ref) == 2 + 5
    for r, n in zip(ref, new):
        assert n.dtype == r.dtype and n.shape == r.shape
        assert (n - r).abs().max() <= 2e-5 * r.abs().max()


@pytest.mark.parametrize("factorization", ["cp", "tt", "dense"])
def test_other_weights_keep_neuralops_contraction(factorization):
    from neuralop.layers.spectral_convolution import SpectralConv

    from model_code.nets.spectral import _contract, _mode_weight

    torch.manual_seed(0)
    conv = SpectralConv(3, 4, (6, 6), factorization=factorization, rank=0.5, implementation="factorized")
    weight = _mode_weight(conv, [16, 9])
    shape = (2, 3, *weight.shape[-2:])
    spec = torch.complex(rand(shape, seed=1), rand(shape, seed=2))
    assert torch.equal(_contract(conv, spec, weight), conv._contract(spec, weight, separable=False))


def test_fast_spectral_ok_refuses_what_it_does_not_compute():
    from neuralop.layers.spectral_convolution import SpectralConv

    from model_code.nets.spectral import fast_spectral_ok

    assert fast_spectral_ok(SpectralConv(2, 2, (4, 4)))
    assert not fast_spectral_ok(SpectralConv(2, 2, (4, 4), separable=True))
    assert not fast_spectral_ok(SpectralConv(2, 2, (4, 4), complex_data=True))
    assert not fast_spectral_ok(SpectralConv(2, 2, (4,)))
    assert not fast_spectral_ok(SpectralConv(2, 2, (4, 4, 4)))
