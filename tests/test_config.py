"""The one config schema (model_code/schema.py, config.py): files of every dialect, aliases, presets,
merging order, validation, saving and the --help listing."""
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from model_code import config
from model_code import config_aliases as aliases
from model_code.errors import UserError
from model_code.schema import Config

ROOT = Path(__file__).resolve().parents[1]
TOY_BASE = ROOT / "configs" / "toy" / "base_config.yaml"
DIGITS = ROOT / "configs" / "digits" / "default_digits_configs.yaml"
DEFAULTS = Config()


def write(tmp_path, data, name="exp.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else data)
    return str(path)


def get(cfg, dotted):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


# ----------------------------------------------------------------------------- files, order, overrides

def test_defaults_file_and_overrides_apply_in_order(tmp_path):
    path = write(tmp_path, {"L": 7, "lr": 0.01, "_comment": "ignored"})
    cfg = config.load([path], ["lr=0.5", "mult_dims=[1,2]"])
    assert cfg.process.num_levels == 7 and cfg.optim.lr == 0.5 and cfg.net.channel_multipliers == [1, 2]
    assert cfg.train.batch_size == DEFAULTS.train.batch_size
    # a single path is accepted too, and no file at all gives the schema defaults
    assert config.load(path).process.num_levels == 7
    assert config.load([]) == DEFAULTS


def test_yaml_files_are_read(tmp_path):
    cfg = config.load([write(tmp_path, "L: 9\nwhite_noise: true\n", "exp.yaml")])
    assert cfg.process.num_levels == 9 and cfg.noise.type == "white"


def test_several_files_merge_in_order_and_key_value_comes_last(tmp_path):
    first = write(tmp_path, {"L": 7, "lr": 0.01, "T": 5}, "a.json")
    second = write(tmp_path, "process:\n  num_levels: 8\noptim:\n  lr: 0.02\n", "b.yaml")
    cfg = config.load([first, second], ["optim.lr=0.03", "L=9"])
    assert cfg.process.num_levels == 9 and cfg.optim.lr == 0.03 and cfg.sampler.T == 5
    cfg = config.load([second, first])
    assert cfg.process.num_levels == 7 and cfg.optim.lr == 0.01
    # schema keys beside a published file (process.* and sampler.* are not the aliases `process` and `sampler`)
    cfg = config.load([first], ["process.type=interpolant", "sampler.name=heun_ode", "sampler.steps=3"])
    assert (cfg.process.type, cfg.sampler.name, cfg.sampler.steps, cfg.process.num_levels) == \
        ("interpolant", "heun_ode", 3, 7)
    # repeated overrides: the last wins
    assert config.load([first], ["L=12", "L=13"]).process.num_levels == 13


# ----------------------------------------------------------------------------- aliases, exactly

PUBLISHED = [
    # sigma_1 / sigma_L are the published variances; sigma_max / sigma_min standard deviations
    ("sigma_1", 9.0, "process.sigma_max", 3.0), ("sigma_L", 0.0625, "process.sigma_min", 0.25),
    ("sigma_max", 3.0, "process.sigma_max", 3.0), ("sigma_min", 0.02, "process.sigma_min", 0.02),
    ("L", 11, "process.num_levels", 11), ("T", 4, "sampler.T", 4), ("epsilon", 1e-4, "sampler.epsilon", 1e-4),
    ("Ntest", 33, "eval.n_samples", 33), ("val_batch_size", 12, "eval.batch_size", 12),
    ("d_co_domain", 24, "net.width", 24), ("mult_dims", [1, 3], "net.channel_multipliers", [1, 3]),
    ("arch", "fno", "net.type", "fno"), ("rbf_scale", 0.2, "noise.length_scale", 0.2),
    ("rbf_eps", 0.03, "noise.eps", 0.03), ("kernel", "exponential", "noise.kernel", "exponential"),
    ("white_noise", True, "noise.type", "white"), ("white_noise", False, "noise.type", "grf"),
    ("augment", True, "data.hflip", 0.5), ("augment", True, "data.vflip", 0.5),
    ("augment", False, "data.hflip", 0.0), ("augment", False, "data.vflip", 0.0),
    ("resolution", 64, "data.resolution", 64), ("npad", 4, "data.npad", 4), ("lr", 0.003, "optim.lr", 0.003),
    ("ema_rate", 0.9, "optim.ema_rate", 0.9), ("batch_size", 4, "train.batch_size", 4),
    ("epochs", 5, "train.epochs", 5), ("record_interval", 7, "train.record_interval", 7),
    ("process", "interpolant", "process.type", "interpolant"), ("sampler", "heun_ode", "sampler.name", "heun_ode"),
    ("ode_steps", 9, "sampler.steps", 9), ("n_plot", 3, "eval.n_plot", 3), ("val_seed", 5, "eval.seed", 5),
]


@pytest.mark.parametrize("old, value, new, expected", PUBLISHED, ids=[f"{p[0]}={p[1]}" for p in PUBLISHED])
def test_published_json_keys_map_onto_the_schema(tmp_path, old, value, new, expected):
    cfg = config.load([write(tmp_path, {"dataset": "grf", old: value})])
    assert get(cfg, new) == expected
    # the same key on the command line, with or without a file
    assert get(config.load([], [f"{old}={json.dumps(value)}"]), new) == expected


LEVELS = [
    ("model.forward", "constant_velocity", "process.levels.forward", "constant_velocity"),
    ("model.K", 7, "process.levels.K", 7), ("model.sigma", 0.02, "process.levels.sigma", 0.02),
    ("model.blur_sigma_max", 4.0, "process.levels.blur_sigma_max", 4.0),
    ("model.prior", "dct_diag", "process.levels.prior", "dct_diag"), ("model.delta", 0.02, "sampler.delta", 0.02),
    ("model.net", "fno", "net.type", "fno"), ("model.ema_rate", 0.9, "optim.ema_rate", 0.9),
    ("model.unet.model_channels", 8, "net.unet.model_channels", 8), ("model.fno.width", 12, "net.width", 12),
    ("model.uno.channel_multipliers", [1, 3], "net.channel_multipliers", [1, 3]),
    ("training.n_iters", 77, "train.steps", 77), ("training.batch_size", 8, "train.batch_size", 8),
    ("training.log_freq", 5, "train.log_interval", 5), ("training.eval_freq", 6, "train.record_interval", 6),
    ("training.snapshot_freq", 9, "train.snapshot_interval", 9),
    ("training.snapshot_freq_for_preemption", 4, "train.checkpoint_interval", 4),
    ("training.sampling_freq", 8, "train.figure_interval", 8), ("training.n_samples", 4, "eval.n_plot", 4),
    ("training.n_eval", 32, "eval.n_valid", 32), ("data.image_size", 16, "data.resolution", 16),
    ("data.num_channels", 1, "data.channels", 1), ("data.random_flip", True, "data.hflip", 0.5),
    ("data.valid_fraction", 0.2, "data.val_size", 0.2), ("optim.warmup", 3, "optim.warmup", 3),
]


@pytest.mark.parametrize("old, value, new, expected", LEVELS, ids=[f"{p[0]}={p[1]}" for p in LEVELS])
def test_heat_yaml_keys_map_onto_the_schema(old, value, new, expected):
    cfg = config.load([DIGITS], [f"{old}={json.dumps(value)}"])
    assert get(cfg, new) == expected


TOY = [
    ("data.mu", [0.2, 0.7], "data.atoms.mu", [0.2, 0.7]), ("data.sigma_d", 0.04, "data.atoms.sigma_d", 0.04),
    ("data.symmetrize", False, "data.atoms.symmetrize", False),
    ("process.sigma_min", 0.01, "process.wrapped_ve.sigma_min", 0.01),
    ("process.sigma_max", 1.5, "process.wrapped_ve.sigma_max", 1.5),
    ("process.schedule", "linear", "process.wrapped_ve.schedule", "linear"),
    ("process.n_images", 3, "process.wrapped_ve.n_images", 3),
    ("net.hidden", 16, "net.mlp.hidden", 16), ("net.depth", 2, "net.mlp.depth", 2),
    ("net.n_frequencies", 2, "net.mlp.n_frequencies", 2), ("net.noise_dim", 8, "net.mlp.noise_dim", 8),
    ("train.lr", 0.01, "optim.lr", 0.01), ("train.lr_schedule", "constant", "optim.schedule", "constant"),
    ("train.grad_clip", 0, "optim.grad_clip", None), ("train.grad_clip", 2.0, "optim.grad_clip", 2.0),
    ("train.ema_rate", 0.9, "optim.ema_rate", 0.9), ("train.t_min", 0.1, "process.wrapped_ve.t_min", 0.1),
    ("train.log_every", 5, "train.log_interval", 5), ("train.figure_every", 6, "train.record_interval", 6),
    ("train.checkpoint_every", 7, "train.checkpoint_interval", 7), ("train.num_threads", 0, "train.threads", None),
    ("train.num_threads", 2, "train.threads", 2), ("train.steps", 30, "train.steps", 30),
    ("regularizer.kind", "fokker_planck", "objective.regularizer.kind", "fokker_planck"),
    ("regularizer.laplacian", "hutchinson", "objective.regularizer.laplacian", "hutchinson"),
    ("regularizer.consistency.delta_t", 0.2, "objective.regularizer.consistency.delta_t", 0.2),
]


@pytest.mark.parametrize("old, value, new, expected", TOY, ids=[f"{p[0]}={p[1]}" for p in TOY])
def test_toy_yaml_keys_map_onto_the_schema(old, value, new, expected):
    cfg = config.load([TOY_BASE], [f"{old}={json.dumps(value)}"])
    assert get(cfg, new) == expected


def test_every_alias_names_a_schema_key():
    def targets(table):
        for old, target in table.items():
            if isinstance(target, aliases.Mapped):
                names = list(target.targets)
            else:
                names = [target] if isinstance(target, str) else list(target[0])
            for name in names:
                yield old, name

    for dialect in ("published", "levels", "toy"):
        for old, name in targets(aliases.TABLES[dialect]):
            # a mapped section (model.unet -> net.unet) names a group of keys
            assert name in config.SCHEMA_KEYS or any(k.startswith(name + ".") for k in config.SCHEMA_KEYS), \
                (dialect, old, name)
        for key in aliases.PRESETS[dialect]:
            assert key in config.SCHEMA_KEYS, (dialect, key)


# ----------------------------------------------------------------------------- presets

def test_each_dialect_brings_the_defaults_its_old_schema_had(tmp_path):
    heat = config.load([write(tmp_path, "system: levels\nmodel:\n  K: 5\n", "heat.yaml")])
    assert (heat.optim.name, heat.optim.warmup, heat.process.type, heat.net.type) == ("adamw", 200, "levels", "unet")
    assert (heat.data.dataset, heat.data.npad, heat.data.val_size) == ("digits", 0, 0.15)
    assert (heat.data.hflip, heat.data.vflip) == (0.0, 0.0)
    assert (heat.train.epochs, heat.train.steps, heat.train.batch_size) == (None, 2000, 64)
    assert (heat.eval.n_plot, heat.eval.n_valid, heat.process.levels.K) == (36, 256, 5)
    # the `model` / `training` sections mark the heat YAML without `system:`
    assert config.load([write(tmp_path, "training:\n  n_iters: 9\n", "t.yaml")]).train.steps == 9
    toy = config.load([write(tmp_path, "system: toy\nseed: 3\n", "toy.yaml")])
    assert (toy.data.dataset, toy.process.type, toy.net.type) == ("two_atoms", "wrapped_ve", "mlp")
    assert (toy.optim.lr, toy.optim.schedule, toy.train.steps, toy.train.epochs) == (1e-3, "cosine", 12000, None)
    assert (toy.train.batch_size, toy.train.threads, toy.train.device, toy.sampler.steps) == (256, 1, "cpu", 200)
    assert (toy.eval.n_samples, toy.seed) == (2000, 3)
    # published keys bring no preset: the schema's defaults stay
    published = config.load([write(tmp_path, {"L": 3})])
    assert dataclasses.replace(published, process=DEFAULTS.process) == DEFAULTS
    # a file that sets a preset key wins over the preset
    assert config.load([DIGITS]).optim.warmup == 100


# ----------------------------------------------------------------------------- shipped files

JSON_FILES = sorted(p.name for p in (ROOT / "exps" / "json").glob("*.json"))
YAML_FILES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml")
                    if p.name != "specific_config.yaml")
