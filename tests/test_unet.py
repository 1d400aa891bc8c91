"""U-Net (model_code/nets/unet.py): shapes at odd sizes, level and class conditioning, zero init, rebuild."""
import pytest
import torch

from model_code.nets import build_net, net_from_description
from model_code.nets.unet import UNet


@pytest.mark.parametrize("shape,mult,attn", [((2, 1, 8, 8), [1, 2], [1]), ((2, 3, 7, 9), [1, 2, 2], [2]),
                                             ((2, 1, 28, 28), [1, 2, 2], [1])])
def test_output_shape_any_size(shape, mult, attn):
    net = UNet(shape[1], model_channels=8, channel_mult=mult, attention_levels=attn, num_heads=2)
    out = net(torch.randn(shape), torch.tensor([1, 3]))
    assert out.shape == shape


def test_zero_at_initialisation_then_level_dependent():
    torch.manual_seed(0)
    net = UNet(1, model_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_levels=[1], num_heads=2)
    x = torch.randn(2, 1, 8, 8)
    assert net(x, torch.tensor([1, 2])).abs().max() == 0          # output conv is zero-initialised
    for p in net.parameters():                                    # perturb every weight
        p.data.add_(0.1 * torch.randn_like(p))
    a = net(x[:1], torch.tensor([1]))
    b = net(x[:1], torch.tensor([7]))
    assert (a - b).abs().max() > 1e-4                             # the level embedding reaches the output
    # Each sample sees its own level: a batch equals its samples run one by one.
    both = net(torch.cat([x[:1], x[:1]]), torch.tensor([1, 7]))
    # Batch 2 vs 1 may take other float32 conv / matmul kernels: round-off relative to the output scale
    # (~1e-6 on outputs ~1 measured); a level mix-up changes the output by |a - b| ~ 0.3.
    tol = 1e-4 * float(torch.cat([a, b]).abs().max().detach())
    assert torch.allclose(both[0], a[0], atol=tol) and torch.allclose(both[1], b[0], atol=tol)


def test_dropout_and_rebuild_from_config():
    net = UNet(1, model_channels=8, channel_mult=[1, 2], dropout=0.3, num_heads=2)
    copy = net_from_description({"kind": "unet", "config": net.config})     # the older spelling too
    copy.load_state_dict(net.state_dict())
    assert copy.config == net.config
    with pytest.raises(ValueError):
        UNet(1, channel_mult=[1, 2], attention_levels=[5])


def test_fno_and_uno_are_selectable():
    x = torch.randn(2, 1, 8, 8)
    for kind, conf in (("fno", dict(in_channels=1, out_channels=1, width=8, n_layers=2, n_modes=4)),
                       ("uno", dict(in_channels=1, out_channels=1, width=8, channel_multipliers=[1, 2], n_modes=4))):
        net = build_net(kind, **conf)
        assert net(x, torch.tensor([1.0, 5.0])).shape == x.shape


def perturbed(net, seed=0, std=0.1):
    """Non-zero weights everywhere (the output conv starts at zero), as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))
    return net.eval()


def test_class_conditioning_changes_the_output_per_sample():
    torch.manual_seed(0)
    net = perturbed(UNet(1, model_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_levels=[],
                         num_heads=2, num_classes=10))
    assert net.config["num_classes"] == 10 and net.label_embedding.weight.shape == (10, 32)
    x = torch.randn(1, 1, 8, 8)
    level = torch.tensor([3.0])
    with torch.no_grad():
        outs = [net(x, level, torch.tensor([y])) for y in range(10)]
        # The label's embedding row is the only difference: a zero row equals "no class information".
        gaps = [(outs[y] - outs[0]).abs().max().item() for y in range(1, 10)]
        assert min(gaps) > 1e-3
        mixed = net(x.expand(3, -1, -1, -1), level.expand(3), torch.tensor([4, 0, 9]))
    tol = 1e-4 * max(o.abs().max().item() for o in outs)
    for row, y in enumerate([4, 0, 9]):
        assert torch.allclose(mixed[row], outs[y][0], atol=tol)
    # Changing only the embedding row of class 4 moves only the class-4 output.
    with torch.no_grad():
        net.label_embedding.weight[4] += 1.0
        assert (net(x, level, torch.tensor([4])) - outs[4]).abs().max() > 1e-3
        assert torch.allclose(net(x, level, torch.tensor([0])), outs[0], atol=tol)


def test_conditional_needs_labels_and_unconditional_refuses_them():
    cond = UNet(1, model_channels=8, channel_mult=[1], num_res_blocks=1, attention_levels=[], num_classes=3)
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="pass labels"):
        cond(x, torch.ones(2))
    with pytest.raises(ValueError, match="0..2"):
        cond(x, torch.ones(2), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="integers"):
        cond(x, torch.ones(2), torch.tensor([0.0, 1.0]))
    plain = UNet(1, model_channels=8, channel_mult=[1], num_res_blocks=1, attention_levels=[])
    assert plain.config["num_classes"] == 0
    assert not any("label" in name for name in plain.state_dict())    # same state dict as before classes
    assert torch.equal(plain(x, torch.ones(2), None), plain(x, torch.ones(2)))
    with pytest.raises(ValueError, match="unconditional"):
        plain(x, torch.ones(2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_classes"):
        UNet(1, num_classes=-1)
