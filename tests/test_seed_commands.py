"""The published codes' command lines, typed as their READMEs give them: each works here (with one note line
saying what the new form is) or ends in one line saying what to type instead."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import helpers
from systems import SYSTEMS
from test_launchers import Sandbox

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
HEAT_README_DIGITS = "configs/digits/default_digits_configs.py"
# heat_digits of systems.py: trains in seconds on one core; the seed's overrides come after these.
TINY = [*SYSTEMS["heat_digits"][1], "train.steps=2", "train.tensorboard=true"]


def run(args, cwd, **env):
    return subprocess.run([PY, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


@pytest.fixture(scope="module")
def heat_run(tmp_path_factory):
    """The heat README's training command with its .py config and both spellings of its override flags."""
    run_dir = tmp_path_factory.mktemp("seed") / "runs" / "digits" / "default"
    proc = run(["train.py", "--config", HEAT_README_DIGITS, "--workdir", run_dir, "--quiet", *TINY,
                "config.training.sampling_freq=2", "--config.training.snapshot_freq_for_preemption=1"], ROOT)
    return proc, run_dir


# ------------------------------------------------------------------------------ train.py: the heat README

def test_heat_training_command_runs_with_one_note_per_old_spelling(heat_run):
    proc, run_dir = heat_run
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[:3] == [
        f"config: {HEAT_README_DIGITS} is configs/digits/default_digits_configs.yaml here",
        "config: config.training.sampling_freq=2 is the override training.sampling_freq=2 here",
        "config: --config.training.snapshot_freq_for_preemption=1 is the override "
        "training.snapshot_freq_for_preemption=1 here"]
    import json

    saved = json.loads((run_dir / "config.json").read_text())
    # training.sampling_freq / snapshot_freq_for_preemption are the heat YAML's figure and checkpoint intervals.
    assert saved["train"]["figure_interval"] == 2 and saved["train"]["checkpoint_interval"] == 1
    assert saved["process"]["levels"]["K"] == 4 and saved["data"]["dataset"] == "digits"


def test_training_prints_where_tensorboard_finds_the_events(heat_run):
    proc, run_dir = heat_run
    assert proc.returncode == 0, proc.stderr
    assert f"tensorboard: tensorboard --logdir {run_dir / 'tb'}" in proc.stderr.splitlines()
    assert any(f.name.startswith("events.out.tfevents") for f in (run_dir / "tb").iterdir())


def test_mnist_command_of_the_heat_readme_reads_the_yaml(monkeypatch, capsys):
    import train
    from model_code import config

    monkeypatch.chdir(ROOT)
    cli = train.parse_args(["--config", "configs/mnist/default_mnist_configs.py", "--workdir", "runs/mnist/default",
                            "training.snapshot_freq_for_preemption=100", "config.training.sampling_freq=500"])
    assert capsys.readouterr().err.splitlines() == [
        "config: configs/mnist/default_mnist_configs.py is configs/mnist/default_mnist_configs.yaml here",
        "config: config.training.sampling_freq=500 is the override training.sampling_freq=500 here"]
    assert cli.config == ["configs/mnist/default_mnist_configs.yaml"] and cli.savedir == "runs/mnist/default"
    cfg = config.load(cli.config, cli.overrides)
    assert (cfg.data.dataset, cfg.process.levels.K) == ("mnist", 100)
    assert (cfg.train.checkpoint_interval, cfg.train.figure_interval) == (100, 500)


def _train_error(capsys, *argv):
    import train

    code, lines = helpers.cli_exit(capsys, train.main, "train.py", *argv)
    assert code == 2 and len(lines) == 1, lines
    return lines[0]


def test_an_existing_python_config_is_refused_naming_the_yaml(tmp_path, capsys):
    (tmp_path / "exp.py").write_text("def get_config():\n    return None\n")
    (tmp_path / "exp.yaml").write_text("system: levels\n")
    assert _train_error(capsys, "--config", tmp_path / "exp.py", "--savedir", tmp_path / "run") == (
        f"train.py: error: config file {tmp_path / 'exp.py'} is Python code, which is not run here (the "
        f"inverse-heat code's configs are YAML here): use --config {tmp_path / 'exp.yaml'}")
    (tmp_path / "exp.yaml").unlink()
    assert _train_error(capsys, "--config", tmp_path / "exp.py", "--savedir", tmp_path / "run").endswith(
        ": write its settings as a YAML or JSON file (every key: docs/config.md)")
    assert not (tmp_path / "run").exists()