TOY_EXPERIMENTS = sorted(p.parent.name for p in (ROOT / "configs" / "toy").glob("*/specific_config.yaml"))


@pytest.mark.parametrize("name", JSON_FILES)
def test_shipped_experiment_files_load(name):
    path = ROOT / "exps" / "json" / name
    assert aliases.dialect_of(json.loads(path.read_text())) == "published"
    cfg = config.load([path])
    if name == "gano-copied.json":
        # GANO's published volcano settings (tests/test_adversarial.py checks the adversarial keys)
        assert (cfg.optim.lr, cfg.train.batch_size, cfg.train.epochs, cfg.net.width) == (1e-4, 32, 300, 48)
        assert (cfg.optim.grad_clip, cfg.optim.ema_rate, cfg.data.hflip) == (None, None, 0.0)
    elif "copied" in name or "project" in name:
        # The published variances 30 and 0.01 (as standard deviations); the published file as it is builds
        # the published network, the project's form its own UNO.
        assert cfg.process.sigma_max == pytest.approx(30 ** 0.5, rel=1e-3)
        assert cfg.process.sigma_min == pytest.approx(0.01 ** 0.5)
        assert (cfg.process.num_levels, cfg.sampler.T, cfg.net.width, cfg.net.channel_multipliers) == \
            (500, 3, 128, [1, 2, 4, 4])
        assert cfg.net.type == ("legacy_uno" if "copied" in name else "uno")
        assert cfg.noise.type == ("white" if name.startswith("indep") else "grf")
        assert (cfg.data.hflip, cfg.data.vflip, cfg.net.factorization) == (0.5, 0.5, "tucker")
    if "64px" in name:
        assert cfg.data.resolution == 64 and cfg.noise.length_scale == float(name[:-5].split("scale")[1])
    if name == "ffm-grf.json":
        assert (cfg.process.type, cfg.sampler.name, cfg.sampler.steps) == ("interpolant", "heun_ode", 20)


