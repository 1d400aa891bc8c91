"""eval.py: one folder per evaluation, nothing overwritten without --overwrite, one writer per folder,
positive counts, and a clear word when a folder belongs to another system."""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from model_code import build, config, run_dir
from model_code.errors import UserError
from model_code.image_runs import folder_system

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import eval as eval_script  # noqa: E402

TINY = ["dataset=grf", "resolution=8", "npad=0", "grf_n_train=16", "grf_n_valid=8", "batch_size=8", "epochs=1",
        "record_interval=1", "Ntest=4", "val_batch_size=4", "L=4", "T=1", "arch=fno", "d_co_domain=8",
        "n_layers=2", "n_modes=3", "embedding_dim=8", "n_plot=2", "tensorboard=false"]
DEFAULT = "generate-w_total-annealed_langevin-T1"
DPM = "generate-w_total-dpm_solver_2m-steps5"

@pytest.fixture(scope="module")
def field_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("field") / "run"
    torch.set_num_threads(1)
    build.build_trainer(config.load(None, TINY), run, None, progress=False).fit()
    return run


def evaluate(run, *flags):
    return eval_script.main(["--exp_name", str(run), "--quiet", *flags])


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_names_hold_every_setting_that_changes_the_samples():
    name = eval_script.evaluation_name
    assert name("generate", "model.w_total.pt", "annealed_langevin", 4, {"T": 2}) == \
        "generate-w_total-annealed_langevin-T2"
    assert name("generate", "model.w_total.pt", "dpm_solver_2m", 5, {}, sigma_min=0.05) == \
        "generate-w_total-dpm_solver_2m-steps5-smin0.05"
    assert name("superres", "model.pt", "heun_ode", 8, {}, factor=4, ema=False, seed=7) == \
        "superres-latest-heun_ode-steps8-x4-raw-seed7"
    # sigma_min does not move Langevin's grid, so it does not name a different evaluation
    assert name("generate", "sub dir/model.mean_l2.pt", "annealed_langevin", 4, {"T": 1}, sigma_min=0.1) == \
        "generate-mean_l2-annealed_langevin-T1"


def test_evaluations_do_not_overwrite_each_other(field_run, capsys):
    out = field_run / "eval"
    assert evaluate(field_run, "--mode", "generate") == 0
    first = snapshot(out / DEFAULT)
    assert {"samples.npz", "metrics.json"} <= set(first)
    # another sampler: its own folder, the first untouched
    assert evaluate(field_run, "--mode", "generate", "--sampler", "dpm_solver_2m", "--steps", "5") == 0
    assert snapshot(out / DEFAULT) == first
    summary = json.loads((out / DPM / "metrics.json").read_text())
    assert summary["name"] == DPM and summary["sampler"] == "dpm_solver_2m" and len(summary["sigmas"]) == 5
    # the same settings again: refused, one line naming the folder and the ways out, nothing written
    with pytest.raises(UserError) as err:
        evaluate(field_run, "--mode", "generate")
    msg = str(err.value)
    assert str(out / DEFAULT) in msg and "--overwrite" in msg and "--tag" in msg and "\n" not in msg
    assert snapshot(out / DEFAULT) == first
    # --tag keeps both
    assert evaluate(field_run, "--mode", "generate", "--tag", "again") == 0
    assert (out / "again" / "samples.npz").is_file() and snapshot(out / DEFAULT) == first
    assert json.loads((out / "again" / "metrics.json").read_text())["name"] == "again"
    capsys.readouterr()


def test_plot_plots_every_evaluation_or_the_tagged_one(field_run):
    out = field_run / "eval"
    if not (out / DEFAULT / "samples.npz").exists():
        evaluate(field_run, "--mode", "generate")
    assert evaluate(field_run, "--mode", "superres", "--tag", "sr") == 0
    assert json.loads((out / "sr" / "metrics.json").read_text())["resolution"] == [16, 16]
    assert evaluate(field_run, "--mode", "plot", "--tag", "sr") == 0
    assert (out / "sr" / "final_stats.png").is_file() and not (out / DEFAULT / "final_stats.png").exists()
    assert evaluate(field_run, "--mode", "plot") == 0
    for folder in out.iterdir():
        if (folder / "samples.npz").exists():
            for fig in ("samples", "mean_sample", "final_stats"):
                assert (folder / f"{fig}.png").is_file(), (folder.name, fig)
    with pytest.raises(UserError, match="no evaluation 'nope'.*sr"):
        evaluate(field_run, "--mode", "plot", "--tag", "nope")
    with pytest.raises(UserError, match="--tag must be"):
        evaluate(field_run, "--mode", "generate", "--tag", "../elsewhere")


def test_overwrite_replaces_samples_and_drops_their_old_figures(field_run):
    out = field_run / "eval" / "ow"
    assert evaluate(field_run, "--mode", "generate", "--tag", "ow", "--Ntest", "2") == 0
    assert evaluate(field_run, "--mode", "plot", "--tag", "ow") == 0
    assert (out / "final_stats.png").is_file()
    assert evaluate(field_run, "--mode", "generate", "--tag", "ow", "--Ntest", "3", "--overwrite") == 0
    assert np.load(out / "samples.npz")["samples"].shape[0] == 3
    assert json.loads((out / "metrics.json").read_text())["n"] == 3
    assert not (out / "final_stats.png").exists() and not (out / "samples.png").exists()
    assert not (out / run_dir.LOCK_NAME).exists()


def test_metrics_json_holds_the_floor_interval(field_run):
    evaluate(field_run, "--mode", "generate", "--tag", "floors", "--Ntest", "2", "--overwrite")
    summary = json.loads((field_run / "eval" / "floors" / "metrics.json").read_text())
    m = summary["metrics"]
    for name in ("w_var", "w_skew", "w_total"):
        assert m[f"floor_{name}_p05"] < m[f"floor_{name}_p95"] and m[f"floor_{name}"] > 0
    assert "5th / 95th percentiles" in summary["floor_interval"] and summary["n_real"] == 8


