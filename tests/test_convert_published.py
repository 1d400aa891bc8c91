"""scripts/convert_published_checkpoint.py on a checkpoint in the published layout, checked independently.

The fixture writes what the published train.py wrote (config.json with its flat keys; model.w_total.pt
= torch.save(dict(weights, metrics, ema_helper, last_epoch))) with the parameter names and the
tltorch storage of the published UNO: tucker-factorized complex corner weights kept as real views
(..., 2). The checks recompute the lifting, the first block (rfft2, the two corners of the weight
rebuilt from the tucker factors, irfft2, bias, 1x1 skip, GELU) and the final conv with numpy.
"""
import json
import math
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import load_script

from model_code import build

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "convert_published_checkpoint.py"
BLOCKS = ("block1", "block2", "block3", "block4", "inv2_9", "inv3", "inv4", "inv5")
W, RES, NPAD, FMULT = 2, 40, 8, 0.5          # published d_co_domain, resolution, npad, fmult
GRID = RES                                   # sdim = (RES - NPAD) + NPAD
RANKS = (2, 3, 2, 3)


def _published_layout():
    s, a, d = GRID, (1, 2, 4, 4), W
    sizes = [s, s, int(s * 0.75), s // 2, s // 4, s // 2, int(s * 0.75), s]
    chans = [(d, a[0] * d), (a[0] * d, a[1] * d), (a[1] * d, a[2] * d), (a[2] * d, a[3] * d),
             (a[3] * d, a[2] * d), (2 * a[2] * d, a[1] * d), (2 * a[1] * d, a[0] * d), (2 * a[0] * d, d)]
    return [(name, i, o, int(n * FMULT) // 2) for name, (i, o), n in zip(BLOCKS, chans, sizes)]


def _published_state(gen, ranks=lambda shape: RANKS):
    r = lambda *shape: torch.randn(*shape, generator=gen) * 0.3          # noqa: E731
    t = 4 * W
    sd = OrderedDict()
    sd["init_conv.weight"], sd["init_conv.bias"] = r(W, 4, 1, 1), r(W)
    sd["time_mlp.1.weight"], sd["time_mlp.1.bias"] = r(t, t), r(t)
    sd["time_mlp.3.weight"], sd["time_mlp.3.bias"] = r(t, t), r(t)
    for name, i, o, half in _published_layout():
        for k in (0, 1):
            p = f"{name}.block1.convs.weight.{k}."
            rank = ranks((i, o, half, half))
            sd[p + "core"] = r(*rank, 2)
            for j, dim in enumerate((i, o, half, half)):
                sd[p + f"factors.factor_{j}"] = r(dim, rank[j], 2)
        sd[f"{name}.block1.convs.bias"] = r(1, o, 1, 1)
        sd[f"{name}.block1.fno_skips.0.weight"] = r(o, i, 1, 1)
        sd[f"{name}.mlp.1.weight"], sd[f"{name}.mlp.1.bias"] = r(2 * o, t), r(2 * o)
    sd["final_conv.weight"], sd["final_conv.bias"] = r(2, 2 * W, 1, 1), r(2)
    return sd


def _converter():
    return load_script(SCRIPT, "convert_published_checkpoint")


def _write_published(src, weights, ema):
    src.mkdir(parents=True, exist_ok=True)
    cfg = dict(batch_size=16, val_batch_size=128, epochs=100000, val_size=0.1, record_interval=100,
               white_noise=False, augment=True, schedule="geometric", resolution=RES, npad=NPAD, epsilon=6e-06,
               sigma_1=30.0, sigma_L=0.01, T=3, L=500, rbf_scale=0.05, rbf_eps=0.01, factorization="tucker",
               num_freqs_input=0, scale_factor=1.0, d_co_domain=W, mult_dims=[1, 2, 4, 4], fmult=FMULT, rank=0.1,
               groups=0, lr=0.0002, Ntest=256, num_workers=2, ema_rate=0.1)
    (src / "config.json").write_text(json.dumps(cfg))
    # scipy's Wasserstein distances were numpy float64 in the published metrics.
    torch.save(dict(weights=weights, metrics={"w_total": {"best": np.float64(0.25)}, "w_var": {"best": None}},
                    ema_helper=ema, last_epoch=2), src / "model.w_total.pt")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    src = tmp_path_factory.mktemp("published")
    gen = torch.Generator().manual_seed(0)
    weights = _published_state(gen)
    ema = OrderedDict((k, v + 0.05 * torch.randn(v.shape, generator=gen)) for k, v in weights.items())
    _write_published(src, weights, ema)
    out = tmp_path_factory.mktemp("converted")
    res = subprocess.run([sys.executable, str(SCRIPT), str(src), str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return src, out, weights, ema


def test_help_and_refusals(converted, tmp_path):
    src, out, *_ = converted
    res = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    for flag in ("--checkpoint", "--all", "--keep-factorization", "--no-ema", "--trust-pickle", "--device",
                 "--force"):
        assert flag in res.stdout
    again = subprocess.run([sys.executable, str(SCRIPT), str(src), str(out)], capture_output=True, text=True)
    assert again.returncode == 2 and "not empty" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    from model_code.errors import UserError

    convert = _converter()
    with pytest.raises(UserError, match="not found"):
        convert.main([str(tmp_path / "none"), str(tmp_path / "o")])
    with pytest.raises(UserError, match="model.none.pt not found"):
        convert.main([str(src), str(tmp_path / "o"), "--checkpoint", "model.none.pt"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"fmult": 0.5, "d_co_domain": 2}))
    torch.save({"weights": {"mystery.weight": torch.zeros(1)}}, bad / "model.pt")
    with pytest.raises(UserError, match="unexpected published parameter 'mystery.weight'"):
        convert.main([str(bad), str(tmp_path / "o2")])


def test_run_folder_records_the_published_conventions(converted):
    _, out, *_ = converted
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["net"]["type"] == "legacy_uno" and cfg["net"]["legacy"]["noise_conditioning"] is False
    assert cfg["net"]["factorization"] is None and cfg["net"]["width"] == W
    assert cfg["noise"] == {**cfg["noise"], "type": "grf", "kernel": "exponential", "length_scale": 0.05,
                            "eps": 0.01}
    assert math.isclose(cfg["process"]["sigma_max"], math.sqrt(30.0)) and math.isclose(cfg["process"]["sigma_min"],
                                                                                         0.1)
    record = json.loads((out / "conversion.json").read_text())
    assert record["noise"]["rbf_scale"] == 0.05 and "variance" in record["sigmas"]
    run = build.load_run(out, "model.w_total.pt", "cpu")
    assert run.state["process"]["output"] == "published" and run.state["net"]["type"] == "legacy_uno"
    assert run.shape == (2, RES - NPAD, RES - NPAD) and run.kind == "phase"
    assert run.state["conversion"]["published_best"] == {"w_total": 0.25}


def _dense(parts):
    c = lambda t: t[..., 0].double().numpy() + 1j * t[..., 1].double().numpy()     # noqa: E731
    core = c(parts["core"])
    f = [c(parts[f"factors.factor_{j}"]) for j in range(4)]
    return np.einsum("abcd,ia,ob,xc,yd->ioxy", core, *f)


def _gelu(v):
    from scipy.special import erf

    return 0.5 * v * (1 + erf(v / math.sqrt(2)))


@pytest.mark.parametrize("use_ema", [False, True])
def test_network_matches_an_independent_evaluation(converted, use_ema):
    _, out, weights, ema = converted
    sd = {k: v.double().numpy() for k, v in (ema if use_ema else weights).items()}
    run = build.load_run(out, "model.w_total.pt", "cpu", use_ema=use_ema)
    net = run.model.backbone
    seen = {}
    net.block1.register_forward_hook(lambda m, i, o: seen.update(b1_in=i[0], b1_out=o))
    net.final_conv.register_forward_hook(lambda m, i, o: seen.update(fc_in=i[0], fc_out=o))
    n = RES - NPAD
    x = torch.randn(2, 2, n, n, generator=torch.Generator().manual_seed(1))
    var = torch.tensor([30.0, 0.04])                       # published levels are variances
    with torch.no_grad():
        score = run.model.score(x, var.sqrt())

    # Lifting: 1x1 conv of [x, linspace grid along H, along W], zero padded right / bottom.
    xs = x.double().numpy()
    g = np.linspace(0, 1, n)
    feats = np.concatenate([xs, np.broadcast_to(g[None, None, :, None], (2, 1, n, n)),
                            np.broadcast_to(g[None, None, None, :], (2, 1, n, n))], axis=1)
    lift = np.einsum("oi,bihw->bohw", sd["init_conv.weight"][:, :, 0, 0], feats) + sd["init_conv.bias"][None, :, None,
                                                                                                      None]
    lift = np.pad(lift, ((0, 0), (0, 0), (0, NPAD), (0, NPAD)))
    np.testing.assert_allclose(seen["b1_in"].double().numpy(), lift, rtol=1e-5, atol=1e-5)

    # Block 1 (grid 40 -> 40, 20 modes: corners of 10 x 10) from the tucker factors.
    h = seen["b1_in"].double().numpy()
    spec = np.fft.rfft2(h, norm="forward")
    m = int(GRID * FMULT) // 2
    w0 = _dense({k.split("weight.0.")[1]: (ema if use_ema else weights)[k] for k in weights
                 if k.startswith("block1.block1.convs.weight.0.")})
    w1 = _dense({k.split("weight.1.")[1]: (ema if use_ema else weights)[k] for k in weights
                 if k.startswith("block1.block1.convs.weight.1.")})
    acc = np.zeros((2, w0.shape[1], GRID, GRID // 2 + 1), dtype=complex)
    acc[:, :, :m, :m] = np.einsum("bixy,ioxy->boxy", spec[:, :, :m, :m], w0)
    acc[:, :, -m:, :m] = np.einsum("bixy,ioxy->boxy", spec[:, :, -m:, :m], w1)
    k_out = np.fft.irfft2(acc, s=(GRID, GRID), norm="forward") + sd["block1.block1.convs.bias"]
    skip = np.einsum("oi,bihw->bohw", sd["block1.block1.fno_skips.0.weight"][:, :, 0, 0], h)
    np.testing.assert_allclose(seen["b1_out"].double().numpy(), _gelu(k_out + skip), rtol=1e-4, atol=1e-5)

    # Final 1x1 conv on [inv5 output, lifting], cropped back to the data grid.
    fc_in = seen["fc_in"].double().numpy()
    assert fc_in.shape[-2:] == (n, n)
    np.testing.assert_allclose(fc_in[:, W:], lift[:, :, :n, :n], rtol=1e-5, atol=1e-5)
    f = np.einsum("oi,bihw->bohw", sd["final_conv.weight"][:, :, 0, 0], fc_in) + sd["final_conv.bias"][None, :, None,
                                                                                                       None]
    np.testing.assert_allclose(seen["fc_out"].double().numpy(), f, rtol=1e-5, atol=1e-5)
    # The published score: F / sigma_var.
    np.testing.assert_allclose(score.double().numpy(), f / var.double().numpy()[:, None, None, None], rtol=1e-4,
                               atol=1e-6)


def test_keep_factorization_gives_the_same_network(tmp_path):
    from model_code.errors import UserError
    from model_code.nets.legacy_uno import tucker_rank

    convert = _converter()
    # Published checkpoints have the ranks of the published rule (rank 0.1 of each corner's shape).
    weights = _published_state(torch.Generator().manual_seed(2), ranks=lambda shape: tucker_rank(shape, 0.1))
    _write_published(tmp_path / "published", weights, weights)
    dense, kept = tmp_path / "dense", tmp_path / "kept"
    convert.main([str(tmp_path / "published"), str(dense)])
    convert.main([str(tmp_path / "published"), str(kept), "--keep-factorization", "--no-ema"])
    a = build.load_run(dense, "model.w_total.pt", "cpu", use_ema=False)
    b = build.load_run(kept, "model.w_total.pt", "cpu")
    assert b.state["ema"] is None and b.state["net"]["config"]["factorization"] == "tucker"
    x = torch.randn(1, 2, RES - NPAD, RES - NPAD)
    with torch.no_grad():
        torch.testing.assert_close(b.model.score(x, 0.5), a.model.score(x, 0.5), rtol=1e-4, atol=1e-5)
    # Arbitrary ranks are not those the config's rank gives: refused, not silently reshaped.
    _write_published(tmp_path / "odd", _published_state(torch.Generator().manual_seed(3)), {})
    with pytest.raises(UserError, match="does not match the network"):
        convert.main([str(tmp_path / "odd"), str(tmp_path / "odd_out"), "--keep-factorization"])
