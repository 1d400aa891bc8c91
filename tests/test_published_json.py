"""Published config files read as they are (issue: published json keys).

The published code's experiment files and its argument dataclasses (train.py and train_gano.py
of the published repository) use keys the schema has no field for, and variance-valued sigmas.
Every such key is mapped, converted with a recorded note, or reported as having no effect; a
file that names no network builds the published UNO (net.type legacy_uno).
"""
import json
import math
import os
import subprocess
import sys

import pytest

from systems import ROOT
from model_code import config
from model_code.errors import UserError

# The published train.py's Arguments with their defaults (schedule has none: the published code
# refused a file without one, so the value of its files is used).
PUBLISHED_TRAIN_ARGUMENTS = {
    "batch_size": 16, "val_batch_size": 512, "epochs": 100, "val_size": 0.1, "record_interval": 100,
    "white_noise": False, "augment": False, "schedule": "geometric", "resolution": None, "npad": 8,
    "epsilon": 2e-5, "sigma_1": 1.0, "sigma_L": 0.01, "T": 100, "L": 10, "rbf_scale": 1.0, "rbf_eps": 0.01,
    "factorization": None, "num_freqs_input": 0, "scale_factor": 1.0, "d_co_domain": 32, "mult_dims": [1, 2, 4, 4],
    "fmult": 0.25, "rank": 1.0, "groups": 0, "lr": 1e-3, "Ntest": 1024, "num_workers": 2, "ema_rate": None,
}
# train_gano.py's Arguments: the GANO keys on top.
PUBLISHED_GANO_ARGUMENTS = {
    "batch_size": 16, "val_batch_size": 512, "epochs": 100, "val_size": 0.1, "record_interval": 100,
    "white_noise": False, "augment": False, "n_critic": 10, "lambda_grad": 10.0, "tau": 1.0, "alpha": 1.5,
    "sigma_x0": 1.0, "d_co_domain": 32, "npad": 8, "lr": 1e-3, "Ntest": 1024, "num_workers": 2, "ema_rate": None,
}
# Where each published key lands (plain renames); the others carry a note in cfg.mapped_keys.
PLAIN = {
    "batch_size": "train.batch_size", "val_batch_size": "eval.batch_size", "epochs": "train.epochs",
    "val_size": "data.val_size", "record_interval": "train.record_interval", "resolution": "data.resolution",
    "npad": "data.npad", "epsilon": "sampler.epsilon", "T": "sampler.T", "L": "process.num_levels",
    "rbf_scale": "noise.length_scale", "rbf_eps": "noise.eps", "factorization": "net.factorization",
    "d_co_domain": "net.width", "mult_dims": "net.channel_multipliers", "rank": "net.rank", "lr": "optim.lr",
    "Ntest": "eval.n_samples", "ema_rate": "optim.ema_rate", "n_critic": "process.adversarial.n_critic",
    "lambda_grad": "process.adversarial.lambda_grad", "schedule": "process.schedule",
}
NO_EFFECT = {"num_freqs_input", "scale_factor", "num_workers", "tau", "alpha", "sigma_x0"}