def test_refused_rerun_is_one_line_and_exit_2(field_run):
    out = field_run / "eval"
    if not (out / DEFAULT / "samples.npz").exists():
        evaluate(field_run, "--mode", "generate")
    before = snapshot(out / DEFAULT)
    proc = subprocess.run([sys.executable, "eval.py", "--exp_name", str(field_run), "--mode", "generate", "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eval.py: error:") and "--overwrite" in lines[0], proc.stderr
    assert snapshot(out / DEFAULT) == before


def test_a_folder_held_by_another_live_process_is_refused(field_run, tmp_path):
    folder = field_run / "eval" / "held"
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, pathlib; from model_code import run_dir\n"
         "with run_dir.claim(sys.argv[1], owner='holder'):\n"
         "    pathlib.Path(sys.argv[2]).touch(); time.sleep(60)\n", str(folder), str(ready)], cwd=ROOT)
    try:
        deadline = time.time() + 30
        while not ready.exists():
            assert time.time() < deadline and holder.poll() is None
            time.sleep(0.1)
        with pytest.raises(UserError, match="in use by holder"):
            evaluate(field_run, "--mode", "generate", "--tag", "held")
        assert not (folder / "samples.npz").exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("flag", ["--Ntest", "--val_batch_size", "--steps"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_non_positive_counts_are_refused(field_run, flag, value):
    before = sorted(p.name for p in (field_run / "eval").iterdir()) if (field_run / "eval").exists() else []
    with pytest.raises(UserError, match=f"{flag} must be a positive integer; got {value}"):
        evaluate(field_run, "--mode", "generate", flag, value, "--tag", "never")
    with pytest.raises(UserError, match="--factor must be >= 1"):
        evaluate(field_run, "--mode", "superres", "--factor", value, "--tag", "never")
    after = sorted(p.name for p in (field_run / "eval").iterdir()) if (field_run / "eval").exists() else []
    assert after == before


def test_heat_and_toy_folders_are_named_with_their_modes(tmp_path):
    heat = tmp_path / "heat"
    (heat / "checkpoints-meta").mkdir(parents=True)
    (heat / "config.yaml").write_text("seed: 0\n")
    (heat / "checkpoints-meta" / "checkpoint.pth").write_bytes(b"x")
    toy = tmp_path / "toy"
    toy.mkdir()
    (toy / "config.yaml").write_text("seed: 0\n")
    (toy / "model.pt").write_bytes(b"x")
    (toy / "metrics.jsonl").write_text("")
    field = tmp_path / "field"
    field.mkdir()
    (field / "config.json").write_text("{}")
    assert [folder_system(f) for f in (heat, toy, field, tmp_path / "none")] == ["levels", "toy", "field", None]
    for mode in ("generate", "superres", "plot"):
        with pytest.raises(UserError) as err:
            eval_script.main(["--exp_name", str(heat), "--mode", mode])
        assert "heat / linear-transform work folder" in str(err.value) and "--mode elbo | fid" in str(err.value)
        assert "no checkpoint" not in str(err.value)
        with pytest.raises(UserError, match="toy run folder.*analyse_toy.py"):
            eval_script.main(["--exp_name", str(toy), "--mode", mode])
    for mode in ("elbo", "fid"):
        with pytest.raises(UserError, match="function-space .*--mode generate | superres | plot"):
            eval_script.main(["--mode", mode, "--workdir", str(field), "--fid_weights", "x.pt"])
        with pytest.raises(UserError, match="toy run folder"):
            eval_script.main(["--mode", mode, "--workdir", str(toy), "--fid_weights", "x.pt"])
    assert not (heat / "eval").exists() and not (toy / "eval").exists()


def test_heat_elbo_results_are_not_overwritten(heat_run, tmp_path):
    base = ["--mode", "elbo", "--workdir", str(heat_run), "--results_root", str(tmp_path), "--n_images", "16"]
    table = tmp_path / "digits" / "evaluation_results" / "default" / "elbo_results.json"
    assert eval_script.main(base) == 0
    assert eval_script.main(base + ["--delta", "0.02"]) == 0            # other settings: another key
    first = json.loads(table.read_text())
    assert set(first) == {"ckpt0-delta0.0125-valid-n16", "ckpt0-delta0.02-valid-n16"}
    before = table.read_bytes()
    with pytest.raises(UserError, match="already holds the elbo result 'ckpt0-delta0.0125-valid-n16'.*--overwrite"):
        eval_script.main(base)
    assert table.read_bytes() == before
    # an explicit --param_name is a key like any other
    assert eval_script.main(base + ["--param_name", "mine"]) == 0
    with pytest.raises(UserError, match="already holds the elbo result 'mine'"):
        eval_script.main(base + ["--param_name", "mine"])
    assert set(json.loads(table.read_text())) == set(first) | {"mine"}
    # --overwrite replaces (the same settings give the same value)
    assert eval_script.main(base + ["--overwrite"]) == 0
    assert json.loads(table.read_text())["ckpt0-delta0.0125-valid-n16"] == first["ckpt0-delta0.0125-valid-n16"]
    assert len((table.parent / "elbo.log").read_text().splitlines()) == 4
    for flag in ("--n_images", "--batch_size", "--num_gen"):
        with pytest.raises(UserError, match=f"{flag} must be a positive integer; got 0"):
            eval_script.main(["--mode", "elbo", "--workdir", str(heat_run), flag, "0"])
    assert not any(p.name == run_dir.LOCK_NAME for p in table.parent.iterdir())
