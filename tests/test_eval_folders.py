"""eval.py: one folder per evaluation, nothing overwritten without --overwrite, one writer per folder,
positive counts, and for every system the modes that apply write their files while the others are a
one-line error with exit 2."""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import helpers
import pytest
import torch
from torch import nn

from model_code import run_dir
from model_code.errors import UserError

from systems import SYSTEMS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import eval as eval_script  # noqa: E402

DEFAULT = "generate-w_total-annealed_langevin-T1"
DPM = "generate-w_total-dpm_solver_2m-steps5"
APPLIES = {"ve_volcano": ("generate", "superres", "plot"), "interpolant_grf": ("generate", "superres", "plot"),
           "heat_digits": ("generate", "elbo", "fid", "frechet"),
           "linear_digits": ("generate", "elbo", "fid", "frechet"),
           "starter_digits": ("generate", "fid", "frechet"), "toy": ("score",),
           "gano_grf": ("generate", "superres", "plot")}
IMAGES = ("heat_digits", "linear_digits", "starter_digits")


def _clean_fid_here() -> bool:
    """--mode fid computes with clean-fid, which needs torchvision (.venv-vision); in .venv it is one error."""
    from model_code import fid

    try:
        fid.cleanfid()
    except UserError:
        return False
    return True


CLEAN_FID = _clean_fid_here()


@pytest.fixture(autouse=True)
def data_dir(volcano_dir, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(volcano_dir))


@pytest.fixture(scope="module")
def runs(trained, tmp_path_factory):
    return {name: _copy(trained, tmp_path_factory, name) for name in SYSTEMS}


def _copy(trained, tmp_path_factory, name):
    """A private copy of the session's trained run of `name` (this module writes into it)."""
    dest = tmp_path_factory.mktemp(f"copy_{name}") / name
    shutil.copytree(trained(name), dest)
    return dest


@pytest.fixture(scope="module")
def field_run(runs):
    return runs["ve_volcano"]


class _Features(nn.Module):
    def forward(self, x):
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], dim=1)


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("fid") / "tiny.pt"
    torch.jit.save(torch.jit.script(_Features()), str(path))
    return path


def evaluate(run, *flags):
    return eval_script.main(["--exp_name", str(run), "--quiet", *map(str, flags)])


