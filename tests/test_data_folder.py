"""A run folder remembers the data folder its training read, so that eval.py needs no DATA_DIR.

README's example trains with `DATA_DIR=data python train.py ...` and evaluates with a plain
`python eval.py --exp_name ...`; before the record the evaluation stopped with "the volcano
dataset needs a data folder".
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import eval as eval_script
from helpers import cli_exit
from model_code import build, config
from model_code.data import folder

ROOT = Path(__file__).resolve().parents[1]


def test_the_folder_is_recorded_absolute_in_provenance_and_the_checkpoint(trained):
    run = trained("ve_volcano")
    from model_code import checkpoint

    entry = json.loads((run / "provenance.json").read_text())[-1]
    assert os.path.isabs(entry["data_dir"])
    assert (Path(entry["data_dir"]) / "subset_128").is_dir()
    assert checkpoint.load(run / "model.pt")["data_dir"] == entry["data_dir"]


def test_eval_without_data_dir_reads_the_recorded_folder_and_says_so(trained, tmp_path, monkeypatch, capsys):
    run = trained("ve_volcano")
    recorded = json.loads((run / "provenance.json").read_text())[-1]["data_dir"]
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)                      # another directory than the training's
    status, err = cli_exit(capsys, eval_script.main, "eval.py", "--exp_name", run, "--mode", "generate",
                           "--Ntest", "4", "--savedir", tmp_path / "eval", "--quiet")
    assert status == 0, err
    assert f"eval.py: data: {recorded} (recorded by the run's training)" in err
    assert (tmp_path / "eval").is_dir() and any((tmp_path / "eval").glob("*/metrics.json"))


@pytest.mark.parametrize("how", ["flag", "DATA_DIR"])
def test_data_dir_and_the_flag_override_the_record(trained, tmp_path, monkeypatch, capsys, how):
    run = trained("ve_volcano")
    elsewhere = tmp_path / "moved"
    args = ["--exp_name", run, "--mode", "superres", "--factor", "2", "--Ntest", "2", "--savedir", tmp_path / "e",
            "--quiet"]
    monkeypatch.delenv("DATA_DIR", raising=False)
    if how == "flag":
        monkeypatch.setenv("DATA_DIR", str(tmp_path / "ignored"))   # the flag wins over DATA_DIR too
        args += ["--data_dir", elsewhere]
    else:
        monkeypatch.setenv("DATA_DIR", str(elsewhere))
    status, err = cli_exit(capsys, eval_script.main, "eval.py", *args)
    # The folder given is the one read: it does not exist, so the evaluation stops in one line naming it.
    assert status == 2
    assert err[-1].startswith(f"eval.py: error: data folder {elsewhere} does not exist"), err
    assert not (tmp_path / "e").exists()


def test_the_launchers_default_data_dir_does_not_hide_the_record(trained, tmp_path, monkeypatch, capsys):
    run = trained("ve_volcano")
    recorded = json.loads((run / "provenance.json").read_text())[-1]["data_dir"]
    default = str(tmp_path / "repo" / "data")                # what exps/env.sh fills in, and names
    monkeypatch.setenv("DATA_DIR", default)
    monkeypatch.setenv("DATA_DIR_DEFAULT", default)
    status, err = cli_exit(capsys, eval_script.main, "eval.py", "--exp_name", run, "--mode", "generate",
                           "--Ntest", "2", "--savedir", tmp_path / "e", "--quiet")
    assert status == 0, err
    assert f"eval.py: data: {recorded} (recorded by the run's training)" in err


def test_env_sh_names_its_default():
    out = subprocess.run(["bash", "-c", 'unset DATA_DIR DATA_DIR_DEFAULT; NO_VENV_ACTIVATE=1 source exps/env.sh; '
                                        'echo "$DATA_DIR|$DATA_DIR_DEFAULT"'],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert out == f"{ROOT / 'data'}|{ROOT / 'data'}"
    given = subprocess.run(["bash", "-c", 'NO_VENV_ACTIVATE=1 DATA_DIR=/elsewhere; export DATA_DIR; '
                                          'source exps/env.sh; echo "$DATA_DIR|$DATA_DIR_DEFAULT"'],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert given == f"/elsewhere|{ROOT / 'data'}"


def test_the_order_of_the_sources():
    env = {"DATA_DIR": "/given"}
    assert folder.for_evaluation("/flag", env, "/recorded") == ("/flag", "--data_dir", True)
    assert folder.for_evaluation(None, env, "/recorded") == ("/given", "DATA_DIR", False)
    assert folder.for_evaluation(None, {}, "/recorded") == ("/recorded", "recorded by the run's training", True)
    defaulted = {"DATA_DIR": "/repo/data", "DATA_DIR_DEFAULT": "/repo/data/"}
    assert folder.for_evaluation(None, defaulted, "/recorded")[0] == "/recorded"
    # Nothing recorded (a run trained before the record): the default, as before.
    assert folder.for_evaluation(None, defaulted, None) == ("/repo/data", "DATA_DIR (exps/env.sh's default)", False)
    assert folder.for_evaluation(None, {}, None) == (None, "DATA_DIR (exps/env.sh's default)", False)


def test_the_record_is_the_newest_start_then_the_checkpoint(tmp_path):
    starts = [{"data_dir": "/first"}, {"data_dir": None}, {"data_dir": "/second"}, {"time": "no record"}]
    (tmp_path / "provenance.json").write_text(json.dumps(starts))
    assert folder.recorded(tmp_path, {"data_dir": "/checkpoint"}) == "/second"
    (tmp_path / "provenance.json").write_text('[{"data_dir": "/tor')          # torn
    assert folder.recorded(tmp_path, {"data_dir": "/checkpoint"}) == "/checkpoint"
    (tmp_path / "provenance.json").unlink()
    assert folder.recorded(tmp_path, {"data_dir": "/checkpoint"}) == "/checkpoint"
    assert folder.recorded(tmp_path, {}) is None


@pytest.mark.parametrize("dataset, overrides, expected", [
    ("volcano", [], "DATA"), ("grf", [], None), ("digits", [], None), ("mnist", [], "DATA"),
    ("mnist", ["data.root=images"], "images"), ("folder", ["data.root=images", "data.resolution=8"], "images")])
def test_the_folder_a_data_set_reads_is_made_absolute(tmp_path, monkeypatch, dataset, overrides, expected):
    monkeypatch.chdir(tmp_path)
    cfg = config.load([], [f"data.dataset={dataset}", *overrides])
    got = build.data_folder(cfg, "DATA")
    assert got == (None if expected is None else str(tmp_path / expected))
    if dataset == "mnist" and not overrides:
        assert build.data_folder(cfg, None) == str(tmp_path / "data")          # the loader's own default


def test_readme_commands_as_written(tmp_path, volcano_dir):
    """The README's VE lines, typed in one directory: a relative DATA_DIR for training, none for eval.py."""
    shutil.copytree(volcano_dir, tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_DIR", "DATA_DIR_DEFAULT")}
    small = ["data.resolution=16", "data.max_examples=24", "train.batch_size=8", "train.epochs=1",
             "eval.n_samples=4", "eval.batch_size=4", "process.num_levels=4", "sampler.T=1",
             "net.type=fno", "net.width=8", "net.n_layers=2", "net.n_modes=4", "net.embedding_dim=16",
             "train.tensorboard=false", "train.device=cpu"]
    train = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "exps/json/quickstart.json"),
                            "--savedir", "results/quick/1", "--quiet", *small], cwd=tmp_path, capture_output=True,
                           text=True, env={**env, "DATA_DIR": "data"})
    assert train.returncode == 0, train.stderr
    for mode in (["--mode", "generate"], ["--mode", "superres", "--factor", "2"]):
        done = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--exp_name", "results/quick/1", *mode,
                               "--Ntest", "4", "--quiet"], cwd=tmp_path, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        assert f"eval.py: data: {tmp_path / 'data'} (recorded by the run's training)" in done.stderr
