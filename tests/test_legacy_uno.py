"""The published UNO (nets/legacy_uno.py): layout, parameter count, noise conditioning, resolutions."""
import pytest
import torch

from model_code import build
from model_code import config as config_mod
from model_code.errors import UserError
from model_code.nets import build_net, describe_net, net_from_description
from model_code.nets.legacy_uno import LegacyUNO, tucker_to_dense
from model_code.nets.neuralop_nets import count_parameters
from model_code.processes import process_from_description
from model_code.processes.ve import VE, PublishedDenoiser

# Counted on the published code itself (src/models.py with neuraloperator 8a0f526, tucker rank 0.1,
# exps/json/rbf-copied.json): count_params(UNO(2, 128, s=120, pad=8, fmult=0.5, ...)).
PUBLISHED_PARAMETERS = 142_205_986
PUBLISHED_UNUSED = 3_020_544          # time_mlp and the blocks' mlp, which the published forward never called


def _small(**kw):
    torch.manual_seed(0)
    args = dict(width=2, channel_multipliers=(1, 1, 1, 1), grid=128, pad=8, fmult=0.5)
    args.update(kw)
    return LegacyUNO(**args)


def test_published_layout_modes_and_sizes():
    net = _small(noise_conditioning=False)
    assert [b["modes"] for b in net.layout] == [64, 64, 48, 32, 16, 32, 48, 64]
    assert [net.get_submodule(b["name"]).spectral.weight.shape[-1] for b in net.layout] == \
        [32, 32, 24, 16, 8, 16, 24, 32]          # m // 2 per weight corner, two corners per block
    seen = []
    for b in net.layout:
        net.get_submodule(b["name"]).register_forward_hook(
            lambda m, inp, out: seen.append((tuple(inp[0].shape[-2:]), tuple(out.shape[-2:]))))
    y = net(torch.randn(1, 2, 120, 120), torch.zeros(1))
    assert y.shape == (1, 2, 120, 120)
    sizes = [seen[0][0][0]] + [o[0] for _, o in seen]
    assert sizes == [128, 128, 96, 64, 32, 64, 96, 128, 128]
    # Skips: inv3 reads inv2_9's output joined with block3's (channels add up).
    assert net.inv3.skip.in_channels == 2 * net.block3.skip.out_channels