def cli_exit(capsys, *argv):
    return helpers.cli_exit(capsys, eval_script.main, "eval.py", *argv)


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_names_hold_every_setting_that_changes_the_samples():
    from model_code.eval_fields import evaluation_name as name
    from model_code.eval_fields import generate_name
    from model_code.eval_images import elbo_name, sample_metric_name

    assert name("generate", "model.w_total.pt", "annealed_langevin", 4, {"T": 2}) == \
        "generate-w_total-annealed_langevin-T2"
    assert name("generate", "model.w_total.pt", "dpm_solver_2m", 5, {}, sigma_min=0.05) == \
        "generate-w_total-dpm_solver_2m-steps5-smin0.05"
    assert name("superres", "model.pt", "heun_ode", 8, {}, factor=4, ema=False, seed=7) == \
        "superres-latest-heun_ode-steps8-x4-raw-seed7"
    # sigma_min does not move Langevin's grid, so it does not name a different evaluation
    assert name("generate", "sub dir/model.mean_l2.pt", "annealed_langevin", 4, {"T": 1}, sigma_min=0.1) == \
        "generate-mean_l2-annealed_langevin-T1"
    assert name("generate", "120", "heun_ode", 3, {}) == "generate-step120-heun_ode-steps3"
    assert generate_name("generate", "model.pt", {"delta": 0.0125}) == "generate-latest-levels-delta0.0125"
    assert generate_name("score", "model.pt", {"n_steps": 200}, ema=False) == "score-latest-reverse_sde-steps200-raw"
    assert elbo_name("model.pt", 0.0125, "valid") == "elbo-latest-delta0.0125-valid"
    assert elbo_name("0", 0.02, "train", 16, seed=3) == "elbo-latest-delta0.02-train-n16-seed3"
    assert sample_metric_name("fid", "model.pt", {"delta": 0.0125}, 1000) == "fid-latest-levels-delta0.0125-gen1000"
    assert sample_metric_name("frechet", "model.pt", {"sampler": "heun_ode", "sigmas": [3, 2, 1]}, 8, "train",
                              sigma_min=0.5) == "frechet-latest-heun_ode-steps3-smin0.5-gen8-train"


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_every_system_gets_its_modes_and_a_clear_word_for_the_others(runs, system, fid_weights, capsys):
    run = runs[system]
    out = run.parent / "matrix"
    extra = {"fid": ["--fid_weights", fid_weights], "elbo": ["--n_images", "8"], "superres": ["--Ntest", "2"]}
    for mode in APPLIES[system]:
        flags = ("--mode", mode, "--Ntest", "4", "--savedir", out, *extra.get(mode, []))
        if mode == "fid" and not CLEAN_FID:
            with pytest.raises(UserError, match="clean-fid"):
                evaluate(run, *flags)
            continue
        assert evaluate(run, *flags) == 0, mode
    folders = {json.loads((d / "metrics.json").read_text())["mode"]: d for d in out.iterdir()}
    assert set(folders) == set(APPLIES[system]) - {"plot"} - (set() if CLEAN_FID else {"fid"})
    for mode, folder in folders.items():
        values = json.loads((folder / "metrics.json").read_text())["metrics"]
        assert values and all(np.isfinite(v) for v in values.values() if isinstance(v, float)), (mode, values)
        assert (folder / ("terms.npz" if mode == "elbo" else "samples.npz")).is_file()
    if system in IMAGES:
        assert (folders["generate"] / "samples.png").read_bytes()[:4] == b"\x89PNG"
    if "plot" in APPLIES[system]:
        assert (folders["generate"] / "final_stats.png").is_file()
    for mode in [m for m in eval_script.MODES if m not in APPLIES[system]]:
        status, lines = cli_exit(capsys, "--exp_name", run, "--mode", mode, "--fid_weights", fid_weights,
                                 "--savedir", out, "--quiet")
        assert status == 2 and len(lines) == 1, (mode, lines)
        assert lines[0].startswith(f"eval.py: error: --mode {mode} does not apply to {run}: it is a")
        assert lines[0].endswith(f"run; use --mode {'|'.join(APPLIES[system])}")
    assert {d.name for d in out.iterdir()} == {d.name for d in folders.values()}
    assert not (run / "eval").exists()


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
    assert summary["nfe"] == 5 and summary["checkpoint"] == "model.w_total.pt"
    # the same settings again: refused, one line naming the folder and the ways out, nothing written
    with pytest.raises(UserError) as err:
        evaluate(field_run, "--mode", "generate")
    msg = str(err.value)
    assert str(out / DEFAULT) in msg and "--overwrite" in msg and "--tag" in msg and "\n" not in msg
    assert snapshot(out / DEFAULT) == first
    # --tag keeps both, and the same seeds give the same samples
    assert evaluate(field_run, "--mode", "generate", "--tag", "again") == 0
    assert (out / "again" / "samples.npz").is_file() and snapshot(out / DEFAULT) == first
    assert json.loads((out / "again" / "metrics.json").read_text())["name"] == "again"
    a, b = np.load(out / DEFAULT / "samples.npz"), np.load(out / "again" / "samples.npz")
    assert np.array_equal(a["samples"], b["samples"]) and np.array_equal(a["seeds"], b["seeds"])
    assert len({a["samples"][i].tobytes() for i in range(len(a["samples"]))}) == len(a["samples"])
    # the refused rerun, as the shell sees it: one line, exit 2
    status, lines = cli_exit(capsys, "--exp_name", field_run, "--mode", "generate", "--quiet")
    assert status == 2 and len(lines) == 1 and lines[0].startswith("eval.py: error:") and "--overwrite" in lines[0]
    assert snapshot(out / DEFAULT) == first


def test_plot_plots_every_evaluation_or_the_tagged_one(field_run):
    out = field_run / "eval"
    assert evaluate(field_run, "--mode", "superres", "--tag", "sr", "--Ntest", "2") == 0
    assert json.loads((out / "sr" / "metrics.json").read_text())["resolution"] == [32, 32]
    assert evaluate(field_run, "--mode", "plot", "--tag", "sr") == 0
    assert (out / "sr" / "final_stats.png").is_file()
    # real validation fields next to generated ones, for a glance (make demo points at this figure)
    saved = np.load(out / "sr" / "samples.npz")
    assert saved["real_examples"].shape == (min(8, saved["real_var"].shape[0]), *saved["samples"].shape[1:])
    from PIL import Image

    with Image.open(out / "sr" / "real_vs_generated.png") as im:
        assert im.size[0] > 300 and im.size[1] > 200
    assert evaluate(field_run, "--mode", "plot") == 0
    for folder in out.iterdir():
        if (folder / "samples.npz").exists():
            for fig in ("samples", "mean_sample", "final_stats", "real_vs_generated"):
                assert (folder / f"{fig}.png").is_file(), (folder.name, fig)
    with pytest.raises(UserError, match="no evaluation 'nope'.*sr"):
        evaluate(field_run, "--mode", "plot", "--tag", "nope")
    with pytest.raises(UserError, match="--tag must be"):
        evaluate(field_run, "--mode", "generate", "--tag", "../elsewhere")


