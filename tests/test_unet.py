"""U-Net (model_code/nets/unet.py): shapes at odd sizes, level conditioning, zero init, rebuild."""
import pytest
import torch

from model_code.image_runs import build_net
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
    tol = 1e-4 * float(torch.cat([a, b]).abs().max())
    assert torch.allclose(both[0], a[0], atol=tol) and torch.allclose(both[1], b[0], atol=tol)


def test_dropout_and_rebuild_from_config():
    net = UNet(1, model_channels=8, channel_mult=[1, 2], dropout=0.3, num_heads=2)
    copy = build_net({"kind": "unet", "config": net.config})
    copy.load_state_dict(net.state_dict())
    assert copy.config == net.config
    with pytest.raises(ValueError):
        UNet(1, channel_mult=[1, 2], attention_levels=[5])


def test_fno_and_uno_are_selectable():
    x = torch.randn(2, 1, 8, 8)
    for kind, conf in (("fno", dict(in_channels=1, out_channels=1, width=8, n_layers=2, n_modes=4)),
                       ("uno", dict(in_channels=1, out_channels=1, width=8, channel_multipliers=[1, 2], n_modes=4))):
        net = build_net({"kind": kind, "config": conf})
        assert net(x, torch.tensor([1.0, 5.0])).shape == x.shape
