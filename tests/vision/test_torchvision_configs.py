"""The shipped MNIST and CIFAR-10 configs run end to end through train.py --config, on MNIST / CIFAR-10
files written in their real formats and read by the real torchvision (conftest.py): everything from
the config file to the run folder, the data loading included."""
import json
from pathlib import Path

import pytest
import torch

from vision_files import no_network, trust_cifar10_files, write_cifar10, write_mnist
from model_code import build, checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _data(tmp_path, monkeypatch, channels):
    """data.root holding the MNIST (1 channel) or CIFAR-10 (3 channels) files; no download possible."""
    root = tmp_path / "data"
    if channels == 1:
        write_mnist(root)
    else:
        trust_cifar10_files(monkeypatch, write_cifar10(root)["md5"])
    no_network(monkeypatch)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("config, channels, size, extra", [
    ("mnist/default_mnist_configs.yaml", 1, 28, []),
    # (eval.evaluators=[]: the training-time ELBO of a class-conditional run is test_levels_training's)
    ("mnist/small_mnist_configs.yaml", 1, 28, ["data.conditional=true", "eval.evaluators=[]"]),
    ("cifar10/default_cifar10_configs.yaml", 3, 32, []),
], ids=["mnist", "small_mnist_conditional", "cifar10"])
def test_shipped_torchvision_config_trains_samples_and_checkpoints(tmp_path, monkeypatch, config, channels, size,
                                                                   extra):
    import train

    torch.set_num_threads(1)
    root = _data(tmp_path, monkeypatch, channels)
    work = tmp_path / "run"
    rc = train.main(["--config", str(ROOT / "configs" / config), "--workdir", str(work), "--quiet",
                     "model.K=4", "model.unet.model_channels=8", "model.unet.num_res_blocks=1",
                     "model.unet.num_heads=1", "training.batch_size=8", "training.n_iters=4",
                     "training.eval_freq=4", "training.sampling_freq=4", "training.snapshot_freq=2",
                     "training.snapshot_freq_for_preemption=2", "training.n_samples=4", "training.n_eval=8",
                     "eval.batch_size=8", f"data.root={root}", "data.download=false", "train.tensorboard=false",
                     "train.device=cpu", "train.threads=1", *extra])
    assert rc == 0
    state = checkpoint.load(work / "model.pt")
    assert state["step"] == 4
    assert sorted(p.name for p in (work / "snapshots").iterdir()) == ["model.2.pt", "model.4.pt"]
    assert (work / "samples" / "4.png").is_file()
    assert state["data"]["shape"] == [channels, size, size] and state["data"]["levels"] == 256
    prior = state["process_state"]["prior"]     # fitted to the most-blurred training images
    assert prior["shape"] == [channels, size, size] and prior["mean"].numel() == channels * size * size
    assert torch.isfinite(prior["mean"]).all()
    rows = [json.loads(line) for line in (work / "results.json").read_text().splitlines()]
    assert rows[-1]["step"] == 4 and "loss_valid" in rows[-1]
    if not extra:
        assert rows[-1]["val_bpd"] > 0 and (work / "model.val_bpd.pt").is_file()
    run = build.load_run(work, "model.pt", "cpu")
    assert run.num_classes == (10 if extra else 0)
    labels = torch.tensor([3, 7]) if extra else None
    x = run.process.sample(run.model, [0, 1], run.shape, "cpu", labels=labels, **build.sampler_setup(run.cfg))
    assert x.shape == (2, channels, size, size) and torch.isfinite(x).all()


@pytest.mark.slow
@pytest.mark.parametrize("config, channels", [("starter/rectified_flow_mnist.yaml", 1),
                                              ("starter/rectified_flow_cifar10.yaml", 3)], ids=["mnist", "cifar10"])
def test_starter_configs_train_class_conditional_flows(tmp_path, monkeypatch, config, channels):
    """The GPU-sized starter configs, shrunk: labelled torchvision data, dequantized, a conditional U-Net."""
    import train

    torch.set_num_threads(1)
    root = _data(tmp_path, monkeypatch, channels)
    work = tmp_path / "run"
    assert train.main(["--config", str(ROOT / "configs" / config), "--savedir", str(work), "--quiet",
                       "net.unet.model_channels=8", "net.unet.channel_mult=[1,2]", "net.unet.num_res_blocks=1",
                       "net.unet.attention_levels=[]", "net.unet.num_heads=1", "train.epochs=null", "train.steps=3",
                       "train.batch_size=8", "train.record_interval=3", "train.snapshot_interval=null",
                       "optim.warmup=1", "optim.ema_update_after=0", "eval.n_samples=4", "eval.batch_size=4",
                       "eval.n_plot=4", "sampler.steps=2", f"data.root={root}", "data.download=false",
                       "train.tensorboard=false", "train.device=cpu", "train.threads=1"]) == 0
    run = build.load_run(work, "model.pt", "cpu")
    assert run.num_classes == 10 and run.cfg.data.dequantize and run.state["step"] == 3
    assert run.cfg.data.hflip == (0.5 if channels == 3 else 0.0)
    x = run.process.sample(run.model, [0, 1], run.shape, "cpu", labels=torch.tensor([2, 5]),
                           **build.sampler_setup(run.cfg))
    assert x.shape == (2, channels, run.shape[-1], run.shape[-1]) and torch.isfinite(x).all()
    # the labels reach the network: other labels, other samples from the same seeds
    y = run.process.sample(run.model, [0, 1], run.shape, "cpu", labels=torch.tensor([7, 1]),
                           **build.sampler_setup(run.cfg))
    assert not torch.equal(x, y)
