"""train.precision / tf32 / compile / compile_backend / pin_memory on a CPU, and scripts/gpu_check.py --quick."""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model_code import build, checkpoint, config, precision
from model_code.data.sources import Batch
from model_code.errors import UserError
from model_code.nets import build_net, describe_net
from model_code.trainer import LoopSettings, Trainer

from systems import ROOT, SYSTEMS, train_args

TINY_FNO = dict(in_channels=2, out_channels=2, width=8, n_layers=2, n_modes=4, embedding_dim=16)


def test_defaults_run_as_before():
    t = config.load([], []).train
    assert (t.precision, t.tf32, t.compile, t.compile_backend, t.pin_memory) == ("fp32", True, None, "inductor", True)
    net = build_net("fno", **TINY_FNO)
    assert precision.apply_precision(net, "fp32") is net and type(net).__dict__.get("_precision") is None


@pytest.mark.parametrize("overrides, words", [
    (["train.precision=fp16"], "train.precision must be one of fp32, bf16"),
    (["train.compile=fast"], "train.compile must be null"),
    (["train.compile=max-autotune", "train.compile_backend=eager"], "inductor mode"),
    (["train.compile_backend="], "train.compile_backend"),
])
def test_bad_values_are_one_line(overrides, words):
    with pytest.raises(UserError) as err:
        config.load([], overrides)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_compile_refused_for_the_toy():
    files = [str(ROOT / "configs/toy/base_config.yaml")]
    with pytest.raises(UserError, match="not available for the toy"):
        config.load(files, ["train.compile=default"])


def test_unknown_backend_is_one_line():
    with pytest.raises(UserError, match="no backend 'nonesuch'"):
        precision.compile_net(build_net("fno", **TINY_FNO), "default", "nonesuch")


def test_bf16_fno_close_to_fp32_with_float32_spectral_products(monkeypatch):
    torch.manual_seed(0)
    ref = build_net("fno", **TINY_FNO)
    net = precision.apply_precision(copy.deepcopy(ref), "bf16")
    x, c = torch.randn(4, 2, 20, 20), 0.5 * torch.randn(4)
    seen, rfftn = [], torch.fft.rfftn

    def recording(t, *args, **kwargs):
        seen.append((t.dtype, torch.is_autocast_enabled("cpu")))
        return rfftn(t, *args, **kwargs)

    monkeypatch.setattr(torch.fft, "rfftn", recording)
    with torch.no_grad():
        y0, y = ref(x, c), net(x, c)
    # Both spectral convolutions transform float32 with autocast off (bf16 arrives from the lifting's
    # channel MLP; without the wrapper the first one would see bf16).
    assert seen[2:] == [(torch.float32, False)] * 2
    assert y.dtype == torch.float32
    # bf16 keeps 8 mantissa bits (unit round-off 2^-9 = 2e-3); lifting, two layers and the projection
    # add a few such roundings (measured 2.7e-3). 1e-2 leaves room for them, and fails if a spectral
    # product or the output lost more than a few bf16 roundings.
    assert float((y - y0).norm() / y0.norm()) < 1e-2
    y = net(x, c)
    loss = (y - x).square().mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None or (p.grad.dtype == p.dtype and torch.isfinite(p.grad).all())
               for p in net.parameters())
    # The same name, keys and behaviour after a deep copy (the EMA copy).
    assert describe_net(net) == describe_net(ref) and list(net.state_dict()) == list(ref.state_dict())
    assert torch.equal(copy.deepcopy(net)(x, c), net(x, c))


def test_tf32_flags_only_on_cuda():
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = False
        assert precision.set_tf32(torch.device("cpu"), True) is False
        assert not matmul.allow_tf32 and not cudnn.allow_tf32
        assert precision.set_tf32(torch.device("cuda", 0), True) is True
        assert matmul.allow_tf32 and cudnn.allow_tf32
        precision.set_tf32(torch.device("cuda"), False)
        assert not matmul.allow_tf32 and not cudnn.allow_tf32
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