def get(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def write(tmp_path, values, name="published.json"):
    path = tmp_path / name
    path.write_text(json.dumps(values))
    return path


@pytest.mark.parametrize("arguments", [PUBLISHED_TRAIN_ARGUMENTS, PUBLISHED_GANO_ARGUMENTS], ids=["train", "gano"])
def test_every_published_argument_is_mapped_converted_or_reported(tmp_path, arguments):
    overrides = ["process.type=adversarial"] if "n_critic" in arguments and "fmult" not in arguments else []
    cfg = config.load([write(tmp_path, arguments)], overrides)
    for key, value in arguments.items():
        if key in PLAIN:
            assert get(cfg, PLAIN[key]) == value, key
        elif key in NO_EFFECT:
            assert cfg.mapped_keys[key].startswith(f"{key} = {value!r}: no effect ("), key
        elif key in ("white_noise", "augment"):
            continue                                 # value maps (tests/test_config.py checks them)
        else:
            assert key in cfg.mapped_keys, key
    assert set(cfg.mapped_keys) >= NO_EFFECT & set(arguments)


def test_published_variances_become_standard_deviations_with_a_note(tmp_path):
    cfg = config.load([write(tmp_path, {"sigma_1": 30.0, "sigma_L": 0.01})])
    assert cfg.process.sigma_max == math.sqrt(30.0) and cfg.process.sigma_min == math.sqrt(0.01)
    assert cfg.mapped_keys["sigma_1"] == ("sigma_1 = 30 is a variance in the published code: process.sigma_max = "
                                          "sqrt(30) = 5.47723 (a standard deviation)")
    # the same on the command line; the std spellings convert nothing
    cfg = config.load([], ["sigma_1=4", "sigma_min=0.5"])
    assert (cfg.process.sigma_max, cfg.process.sigma_min) == (2.0, 0.5)
    assert set(cfg.mapped_keys) == {"sigma_1"}
    with pytest.raises(UserError, match=r"config key 'sigma_L': expected a positive variance, got -1"):
        config.load([write(tmp_path, {"sigma_L": -1})])


def test_linear_schedule_note_and_geometric_silence(tmp_path):
    assert "schedule" not in config.load([write(tmp_path, {"schedule": "geometric"})]).mapped_keys
    cfg = config.load([write(tmp_path, {"schedule": "linear"})])
    assert cfg.process.schedule == "linear" and "spaced the variances evenly" in cfg.mapped_keys["schedule"]


@pytest.mark.parametrize("name, noise", [("rbf-copied.json", "grf"), ("indep-copied.json", "white")])
def test_the_published_files_as_they_are(name, noise):
    path = ROOT / "exps" / "json" / name
    raw = json.loads(path.read_text())
    assert "_comment" not in raw and raw["sigma_1"] == 30.0 and raw["fmult"] == 0.5   # verbatim
    cfg = config.load([path])
    assert cfg.net.type == "legacy_uno" and cfg.noise.type == noise
    assert (cfg.net.legacy.fmult, cfg.net.legacy.groups, cfg.net.factorization, cfg.net.rank) == \
        (0.5, 0, "tucker", 0.1)
    assert cfg.process.sigma_max == math.sqrt(30.0) and cfg.process.sigma_min == math.sqrt(0.01)
    assert (cfg.data.npad, cfg.optim.ema_rate, cfg.sampler.epsilon) == (8, 0.1, 6e-6)
    assert set(cfg.mapped_keys) == {"sigma_1", "sigma_L", "fmult", "groups", "num_freqs_input", "num_workers",
                                    "arch", "kernel", "validation"}
    assert cfg.eval.sampler is None                     # validation with the published sampler, as published
    # the published "RBF" noise was exp(-|x - y| / (2 l^2)); fmult's modes at the file's 120 + 8 px grid
    assert cfg.noise.kernel == "exponential" and cfg.noise.length_scale == 0.05
    assert cfg.mapped_keys["fmult"].endswith("at grid 128 px (blocks 128 -> 128 -> 96 -> 64 -> 32 -> 64 -> 96 -> 128 "
                                             "-> 128) the modes per axis are 64, 64, 48, 32, 16, 32, 48, 64")
    # naming a network keeps it: fmult then has no effect on the project's UNO
    assert config.load([path], ["arch=uno"]).net.type == "uno"


def test_the_published_file_builds_the_published_network():
    """Published settings: 142,205,986 parameters (tucker, rank 0.1), as the published code counts them."""
    from model_code import build
    from model_code.nets.neuralop_nets import count_parameters

    cfg = config.load([ROOT / "exps" / "json" / "rbf-copied.json"])
    net = build.build_net(cfg, (2, 120, 120))
    assert type(net).__name__ == "LegacyUNO" and count_parameters(net) == 142_205_986


def test_mapping_is_recorded_in_config_json_and_printed(tmp_path, volcano_dir):
    """A tiny training run from the published file (overridden to seconds): config.json records the mapping,
    stderr says each conversion in one line."""
    out = tmp_path / "run"
    small = ["resolution=16", "npad=4", "max_examples=24", "batch_size=8", "epochs=1", "record_interval=1",
             "Ntest=8", "val_batch_size=8", "L=4", "T=1", "n_plot=4", "d_co_domain=4", "mult_dims=[1,1,1,1]",
             "factorization=null", "tensorboard=false", "device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DATA_DIR": str(volcano_dir)}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "exps/json/rbf-copied.json"),
                           "--savedir", str(out), "--quiet", *small], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = json.loads((out / "config.json").read_text())
    assert saved["net"]["type"] == "legacy_uno"
    assert saved["mapped_keys"]["sigma_1"].startswith("sigma_1 = 30 is a variance")
    assert "config: sigma_1 = 30 is a variance in the published code" in proc.stderr
    assert "config: num_workers = 2: no effect" in proc.stderr
