import json
import subprocess
import sys
from pathlib import Path

import pytest

from model_code import config
from model_code.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, data, name="exp.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_defaults_file_and_overrides_apply_in_order(tmp_path):
    path = write(tmp_path, {"L": 7, "lr": 0.01, "_comment": "ignored"})
    args = config.load(path, ["lr=0.5", "mult_dims=[1,2]"])
    assert args.L == 7 and args.lr == 0.5 and args.mult_dims == [1, 2]
    assert args.batch_size == config.Arguments().batch_size


def test_yaml_files_are_read(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("L: 9\nwhite_noise: true\n")
    args = config.load(str(path))
    assert args.L == 9 and args.white_noise is True


def test_unknown_key_names_key_and_closest_valid_name(tmp_path):
    path = write(tmp_path, {"sigma1": 3.0})
    with pytest.raises(UserError, match=r"unknown config key 'sigma1'.*did you mean 'sigma_1'"):
        config.load(path)
    with pytest.raises(UserError, match=r"unknown config key 'rbf_scal'.*command line.*'rbf_scale'"):
        config.load(None, ["rbf_scal=0.1"])


def test_wrong_type_names_the_key(tmp_path):
    with pytest.raises(UserError, match=r"config key 'L'"):
        config.load(write(tmp_path, {"L": "many"}))
    with pytest.raises(UserError, match=r"config key 'white_noise'"):
        config.load(None, ["white_noise=perhaps"])


def test_choices_and_ranges_are_checked(tmp_path):
    with pytest.raises(UserError, match="arch"):
        config.load(None, ["arch=resnet"])
    with pytest.raises(UserError, match="sigma_1 > sigma_L"):
        config.load(None, ["sigma_1=0.01", "sigma_L=1"])
    with pytest.raises(UserError, match="not of the form"):
        config.load(None, ["L"])
    with pytest.raises(UserError, match="not found"):
        config.load(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot parse"):
        config.load(str(tmp_path / "bad.json"))


def test_saved_config_round_trips(tmp_path):
    args = config.load(None, ["L=11", "factorization=tucker"])
    config.save(args, tmp_path / "config.json")
    again = config.from_dict(json.loads((tmp_path / "config.json").read_text()))
    assert again == args


@pytest.mark.parametrize("name", ["indep-copied", "rbf-copied", "quickstart", "rbf-64px-scale0.05",
                                  "rbf-64px-scale0.1", "rbf-64px-scale0.2"])
def test_shipped_experiment_files_load(name):
    args = config.load(str(ROOT / "exps" / "json" / f"{name}.json"))
    if "copied" in name:
        # The published variances 30 and 0.01, converted to standard deviations.
        assert args.sigma_1 == pytest.approx(30 ** 0.5, rel=1e-3)
        assert args.sigma_L == pytest.approx(0.01 ** 0.5)
        assert (args.L, args.T, args.d_co_domain, args.mult_dims) == (500, 3, 128, [1, 2, 4, 4])
        assert args.white_noise is (name == "indep-copied")
    if "64px" in name:
        assert args.resolution == 64 and args.rbf_scale == float(name.split("scale")[1])


def test_train_help_lists_every_field():
    out = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    for name, *_ in config.field_help():
        assert f"  {name} " in out.stdout, name