def test_plot_of_an_evaluation_without_real_examples_leaves_that_figure_out(field_run, capsys):
    out = field_run / "eval"
    assert evaluate(field_run, "--mode", "generate", "--tag", "old", "--Ntest", "2") == 0
    with np.load(out / "old" / "samples.npz") as data:             # as written before real_examples existed
        arrays = {k: data[k] for k in data.files if k != "real_examples"}
    np.savez(out / "old" / "samples.npz", **arrays)
    summary = json.loads((out / "old" / "metrics.json").read_text())
    del summary["files"]                                            # nor did the list of files
    (out / "old" / "metrics.json").write_text(json.dumps(summary))
    capsys.readouterr()
    assert evaluate(field_run, "--mode", "plot", "--tag", "old") == 0
    assert "real_vs_generated" not in capsys.readouterr().out
    assert (out / "old" / "samples.png").is_file() and not (out / "old" / "real_vs_generated.png").exists()


def test_real_vs_generated_shares_one_colour_scale(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from model_code import plotting

    shown = []
    monkeypatch.setattr(plotting, "save", lambda fig, path, exts: shown.append(fig) or [])
    real = torch.linspace(-1, 1, 4 * 64).reshape(4, 1, 8, 8)
    plotting.plot_real_vs_generated(real, 5 * real, tmp_path / "r", kind="real", n=3)
    images = [im for ax in shown[0].axes for im in ax.get_images()]
    assert len(images) == 6 and {im.get_clim() for im in images} == {images[0].get_clim()}
    assert images[0].get_clim() == pytest.approx((float(real[:3].min()), float(real[:3].max())))
    plotting.plot_real_vs_generated(torch.randn(2, 2, 8, 8), torch.randn(5, 2, 8, 8), tmp_path / "p", kind="phase")
    clims = {im.get_clim() for ax in shown[1].axes for im in ax.get_images()}
    assert clims == {(-np.pi, np.pi)}
    plt.close("all")


def test_overwrite_replaces_samples_and_drops_their_old_figures(field_run):
    out = field_run / "eval" / "ow"
    assert evaluate(field_run, "--mode", "generate", "--tag", "ow", "--Ntest", "2") == 0
    assert evaluate(field_run, "--mode", "plot", "--tag", "ow") == 0
    assert (out / "final_stats.png").is_file()
    first = np.load(out / "samples.npz")["samples"]
    assert evaluate(field_run, "--mode", "generate", "--tag", "ow", "--Ntest", "3", "--overwrite") == 0
    again = np.load(out / "samples.npz")["samples"]
    assert again.shape[0] == 3 and np.allclose(again[:2], first, atol=1e-5)     # sample k: seed + k, any batch
    assert json.loads((out / "metrics.json").read_text())["n"] == 3
    assert not (out / "final_stats.png").exists() and not (out / "samples.png").exists()
    assert not (out / "real_vs_generated.png").exists()
    assert not (out / run_dir.LOCK_NAME).exists()


def test_metrics_json_holds_the_floor_interval(runs):
    run = runs["interpolant_grf"]
    evaluate(run, "--mode", "generate", "--tag", "floors", "--Ntest", "2", "--overwrite")
    summary = json.loads((run / "eval" / "floors" / "metrics.json").read_text())
    m = summary["metrics"]
    for name in ("w_var", "w_skew", "w_total"):
        assert m[f"floor_{name}_p05"] < m[f"floor_{name}_p95"] and m[f"floor_{name}"] > 0
        assert m[f"{name}_x_floor"] == pytest.approx(m[name] / m[f"floor_{name}"])
    assert m["w_total"] == pytest.approx(m["w_var"] + m["w_skew"])
    assert "5th / 95th percentiles" in summary["floor_interval"] and summary["n_real"] == 16


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
            evaluate(field_run, "--mode", "generate", "--tag", "held", "--Ntest", "2")
        assert not (folder / "samples.npz").exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("flag", ["--Ntest", "--val_batch_size", "--steps", "--n_images"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_non_positive_counts_are_refused(field_run, flag, value):
    before = sorted(p.name for p in (field_run / "eval").iterdir()) if (field_run / "eval").exists() else []
    with pytest.raises(UserError, match=f"{flag} must be a positive integer; got {value}"):
        evaluate(field_run, "--mode", "generate", flag, value, "--tag", "never")
    with pytest.raises(UserError, match="--factor must be >= 1"):
        evaluate(field_run, "--mode", "superres", "--factor", value, "--tag", "never")
    after = sorted(p.name for p in (field_run / "eval").iterdir()) if (field_run / "eval").exists() else []
    assert after == before


def test_levels_elbo_results_are_not_overwritten(runs):
    run = runs["linear_digits"]
    base = ["--mode", "elbo", "--n_images", "16"]
    out = run / "eval"
    assert evaluate(run, *base) == 0
    assert evaluate(run, *base, "--delta", "0.02") == 0              # other settings: another folder
    names = {"elbo-latest-delta0.0125-valid-n16", "elbo-latest-delta0.02-valid-n16"}
    assert names <= {d.name for d in out.iterdir()}
    first = snapshot(out / "elbo-latest-delta0.0125-valid-n16")
    with pytest.raises(UserError, match="already holds an evaluation.*--overwrite"):
        evaluate(run, *base)
    assert snapshot(out / "elbo-latest-delta0.0125-valid-n16") == first
    # --param_name is the older spelling of --tag
    assert evaluate(run, *base, "--param_name", "mine") == 0
    with pytest.raises(UserError, match="mine already holds"):
        evaluate(run, *base, "--tag", "mine")
    # --overwrite replaces, and the same settings give the same value
    assert evaluate(run, *base, "--overwrite") == 0
    again = json.loads((out / "elbo-latest-delta0.0125-valid-n16" / "metrics.json").read_text())
    assert again["metrics"] == json.loads(first["metrics.json"])["metrics"]
    with pytest.raises(UserError, match="--delta must be positive"):
        evaluate(run, *base, "--delta", "0", "--tag", "never")
    with pytest.raises(UserError, match="--sampler does not apply to a levels run"):
        evaluate(run, "--mode", "generate", "--sampler", "heun_ode", "--tag", "never")
    assert not (out / "never").exists()


def test_the_heat_seeds_evaluation_command_line_fills_its_results_table(runs, tmp_path, capsys):
    """evaluate.py's published flags: --config (not needed), --workdir, --checkpoint 0, --dataset_name,
    --experiment_name, --param_name; each value lands in <results_root>/<dataset>/evaluation_results/<experiment>/."""
    run = runs["heat_digits"]
    root = tmp_path / "tables"
    seed = ["--config", "configs/digits/default_digits_configs.yaml", "--workdir", str(run), "--checkpoint", "0",
            "--dataset_name", "digits", "--experiment_name", "experiment1", "--mode", "elbo", "--n_images", "16",
            "--results_root", str(root), "--savedir", str(tmp_path / "eval"), "--quiet"]
    assert eval_script.main([*seed, "--param_name", "delta0.0125", "--delta", "0.0125"]) == 0
    assert eval_script.main([*seed, "--param_name", "delta0.02", "--delta", "0.02"]) == 0
    folder = root / "digits" / "evaluation_results" / "experiment1"
    table = json.loads((folder / "elbo_results.json").read_text())
    assert sorted(table) == ["delta0.0125", "delta0.02"]
    for key, name in (("delta0.0125", "delta0.0125"), ("delta0.02", "delta0.02")):
        saved = json.loads((tmp_path / "eval" / name / "metrics.json").read_text())["metrics"]
        assert table[key]["bpd"] == saved["bpd"]                  # the table holds the evaluation's own numbers
    assert table["delta0.0125"]["bpd"] != table["delta0.02"]["bpd"]
    assert len((folder / "elbo.log").read_text().splitlines()) == 2
    before = (folder / "elbo_results.json").read_text()
    # The same key in another evaluation folder: refused by the table before any work.
    status, lines = cli_exit(capsys, *seed, "--param_name", "delta0.02", "--delta", "0.02",
                             "--savedir", str(tmp_path / "elsewhere"))
    assert status == 2 and "already holds the elbo result 'delta0.02'" in lines[-1] and "--overwrite" in lines[-1]
    assert (folder / "elbo_results.json").read_text() == before       # nothing replaced
    assert not (tmp_path / "elsewhere" / "delta0.02").exists()
    with pytest.raises(UserError, match="--experiment_name adds elbo / fid / frechet results"):
        evaluate(run, "--mode", "generate", "--experiment_name", "x")


def test_a_mode_that_does_not_apply_is_one_line_from_the_shell(runs):
    proc = subprocess.run([sys.executable, "eval.py", "--exp_name", str(runs["toy"]), "--mode", "generate"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0] == f"eval.py: error: --mode generate does not apply to {runs['toy']}: it is a toy (wrapped_ve) " \
                       f"run; use --mode score"


def test_an_evaluation_killed_before_its_metrics_is_incomplete_then_skipped_replaced_and_never_mixed(
        field_run, monkeypatch, capsys):
    """A kill after the new samples.npz is in place and before metrics.json: the folder never holds the new
    samples beside the old metrics; plot skips it with a note; the same command then replaces it without
    --overwrite."""
    from model_code import eval_common, files

    out = field_run / "eval" / "half"
    assert evaluate(field_run, "--mode", "generate", "--tag", "whole", "--Ntest", "2", "--overwrite") == 0
    assert evaluate(field_run, "--mode", "generate", "--tag", "half", "--Ntest", "2", "--seed", "5") == 0
    real_write = files.atomic_write_text

    def killed_at_the_marker(path, text, **options):
        if Path(path).name == "metrics.json":
            raise KeyboardInterrupt                         # as kill -9 would, between the two files
        real_write(path, text, **options)

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(files, "atomic_write_text", killed_at_the_marker)
        evaluate(field_run, "--mode", "generate", "--tag", "half", "--Ntest", "3", "--seed", "6", "--overwrite")
    assert (out / "samples.npz").is_file() and not (out / "metrics.json").exists()       # old metrics gone first
    assert np.load(out / "samples.npz")["samples"].shape[0] == 3
    assert eval_common.folder_state(out) == "incomplete"
    assert not list(out.glob(".*.tmp*"))
    capsys.readouterr()
    assert evaluate(field_run, "--mode", "plot") == 0                       # the others are plotted
    err = capsys.readouterr().err
    assert f"skipping {out}: an incomplete evaluation" in err
    with pytest.raises(UserError, match="no evaluation 'half'"):
        evaluate(field_run, "--mode", "plot", "--tag", "half")
    assert evaluate(field_run, "--mode", "generate", "--tag", "half", "--Ntest", "4", "--seed", "7") == 0
    assert "holds an incomplete result" in capsys.readouterr().err
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["n"] == 4 and np.load(out / "samples.npz")["samples"].shape[0] == 4
    assert set(summary["files"]) == {"samples.npz"} and eval_common.folder_state(out) == "complete"
    assert evaluate(field_run, "--mode", "plot", "--tag", "half") == 0


def test_a_full_disk_while_an_evaluation_is_replaced_keeps_the_old_one_whole(field_run, monkeypatch, capsys):
    import errno
    import os

    from model_code import eval_common

    out = field_run / "eval" / "keep"
    assert evaluate(field_run, "--mode", "generate", "--tag", "keep", "--Ntest", "2") == 0
    before = snapshot(out)

    def disk_full(fh, **arrays):
        fh.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patched:
        patched.setattr(np, "savez_compressed", disk_full)
        status, lines = cli_exit(capsys, "--exp_name", field_run, "--mode", "generate", "--tag", "keep", "--Ntest",
                                 "3", "--overwrite", "--quiet")
    errors = [line for line in lines if line.startswith("eval.py: error:")]      # after the progress lines
    assert status == 2 and errors == lines[-1:] and "no space left" in errors[0] and "samples.npz" in errors[0]
    assert snapshot(out) == before and eval_common.folder_state(out) == "complete"
    assert not list(out.glob(".*"))


def test_plot_skips_an_evaluation_whose_samples_changed_after_it_was_written(field_run, capsys):
    out = field_run / "eval" / "changed"
    assert evaluate(field_run, "--mode", "generate", "--tag", "changed", "--Ntest", "2") == 0
    data = bytearray((out / "samples.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF                                          # same size: only the checksum sees it
    (out / "samples.npz").write_bytes(bytes(data))
    capsys.readouterr()
    with pytest.raises(UserError, match="every evaluation there is damaged"):
        evaluate(field_run, "--mode", "plot", "--tag", "changed")
    assert "samples.npz changed after the evaluation wrote it" in capsys.readouterr().err