def _independent_count(width, mults, grid, fmult, in_ch=2, out_ch=2):
    d, a, s = width, mults, grid
    sizes = [s, s, int(s * 0.75), s // 2, s // 4, s // 2, int(s * 0.75), s]
    chans = [(d, a[0] * d), (a[0] * d, a[1] * d), (a[1] * d, a[2] * d), (a[2] * d, a[3] * d),
             (a[3] * d, a[2] * d), (2 * a[2] * d, a[1] * d), (2 * a[1] * d, a[0] * d), (2 * a[0] * d, d)]
    t = 4 * d
    total = (in_ch + 2) * d + d + 2 * (t * t + t) + 2 * d * out_ch + out_ch
    for (i, o), n in zip(chans, sizes):
        half = int(n * fmult) // 2
        total += 2 * 2 * i * o * half * half      # two complex corners
        total += o + i * o + t * 2 * o + 2 * o     # spectral bias, 1x1 skip, mlp
    return total


@pytest.mark.parametrize("width,mults,grid,fmult", [(2, (1, 2, 4, 4), 128, 0.5), (3, (1, 1, 2, 3), 40, 0.25)])
def test_dense_parameter_count(width, mults, grid, fmult):
    net = _small(width=width, channel_multipliers=mults, grid=grid, pad=4, fmult=fmult)
    assert count_parameters(net) == _independent_count(width, mults, grid, fmult)


def test_published_settings_count_with_tucker():
    with torch.device("meta"):
        tucker = LegacyUNO(width=128, grid=128, pad=8, fmult=0.5, factorization="tucker", rank=0.1,
                           noise_conditioning=False)
        dense = LegacyUNO(width=128, grid=128, pad=8, fmult=0.5, noise_conditioning=False)
    assert count_parameters(tucker) == PUBLISHED_PARAMETERS
    unused = sum(p.numel() for n, p in tucker.named_parameters() if n.startswith("time_mlp") or ".mlp." in n)
    assert unused == PUBLISHED_UNUSED
    assert count_parameters(dense) == _independent_count(128, (1, 2, 4, 4), 128, 0.5) == 1_396_598_018


def test_tucker_weights_compute_as_their_dense_tensor():
    tucker = _small(grid=32, pad=4, factorization="tucker", rank=0.5)
    dense = _small(grid=32, pad=4)
    state = tucker.state_dict()
    for b in tucker.layout:
        sp = tucker.get_submodule(b["name"]).spectral
        state[f"{b['name']}.spectral.weight"] = torch.stack(
            [tucker_to_dense(sp.core[k], [f[k] for f in sp.factors]) for k in range(2)])
    dense.load_state_dict({k: v for k, v in state.items() if ".spectral.core" not in k and ".factors." not in k})
    x, c = torch.randn(2, 2, 28, 28), torch.randn(2)
    torch.testing.assert_close(dense(x, c), tucker(x, c), rtol=1e-4, atol=1e-5)


def test_noise_conditioning_false_ignores_c_noise_exactly_true_does_not():
    x = torch.randn(2, 2, 28, 28)
    off = _small(grid=32, pad=4, noise_conditioning=False)
    assert torch.equal(off(x, torch.tensor([-1.0, 0.3])), off(x, torch.tensor([0.5, 2.0])))
    on = _small(grid=32, pad=4, noise_conditioning=True)
    a, b = on(x, torch.tensor([-1.0, 0.3])), on(x, torch.tensor([0.5, 2.0]))
    assert (a - b).abs().max() > 1e-4
    # Per sample: changing one sample's level changes only that sample.
    c = on(x, torch.tensor([-1.0, 2.0]))
    assert torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


def test_other_resolutions_scale_the_padding():
    net = _small(grid=32, pad=4)
    assert net.padding(28, 28) == (4, 4) and net.padding(56, 56) == (8, 8)
    for n in (28, 56, 14):
        assert net(torch.randn(1, 2, n, n), torch.zeros(1)).shape == (1, 2, n, n)
    with pytest.raises(ValueError, match="does not fit the published layout"):
        net(torch.randn(1, 2, 40, 40), torch.zeros(1))       # 46 px padded -> 34 -> 23 -> ... -> 24
    with pytest.raises(ValueError, match="too coarse"):
        net(torch.randn(1, 2, 8, 8), torch.zeros(1))


def test_groups_and_bad_arguments():
    net = _small(grid=32, pad=4, groups=2, width=4)
    assert isinstance(net.block1.norm, torch.nn.GroupNorm) and net.block1.norm.num_groups == 2
    assert net(torch.randn(1, 2, 28, 28), torch.zeros(1)).shape == (1, 2, 28, 28)
    for bad in (dict(groups=3, width=4), dict(channel_multipliers=(1, 2, 4)), dict(num_freqs_input=2),
                dict(factorization="cp"), dict(fmult=0.01)):
        with pytest.raises(UserError):
            build_net("legacy_uno", **{"grid": 32, "pad": 4, **bad})


def test_description_round_trip_and_build_from_config():
    net = _small(grid=32, pad=4, factorization="tucker", rank=0.5, noise_conditioning=False)
    again = net_from_description(describe_net(net))
    assert again.config == net.config and describe_net(again)["type"] == "legacy_uno"
    cfg = config_mod.load([], ["net.type=legacy_uno", "data.dataset=grf", "data.resolution=32", "data.npad=4",
                               "net.width=2", "net.legacy.fmult=0.25", "net.legacy.noise_conditioning=false"])
    built = build.build_net(cfg, (1, 28, 28))
    assert (built.config["grid"], built.config["pad"], built.config["fmult"]) == (32, 4, 0.25)
    assert built.config["noise_conditioning"] is False and built.config["in_channels"] == 1
    with pytest.raises(UserError, match="square"):
        build.build_net(cfg, (1, 28, 30))


def test_ve_published_output_convention():
    from model_code.noise import WhiteNoise

    net = _small(grid=32, pad=4, noise_conditioning=False)
    ve = VE(WhiteNoise(channels=2), torch.tensor([2.0, 0.5]), output="published")
    model = ve.wrap(net)
    assert isinstance(model, PublishedDenoiser)
    x, sigma = torch.randn(2, 2, 28, 28), torch.tensor([2.0, 0.5])
    f = net(x, torch.zeros(2))
    torch.testing.assert_close(model.score(x, sigma), f / sigma.view(-1, 1, 1, 1) ** 2, rtol=0, atol=0)
    torch.testing.assert_close(model(x, sigma), x + f)
    again = process_from_description(ve.describe())
    assert again.output == "published" and "output" not in VE(WhiteNoise(channels=2), [1.0]).describe()
    with pytest.raises(ValueError, match="output"):
        VE(WhiteNoise(channels=2), [1.0], output="other")