@pytest.mark.parametrize("path", YAML_FILES)
def test_shipped_yaml_configs_load(path):
    import yaml

    raw = yaml.safe_load((ROOT / path).read_text())
    cfg = config.load([ROOT / path])
    system = raw.get("system")
    if system is None:
        # written in the schema itself: every key in the file is the value loaded
        for key, value in aliases.flatten(raw).items():
            assert get(cfg, key) == value, key
    elif system == "levels":
        m, t = raw["model"], raw["training"]
        assert cfg.process.type == "levels" and cfg.net.type == m["net"]
        assert (cfg.process.levels.forward, cfg.process.levels.K, cfg.sampler.delta) == (m["forward"], m["K"],
                                                                                          m["delta"])
        assert (cfg.train.epochs, cfg.train.steps, cfg.train.batch_size) == (None, t["n_iters"], t["batch_size"])
        assert (cfg.data.dataset, cfg.data.resolution) == (raw["data"]["dataset"], raw["data"]["image_size"])
        assert cfg.optim.name == "adamw" and cfg.optim.lr == raw["optim"]["lr"]
    else:
        assert system == "toy" and cfg.process.type == "wrapped_ve"
        assert cfg.process.wrapped_ve.sigma_max == raw["process"]["sigma_max"]
        assert cfg.optim.lr == raw["train"]["lr"] and cfg.train.steps == raw["train"]["steps"]