def _bare_trainer(device, pin):
    trainer = Trainer.__new__(Trainer)
    trainer.s, trainer.device = LoopSettings(unit="step", length=1, steps_per_unit=1, batch_size=2,
                                             pin_memory=pin), torch.device(device)
    return trainer


def test_pin_memory_is_a_no_op_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pytest.fail("pinned on a CPU run"))
    batch = Batch(torch.randn(2, 1, 4, 4), torch.tensor([0, 1]))
    out = _bare_trainer("cpu", True).to_device(batch)
    assert out.x.device.type == "cpu" and torch.equal(out.x, batch.x)


def test_pin_memory_on_cuda_pins_and_copies_asynchronously(monkeypatch):
    pinned, calls = [], []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned.append(self.shape) or self)
    monkeypatch.setattr(Batch, "to", lambda self, device, non_blocking=False: calls.append(
        (torch.device(device).type, non_blocking)) or self)
    batch = Batch(torch.randn(2, 1, 4, 4), torch.tensor([0, 1]))
    _bare_trainer("cuda", True).to_device(batch)
    _bare_trainer("cuda", False).to_device(batch)
    assert pinned == [batch.x.shape, batch.labels.shape] and calls == [("cuda", True), ("cuda", False)]


def test_bf16_compiled_run_trains_resumes_and_loads_in_eval(tmp_path, monkeypatch, volcano_dir):
    import train

    monkeypatch.setenv("DATA_DIR", str(volcano_dir))
    run = tmp_path / "run"
    extra = ["train.precision=bf16", "train.compile=default", "train.compile_backend=eager", "epochs=1"]
    assert train.main(train_args("ve_volcano", run, *extra)) == 0
    state = checkpoint.load(run / "model.pt")
    for weights in (state["model"], state["ema"]["shadow"]):
        assert not any("_orig_mod" in k for k in weights)
    # The same keys as an fp32, uncompiled build of the same config.
    files, overrides = SYSTEMS["ve_volcano"]
    cfg = config.load([str(ROOT / f) for f in files], overrides)
    plain = build.build_parts(cfg, str(volcano_dir), torch.device("cpu")).model
    assert list(state["model"]) == list(plain.state_dict())
    rows = [json.loads(line) for line in (run / "results.json").read_text().splitlines()]
    assert rows and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    # Resume: the same command, one epoch more.
    assert train.main(train_args("ve_volcano", run, *extra[:-1], "epochs=2")) == 0
    assert checkpoint.load(run / "model.pt")["step"] > state["step"]
    loaded = build.load_run(run, device="cpu")
    shape = loaded.shape
    out = loaded.model(torch.randn(2, *shape), torch.full((2,), 1.0))
    assert out.shape == (2, *shape) and torch.isfinite(out).all()
    # eval.py samples in the precision the run trained in
    assert getattr(type(loaded.model.backbone), "_precision", None) == "bf16"


def test_gpu_check_quick_prints_the_table(tmp_path):
    out = tmp_path / "check.json"
    result = subprocess.run([sys.executable, str(ROOT / "scripts/gpu_check.py"), "--quick", "--variants", "fp32,bf16",
                             "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[1].startswith("| network | variant | step ms | train samples/s")
    body = [line for line in lines if line.startswith("| ") and "network" not in line]
    assert len(body) == 6 and any("| bf16 |" in line for line in body)
    report = json.loads(out.read_text())
    assert {r["network"] for r in report["rows"]} == {"legacy_uno_128", "uno_128", "unet_cifar10"}
    assert all(r["finite"] and r["step_ms"] > 0 and r["gen_samples_per_s"] > 0 for r in report["rows"])
    assert all(r["train_peak_gib"] is None for r in report["rows"])          # no CUDA memory on a CPU
    assert "[" in result.stderr and "step 1/4" in result.stderr                 # progress lines