def test_a_copied_python_config_of_a_shipped_name_points_at_the_shipped_yaml(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    (tmp_path / "default_mnist_configs.py").write_text("x = 1\n")
    assert _train_error(capsys, "--config", tmp_path / "default_mnist_configs.py", "--savedir", tmp_path / "run"
                        ).endswith(": use --config configs/mnist/default_mnist_configs.yaml")


def test_a_missing_python_config_with_two_stand_ins_names_both(tmp_path, capsys):
    for suffix in (".yaml", ".json"):
        (tmp_path / f"exp{suffix}").write_text("{}\n")
    assert _train_error(capsys, "--config", tmp_path / "exp.py", "--savedir", tmp_path / "run") == (
        f"train.py: error: config file not found: {tmp_path / 'exp.py'} (give one of {tmp_path / 'exp.yaml'} or "
        f"{tmp_path / 'exp.json'})")


def test_a_missing_config_says_did_you_mean_with_the_closest_shipped_files(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert _train_error(capsys, "--config", "configs/mnist/default_mnist_config.yaml", "--savedir", "unused") == (
        "train.py: error: config file not found: configs/mnist/default_mnist_config.yaml (did you mean "
        "configs/mnist/default_mnist_configs.yaml?)")
    assert _train_error(capsys, "--config", "configs/mnist/mnist.yaml", "--savedir", "unused") == (
        "train.py: error: config file not found: configs/mnist/mnist.yaml (did you mean "
        "configs/mnist/small_mnist_configs.yaml or configs/mnist/default_mnist_configs.yaml?)")
    # Same name in several folders: the one in the folder typed comes first.
    assert _train_error(capsys, "--config", "configs/toy/none/specific_configs.yaml", "--savedir", "unused").startswith(
        "train.py: error: config file not found: configs/toy/none/specific_configs.yaml (did you mean "
        "configs/toy/none/specific_config.yaml, ")
    assert _train_error(capsys, "--config", "json/quickstart.json", "--savedir", "unused").endswith(
        "(did you mean exps/json/quickstart.json?)")
    assert not (ROOT / "unused").exists()


def test_a_missing_config_suggests_the_files_beside_it(tmp_path, capsys):
    (tmp_path / "my_experiment.yaml").write_text("{}\n")
    assert _train_error(capsys, "--config", tmp_path / "my_experimnt.yaml", "--savedir", tmp_path / "run") == (
        f"train.py: error: config file not found: {tmp_path / 'my_experimnt.yaml'} (did you mean "
        f"{tmp_path / 'my_experiment.yaml'}?)")
    assert _train_error(capsys, "--config", tmp_path / "zzzzzzzzzzzz.yaml", "--savedir", tmp_path / "run") == (
        f"train.py: error: config file not found: {tmp_path / 'zzzzzzzzzzzz.yaml'}")


def test_config_flag_without_equals_says_what_to_type(tmp_path, capsys):
    assert _train_error(capsys, "--config", ROOT / "configs/digits/default_digits_configs.yaml", "--workdir",
                        tmp_path / "run", "--config.training.sampling_freq", "2") == (
        "train.py: error: --config.training.sampling_freq: write the override as training.sampling_freq=2 "
        "(key=value, one word)")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ evaluate.py and sample.py

EVALUATE = ["--config", "configs/cifar10/default_cifar10_configs.py", "--checkpoint", "0", "--dataset_name=cifar10",
            "--experiment_name=experiment1", "--param_name=default"]
EVALUATE_NOTE = "evaluate.py: note: evaluate.py is eval.py here (python eval.py --help); running it"


def test_evaluate_py_is_eval_py_fid_command_says_what_it_needs(heat_run, tmp_path):
    _, run_dir = heat_run
    proc = run([ROOT / "evaluate.py", *EVALUATE[:2], "--workdir", run_dir, *EVALUATE[2:], "--mode=fid",
                "--delta=0.013", "--dataset_name_cleanfid=cifar10", "--dataset_split=train", "--batch_size=128",
                "--num_gen=50000"], tmp_path)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and lines[0] == EVALUATE_NOTE, proc.stderr
    assert lines[-1].startswith("eval.py: error: --mode fid needs --fid_weights FILE"), proc.stderr
    assert "Traceback" not in proc.stderr
    # The exit status is eval.py's: 2 for a run folder that is not there, as from eval.py itself.
    for script in ("evaluate.py", "eval.py"):
        proc = run([ROOT / script, "--workdir", tmp_path / "nope", "--mode=elbo"], tmp_path)
        assert proc.returncode == 2 and proc.stderr.splitlines()[-1] == (
            f"eval.py: error: run folder not found: {tmp_path / 'nope'}"), proc.stderr


def test_evaluate_py_elbo_command_writes_the_result_table(heat_run, tmp_path):
    _, run_dir = heat_run
    work = tmp_path / "copy"
    shutil.copytree(run_dir, work)
    proc = run([ROOT / "evaluate.py", *EVALUATE[:2], "--workdir", work, *EVALUATE[2:], "--mode=elbo", "--delta=0.013",
                "--dataset_split=train", "--batch_size=128", "--num_gen=50000", "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[0] == EVALUATE_NOTE
    import json

    table = json.loads((tmp_path / "runs/cifar10/evaluation_results/experiment1/elbo_results.json").read_text())
    assert list(table) == ["default"]
    assert (work / "eval" / "default" / "metrics.json").is_file()


@pytest.mark.parametrize("flags", [[], ["--same_init"], ["--share_noise"], ["--interpolate", "--num_points=20"]],
                         ids=["random", "same_init", "share_noise", "interpolate"])
def test_sample_py_takes_the_heat_readme_flags(heat_run, tmp_path, capsys, flags):
    _, run_dir = heat_run
    work = tmp_path / "run"
    shutil.copytree(run_dir, work)
    sample = helpers.load_script(ROOT / "sample.py", "sample_for_seed_commands")
    code, lines = helpers.cli_exit(capsys, sample.main, "sample.py", "--config",
                                   "configs/mnist/default_mnist_configs.py", "--workdir", work, "--checkpoint", "0",
                                   "--batch_size=9", *flags, "--quiet")
    assert code == 0, lines
    mode = flags[0][2:] if flags else "random"
    (folder,) = (work / "additional_samples").iterdir()
    assert folder.name.startswith(f"{mode}-latest-")
    import numpy as np

    assert len(np.load(folder / "samples.npz")["samples"]) == (20 if flags[1:] else 9)


# ------------------------------------------------------------------------------ exps/launch_eval.py

@pytest.fixture
def sandbox(tmp_path):
    sb = Sandbox(tmp_path)
    shutil.copy2(ROOT / "exps" / "launch_eval.py", sb.exps / "launch_eval.py")
    (sb.savedir / "exp" / "42").mkdir(parents=True)
    return sb


@pytest.mark.parametrize("flags", [["--mode=generate"], ["--checkpoint=model.w_total.pt", "--mode=plot"],
                                   ["--checkpoint=model.w_total.pt", "--mode=superres"]])
def test_bash_launch_eval_py_runs_launch_eval_sh(sandbox, flags):
    r = sandbox.run("launch_eval.py", "sbgm", "exp/42", *flags)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0] == ("launch_eval.py: note: launch_eval.py is launch_eval.sh here; running bash "
                                        f"{sandbox.exps / 'launch_eval.sh'} sbgm exp/42 {' '.join(flags)}")
    run_dir = sandbox.savedir / "exp" / "42"
    (call,) = sandbox.calls()
    assert call["argv"] == ["eval.py", f"--exp_name={run_dir}", f"--savedir={run_dir}/eval", *flags]
    assert Path(call["cwd"]) == sandbox.root


def test_bash_launch_eval_py_passes_on_the_exit_status(sandbox):
    assert sandbox.run("launch_eval.py", "sbgm", "exp/42", "--mode=plot", STUB_RC=3).returncode == 3
    r = sandbox.run("launch_eval.py", "sbgm", "missing/1", "--mode=plot")
    assert r.returncode == 2 and r.stderr.splitlines()[-1] == (
        f"launch_eval.sh: no run folder {sandbox.savedir / 'missing' / '1'}")


def test_python_launch_eval_py_says_to_run_it_with_bash():
    proc = run(["launch_eval.py", "sbgm", "exp/42", "--mode=generate"], ROOT / "exps")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["launch_eval.py: error: this is a bash script (launch_eval.sh here): "
                                        "type bash launch_eval.sh sbgm exp/42 --mode=generate"]
    check = subprocess.run(["bash", "-n", str(ROOT / "exps" / "launch_eval.py")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_main_sh_maps_a_heat_py_config_to_its_yaml(tmp_path):
    sb = Sandbox(tmp_path)
    (sb.root / "configs" / "mnist").mkdir(parents=True)
    (sb.root / "configs" / "mnist" / "default_mnist_configs.yaml").write_text("system: levels\n")
    r = sb.run("main.sh", "sbgm", "mnist", "configs/mnist/default_mnist_configs.py", "--quiet", cwd=sb.root,
               RUN_LOCAL="1")
    assert r.returncode == 0, r.stderr
    assert ("main.sh: note: configs/mnist/default_mnist_configs.py is configs/mnist/default_mnist_configs.yaml "
            "here") in r.stderr.splitlines()
    (call,) = sb.calls()
    assert str(sb.root / "configs" / "mnist" / "default_mnist_configs.yaml") in call["argv"]
    missing = sb.run("main.sh", "sbgm", "x", "configs/nowhere.py", cwd=sb.root, RUN_LOCAL="1")
    assert missing.returncode == 2
    assert "config file 'configs/nowhere.py' not found" in missing.stderr.splitlines()[-1]