@pytest.mark.parametrize("name", TOY_EXPERIMENTS)
def test_toy_experiments_load_with_their_base(name):
    cfg = config.load([TOY_BASE, ROOT / "configs" / "toy" / name / "specific_config.yaml"])
    assert cfg.objective.regularizer.kind == name
    assert (cfg.data.dataset, cfg.net.mlp.hidden, cfg.optim.lr, cfg.optim.grad_clip) == ("two_atoms", 128, 1e-3, 1.0)
    if name.startswith("consistency"):
        assert cfg.objective.regularizer.burn_in == 1000 and cfg.objective.regularizer.consistency.n_samples == 4


# ----------------------------------------------------------------------------- errors

def test_unknown_key_names_key_source_and_closest_valid_name(tmp_path):
    path = write(tmp_path, {"sigma1": 3.0})
    with pytest.raises(UserError, match=rf"^{path}: unknown config key 'sigma1'.*did you mean 'sigma_1'"):
        config.load([path])
    with pytest.raises(UserError, match=r"^command line: rbf_scal=0\.1: unknown config key 'rbf_scal'.*"
                                        r"did you mean 'rbf_scale'"):
        config.load([ROOT / "exps" / "json" / "quickstart.json"], ["rbf_scal=0.1"])
    with pytest.raises(UserError, match=r"^command line: rbf_scal=0\.1: .*did you mean 'rbf_scale'"):
        config.load([], ["rbf_scal=0.1"])
    with pytest.raises(UserError, match=r"^command line: optim\.lrr=1: .*'optim\.lrr'.*did you mean 'optim\.lr'"):
        config.load([], ["optim.lrr=1"])
    with pytest.raises(UserError, match=r"'model\.KK'.*did you mean 'model\.K'"):
        config.load([DIGITS], ["model.KK=3"])
    with pytest.raises(UserError, match=r"'train\.stepz'.*did you mean 'train\.steps'"):
        config.load([TOY_BASE], ["train.stepz=3"])


