"""What a user sees for a broken config: one line on stderr naming where the mistake is.

Most cases run the real entry script (train.py) and check: exit status 2, exactly one
line `train.py: error: ...` on stderr, no traceback, the expected pieces (file, line and
column for a syntax error; the command line and the `key=value` argument, or the file, for
a wrong type), and that the run folder was not created.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_code import config
from model_code.config_files import yaml_error_line
from model_code.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = "exps/json/quickstart.json"
TOY_BASE = "configs/toy/base_config.yaml"
DIGITS = "configs/digits/default_digits_configs.yaml"

# A YAML file whose flow sequence opened on line 2 is never closed: PyYAML reports the
# problem at line 3, column 1 (1-based) and the sequence's start at line 2, column 7.
BAD_YAML = "system: toy\nseed: [1\n"
# A JSON file with a missing value: line 4, column 1.
BAD_JSON = '{\n  "L": 9,\n  "lr": \n}\n'


def run_train(*args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(out, folder: Path, *pieces, absent=()):
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and out.stderr.endswith("\n"), out.stderr
    assert lines[0].startswith("train.py: error: "), out.stderr
    for piece in pieces:
        assert piece in lines[0], (piece, lines[0])
    for piece in absent:
        assert piece not in lines[0], (piece, lines[0])
    assert not folder.exists(), f"{folder} was created for a config error"
    return lines[0]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- published JSON / any file

def test_cfg_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = write(tmp_path, "exp.yaml", "L: 9\n" + BAD_YAML.replace("system: toy\n", ""))
    out = run_train("--cfg", path, "--savedir", tmp_path / "run")
    # "L: 9\nseed: [1\n": the problem is at line 3, column 1; the sequence starts at line 2, column 7.
    assert_one_line_error(out, tmp_path / "run", str(path), "line 3, column 1", "line 2, column 7")


def test_cfg_json_syntax_error_names_file_line_and_column(tmp_path):
    path = write(tmp_path, "exp.json", BAD_JSON)
    out = run_train("--cfg", path, "--savedir", tmp_path / "run")
    assert_one_line_error(out, tmp_path / "run", str(path), "line 4, column 1", "Expecting value")


def test_cfg_file_that_is_not_text_is_one_line(tmp_path):
    path = tmp_path / "exp.json"
    path.write_bytes(b'{"L": 9, "x": "\xff\xfe"}')
    out = run_train("--cfg", path, "--savedir", tmp_path / "run")
    assert_one_line_error(out, tmp_path / "run", str(path), "UTF-8")


def test_cfg_wrong_type_on_command_line_names_the_command_line(tmp_path):
    out = run_train("--cfg", QUICKSTART, "--savedir", tmp_path / "run", "Ntest=eight")
    assert_one_line_error(out, tmp_path / "run", "command line: Ntest=eight", "expected int", "'eval.n_samples'",
                          absent=("quickstart.json",))


def test_cfg_wrong_type_in_file_names_the_file(tmp_path):
    data = json.loads((ROOT / QUICKSTART).read_text())
    path = write(tmp_path, "exp.json", json.dumps({**data, "Ntest": "eight"}))
    out = run_train("--cfg", path, "--savedir", tmp_path / "run", "L=12")
    assert_one_line_error(out, tmp_path / "run", str(path), "'eval.n_samples'", "expected int", "eight",
                          absent=("command line",))


def test_unknown_key_suggests_the_closest_name(tmp_path):
    out = run_train("--config", QUICKSTART, "--savedir", tmp_path / "run", "rbf_scal=0.1")
    assert_one_line_error(out, tmp_path / "run", "command line: rbf_scal=0.1", "unknown config key 'rbf_scal'",
                          "did you mean 'rbf_scale'")


def test_combination_error_is_one_line(tmp_path):
    out = run_train("--config", QUICKSTART, "--savedir", tmp_path / "run", "train.steps=5")
    assert_one_line_error(out, tmp_path / "run", "exactly one of train.epochs and train.steps")


@pytest.mark.parametrize("item, pieces", [
    ("mult_dims=[1,x]", ("net.channel_multipliers[1]", "expected int")),
    ("grad_clip=abc", ("optim.grad_clip", "expected float or null")),
    ("L=[1,", ("cannot parse the value",)),
])
def test_cfg_other_bad_overrides_name_the_argument(item, pieces):
    with pytest.raises(UserError) as info:
        config.load([ROOT / QUICKSTART], ["L=12", item])
    message = str(info.value)
    assert message.startswith(f"command line: {item}: ") and "quickstart" not in message
    for piece in pieces:
        assert piece in message


def test_cfg_overrides_still_apply_in_order():
    cfg = config.load([ROOT / QUICKSTART], ["L=12", "L=13", "mult_dims=[1,2]"])
    assert cfg.process.num_levels == 13 and cfg.net.channel_multipliers == [1, 2]


# ---------------------------------------------------------------------------------------- the toy YAML

def test_toy_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = write(tmp_path, "specific.yaml", BAD_YAML)
    out = run_train("--config", TOY_BASE, "--config", path, "--workdir", tmp_path / "run")
    assert_one_line_error(out, tmp_path / "run", str(path), "line 3, column 1", "line 2, column 7")


def test_toy_wrong_type_on_command_line_names_the_command_line(tmp_path):
    out = run_train("--config", TOY_BASE, "--workdir", tmp_path / "run", "train.steps=many")
    assert_one_line_error(out, tmp_path / "run", "command line: train.steps=many", "expected int",
                          absent=("base_config",))


def test_toy_wrong_type_in_file_names_the_file(tmp_path):
    path = write(tmp_path, "specific.yaml", "system: toy\ntrain:\n  steps: many\n")
    out = run_train("--config", TOY_BASE, "--config", path, "--workdir", tmp_path / "run", "seed=3")
    assert_one_line_error(out, tmp_path / "run", str(path), "train.steps", "expected int",
                          absent=("command line",))


def test_toy_unknown_override_suggests_the_full_key():
    with pytest.raises(UserError, match=r"^command line: train\.stepz=1: .*'train\.stepz'.*'train\.steps'"):
        config.load([ROOT / TOY_BASE], ["train.stepz=1"])


def test_toy_combination_error_names_the_keys(tmp_path):
    out = run_train("--config", TOY_BASE, "--savedir", tmp_path / "run", "net.type=unet")
    assert_one_line_error(out, tmp_path / "run", "data.dataset=two_atoms", "net.type=mlp")


# ------------------------------------------------------------------------------- the heat / linear-map YAML

def test_levels_wrong_type_on_command_line_names_the_command_line(tmp_path):
    out = run_train("--config", DIGITS, "--workdir", tmp_path / "run", "model.K=abc")
    assert_one_line_error(out, tmp_path / "run", "command line: model.K=abc", "process.levels.K", "expected int",
                          absent=("default_digits",))


def test_levels_wrong_type_in_file_names_the_file(tmp_path):
    path = write(tmp_path, "exp.yaml", "system: levels\ndata:\n  image_size: big\n")
    out = run_train("--config", path, "--workdir", tmp_path / "run", "model.K=3")
    assert_one_line_error(out, tmp_path / "run", str(path), "data.resolution", "expected int",
                          absent=("command line",))


def test_levels_unknown_forward_process_is_one_line(tmp_path):
    out = run_train("--config", DIGITS, "--workdir", tmp_path / "run", "model.forward=spiral")
    assert_one_line_error(out, tmp_path / "run", "process.levels.forward=spiral", "heat")


def test_levels_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = write(tmp_path, "exp.yaml", "model:\n\tK: 3\n")
    with pytest.raises(UserError, match=r"exp\.yaml: line 2, column 1: .*cannot start any token"):
        config.load([path])


# ------------------------------------------------------------------------------------- the first file

@pytest.mark.parametrize("text", ["model:\n\tK: 3\n", BAD_YAML], ids=["levels", "toy"])
def test_first_config_file_yaml_syntax_error_names_line_and_column(tmp_path, text):
    path = write(tmp_path, "exp.yaml", text)
    out = run_train("--config", path, "--workdir", tmp_path / "run")
    where = "line 2, column 1" if "\t" in text else "line 3, column 1"
    assert_one_line_error(out, tmp_path / "run", str(path), where)


def test_missing_config_file_is_one_line(tmp_path):
    out = run_train("--config", tmp_path / "nope.yaml", "--savedir", tmp_path / "run")
    assert_one_line_error(out, tmp_path / "run", "config file not found", "nope.yaml")


def test_yaml_error_line_finds_the_mark_of_a_wrapped_error(tmp_path):
    import yaml
    from omegaconf import OmegaConf

    path = write(tmp_path, "exp.yaml", BAD_YAML)
    try:
        try:
            OmegaConf.load(path)
        except yaml.YAMLError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as err:
        line = yaml_error_line(path, err)
    assert line == (f"cannot parse config file {path}: line 3, column 1: did not find expected ',' or ']' "
                    "(while parsing a flow sequence that starts at line 2, column 7)")
    # Anything that is not a YAML error still gives one line naming the file.
    assert yaml_error_line(path, PermissionError(13, "Permission denied")) == \
        f"cannot read config file {path}: Permission denied"