def test_wrong_type_names_the_key_the_expected_type_and_the_source(tmp_path):
    path = write(tmp_path, {"L": "many"})
    with pytest.raises(UserError, match=rf"^{path}: config key 'process\.num_levels': expected int, got \"many\""):
        config.load([path])
    with pytest.raises(UserError, match=r"^command line: Ntest=eight: config key 'eval\.n_samples': expected int"):
        config.load([], ["Ntest=eight"])
    with pytest.raises(UserError, match=r"'optim\.grad_clip': expected float or null"):
        config.load([], ["optim.grad_clip=abc"])
    with pytest.raises(UserError, match=r"'net\.channel_multipliers\[1\]': expected int"):
        config.load([], ["mult_dims=[1,x]"])
    with pytest.raises(UserError, match=r"'data\.atoms\.symmetrize': expected bool"):
        config.load([TOY_BASE], ["data.symmetrize=perhaps"])


def test_wrong_type_of_a_converted_alias_names_the_key():
    with pytest.raises(UserError, match=r"command line: white_noise=perhaps: config key 'white_noise': expected bool"):
        config.load([], ["white_noise=perhaps"])
    assert config.load([], ["white_noise=true"]).noise.type == "white"


def test_levels_overrides_accept_a_leading_config_prefix():
    assert config.load([DIGITS], ["config.training.sampling_freq=7"]).train.figure_interval == 7


def test_choices_ranges_and_syntax_are_checked(tmp_path):
    with pytest.raises(UserError, match=r"net\.type must be one of uno, fno, unet, mlp, legacy_uno; got 'resnet'"):
        config.load([], ["arch=resnet"])
    with pytest.raises(UserError, match=r"process\.sigma_max > process\.sigma_min > 0"):
        config.load([], ["sigma_1=0.01", "sigma_L=1"])
    with pytest.raises(UserError, match=r"objective\.regularizer\.kind must be one of"):
        config.load([TOY_BASE], ["regularizer.kind=magic"])
    with pytest.raises(UserError, match=r"data\.hflip is a probability"):
        config.load([], ["data.hflip=1.5"])
    with pytest.raises(UserError, match="not of the form"):
        config.load([], ["L"])
    with pytest.raises(UserError, match="not found"):
        config.load([tmp_path / "missing.json"])
    with pytest.raises(UserError, match=r"unknown system 'levelz'"):
        config.load([write(tmp_path, "system: levelz\n", "s.yaml")])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match=rf"^cannot parse config file {tmp_path / 'bad.json'}: line 1, column 2"):
        config.load([tmp_path / "bad.json"])
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="must hold a mapping"):
        config.load([tmp_path / "list.json"])


def test_combinations_are_checked():
    # the toy is all three of two_atoms data, the wrapped VE process and the MLP, or none of them
    for item in ("data.dataset=two_atoms", "process.type=wrapped_ve", "net.type=mlp"):
        with pytest.raises(UserError, match=r"two_atoms with process\.type=wrapped_ve and net\.type=mlp"):
            config.load([], [item, "train.epochs=null", "train.steps=5"])
    with pytest.raises(UserError, match="all three or none"):
        config.load([TOY_BASE], ["net.type=unet"])
    # exactly one of epochs and steps; the toy stream counts steps
    with pytest.raises(UserError, match=r"exactly one of train\.epochs and train\.steps"):
        config.load([], ["train.steps=5"])
    with pytest.raises(UserError, match=r"exactly one of train\.epochs and train\.steps"):
        config.load([], ["train.epochs=null"])
    with pytest.raises(UserError, match="stream"):
        config.load([TOY_BASE], ["train.epochs=3", "train.steps=null"])
    assert config.load([], ["train.epochs=null", "train.steps=5"]).train.steps == 5
    # the uniform prior of the toy is checked against its tolerance, with the smallest sufficient sigma_max
    with pytest.raises(UserError, match=r"prior_tolerance.*sigma_max >= 0\.6"):
        config.load([TOY_BASE], ["process.sigma_max=0.2"])
    assert config.load([TOY_BASE], ["process.sigma_max=0.2", "process.prior=exact"]).process.wrapped_ve.prior == \
        "exact"
    # class labels need labelled images and the U-Net
    starter = ROOT / "configs" / "starter" / "rectified_flow_digits.yaml"
    assert config.load([starter], ["data.conditional=true"]).data.conditional is True
    with pytest.raises(UserError, match=r"data\.conditional needs labelled images"):
        config.load([starter], ["data.conditional=true", "net.type=fno"])
    with pytest.raises(UserError, match=r"data\.conditional needs labelled images"):
        config.load([], ["data.conditional=true", "net.type=unet"])           # volcano fields


# ----------------------------------------------------------------------------- saving, differences, help

@pytest.mark.parametrize("files, overrides", [
    ([], ["L=11", "factorization=tucker", "mult_dims=[1,2]"]),
    ([DIGITS], ["model.forward=fixed_random", "training.n_eval=16"]),
    ([TOY_BASE, ROOT / "configs" / "toy" / "consistency" / "specific_config.yaml"], ["train.grad_clip=0"]),
])
def test_saved_config_round_trips(tmp_path, files, overrides):
    cfg = config.load(files, overrides)
    config.save(cfg, tmp_path / "config.json")
    again = config.from_dict(json.loads((tmp_path / "config.json").read_text()))
    assert again == cfg
    with pytest.raises(UserError, match=r"^the run: unknown config key 'optim\.lrr'"):
        config.from_dict({**config.to_dict(cfg), "optim": {"lrr": 1}}, source="the run")


@pytest.mark.parametrize("system", ["toy", "heat_digits"])
def test_config_json_of_a_train_py_run_reloads_to_the_same_config(trained, system):
    from systems import SYSTEMS

    files, overrides = SYSTEMS[system]
    saved = json.loads((trained(system) / "config.json").read_text())
    assert config.from_dict(saved) == config.load([ROOT / f for f in files], [*overrides, "train.threads=1"])


def test_differences_name_the_changed_keys():
    a = config.to_dict(config.load([], ["L=11"]))
    b = config.to_dict(config.load([], ["L=12", "train.threads=3", "mult_dims=[1,2]"]))
    assert config.differences(a, b) == ["net.channel_multipliers", "process.num_levels", "train.threads"]
    assert config.differences(a, b, ignore=("train.threads",)) == ["net.channel_multipliers", "process.num_levels"]
    assert config.differences(a, a) == []


def test_field_help_documents_every_key():
    rows = {name: (typ, default, doc) for name, typ, default, doc in config.field_help()}
    assert config.SCHEMA_KEYS <= set(rows)
    for key in config.SCHEMA_KEYS:
        typ, default, doc = rows[key]
        assert doc and typ != "group", key
        assert json.loads(default) == get(DEFAULTS, key), key
    assert "one of: ve, interpolant, levels, wrapped_ve" in rows["process.type"][2]
    assert math.isclose(json.loads(rows["process.sigma_max"][1]), DEFAULTS.process.sigma_max)


def test_train_help_config_lists_every_field():
    out = subprocess.run([sys.executable, "train.py", "--help-config"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    for name, typ, *_ in config.field_help():
        if typ != "group":
            assert f"  {name} " in out.stdout, name
