"""A 2-epoch run through exps/main.sh, eval.py and sample.py on its checkpoints, and user mistakes.

Slow (a real training run on synthetic volcano data), so marked; CI runs it too.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model_code import checkpoint, config, metrics
from model_code.trainer import noise_of, select_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["epochs=2", "record_interval=1", "Ntest=8", "val_batch_size=8", "L=6", "T=1", "resolution=16",
        "d_co_domain=8", "mult_dims=[1,2]", "n_modes=4", "embedding_dim=16", "n_plot=4"]

pytestmark = pytest.mark.slow


def env_for(data_dir, savedir):
    env = dict(os.environ, DATA_DIR=str(data_dir), SAVEDIR=str(savedir), NO_VENV_ACTIVATE="1",
               PYTHON=sys.executable)
    env.pop("SLURM_JOB_ID", None)
    return env


def run(cmd, env, cwd=ROOT):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def one_line_error(proc, *needles):
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def data_dir(volcano_dir):
    """The session's synthetic volcano data (conftest.py); tests copy it before changing it."""
    return volcano_dir


@pytest.fixture(scope="module")
def launched(data_dir, tmp_path_factory):
    savedir = tmp_path_factory.mktemp("results")
    env = dict(env_for(data_dir, savedir), RUN_LOCAL="1", SLURM_JOB_ID="e2e")
    proc = run(["bash", "exps/main.sh", "sbgm", "tiny", "exps/json/quickstart.json", *TINY], env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return savedir, savedir / "tiny" / "e2e"


def test_run_folder_holds_every_file(launched):
    _, run_dir = launched
    for name in ["config.json", "results.json", "model.pt", "u_noised.png", "provenance.json",
                 *[f"model.{m}.pt" for m in metrics.METRIC_NAMES],
                 *[f"noise/{f}.{e}" for f in ("noise_samples", "noise_sampler_C")
                   for e in ("png", "pdf")],
                 *[f"samples/{ep}.{e}" for ep in (1, 2) for e in ("png", "pdf")]]:
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0, name
        magic = {".png": b"\x89PNG", ".pdf": b"%PDF"}.get((run_dir / name).suffix)
        if magic:
            assert (run_dir / name).read_bytes()[:4] == magic, name
    assert any((run_dir / "tb").glob("events.out.tfevents.*"))


def test_config_and_results_contents(launched):
    _, run_dir = launched
    saved = config.from_dict(json.loads((run_dir / "config.json").read_text()))
    assert saved.train.epochs == 2 and saved.process.num_levels == 6 and saved.net.channel_multipliers == [1, 2]
    assert saved.noise.length_scale == 0.05
    rows = [json.loads(line) for line in (run_dir / "results.json").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("loss", "loss_valid", "lr", "time", *metrics.METRIC_NAMES):
            assert np.isfinite(r[key]), key
        assert r["w_total"] == pytest.approx(r["w_var"] + r["w_skew"])
        assert r["lr"] == pytest.approx(1e-3)


def test_checkpoints_are_complete_and_best_values_consistent(launched):
    _, run_dir = launched
    rows = [json.loads(line) for line in (run_dir / "results.json").read_text().splitlines()]
    latest = checkpoint.load(run_dir / "model.pt")
    assert latest["unit"] == 2 and latest["step"] > 0
    for key in ("model", "ema", "optimizer", "generator", "rng", "net", "process", "process_state", "config", "data"):
        assert key in latest, key
    sigmas = latest["process"]["sigmas"]
    assert latest["process"]["type"] == "ve" and len(sigmas) == 6 and sigmas[0] == pytest.approx(5.0)
    for name in metrics.METRIC_NAMES:
        best = min(r[name] for r in rows)
        assert latest["best"][name] == pytest.approx(best)
        ck = checkpoint.load(run_dir / f"model.{name}.pt")
        assert ck["best"][name] == pytest.approx(best)
        # train.select within_noise: the latest record within the metric's noise of the best before it
        low, kept = float("inf"), None
        for r in rows:
            if select_checkpoint(r[name], low, noise_of(r, name), "within_noise"):
                kept = r["epoch"]
            low = min(low, r[name])
        assert ck["unit"] == kept


def test_eval_modes_on_the_run(launched, data_dir):
    savedir, run_dir = launched
    env = env_for(data_dir, savedir)
    for mode in ("generate", "superres", "plot"):
        proc = run(["bash", "exps/launch_eval.sh", "sbgm", "tiny/e2e", f"--mode={mode}", "--Ntest=6", "--quiet"], env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    out = run_dir / "eval"
    # one folder per evaluation, named after its settings (eval.py evaluation_name)
    folders = {"generate": out / "generate-w_total-annealed_langevin-T1",
               "superres": out / "superres-w_total-annealed_langevin-T1-x2"}
    gen = json.loads((folders["generate"] / "metrics.json").read_text())
    sr = json.loads((folders["superres"] / "metrics.json").read_text())
    assert gen["resolution"] == [16, 16] and sr["resolution"] == [32, 32] and sr["factor"] == 2
    assert gen["checkpoint"] == "model.w_total.pt" and gen["n"] == 6
    samples = np.load(folders["superres"] / "samples.npz")
    assert samples["samples"].shape == (6, 2, 32, 32) and np.isfinite(samples["samples"]).all()
    # The per-sample statistics stored are those of the stored samples.
    again = metrics.circular_stats(torch.from_numpy(samples["samples"]))
    assert np.allclose(again["var"].numpy(), samples["var"], atol=1e-5)
    # Another sampler through the same entry point.
    proc = run([sys.executable, "eval.py", "--exp_name", str(run_dir), "--mode", "generate", "--Ntest", "4",
                "--sampler", "heun_ode", "--steps", "4", "--savedir", str(out / "heun"), "--quiet"], env)
    assert proc.returncode == 0, proc.stderr
    heun = json.loads((out / "heun" / "generate-w_total-heun_ode-steps4" / "metrics.json").read_text())
    assert heun["sampler"] == "heun_ode" and heun["nfe"] == 7
    for name, nfe in (("dpm_solver_2m", 4), ("predictor_corrector", 7)):
        proc = run([sys.executable, "eval.py", "--exp_name", str(run_dir), "--mode", "generate", "--Ntest", "2",
                    "--sampler", name, "--steps", "4", "--sigma_min", "0.1", "--savedir", str(out / name),
                    "--quiet"], env)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads((out / name / f"generate-w_total-{name}-steps4-smin0.1" / "metrics.json").read_text())
        assert summary["nfe"] == nfe
        assert len(summary["sigmas"]) == 4 and summary["sigmas"][-1] == pytest.approx(0.1)   # the grid's new end
    proc = run([sys.executable, "eval.py", "--exp_name", str(run_dir), "--mode", "generate", "--sampler",
                "heun_ode", "--sigma_min", "1e9", "--savedir", str(out / "bad"), "--quiet"], env)
    assert proc.returncode == 2 and "sigma_min must lie in" in proc.stderr and not (out / "bad").exists()
    assert gen["sampler"] == "annealed_langevin" and gen["nfe"] == 6 * 1 + 1
    for mode in ("generate", "superres"):
        for fig in ("samples", "mean_sample", "final_stats"):
            assert (folders[mode] / f"{fig}.png").is_file(), (mode, fig)
    # a mode for another kind of run: one line, exit 2, nothing written
    proc = run([sys.executable, "eval.py", "--exp_name", str(run_dir), "--mode", "elbo"], env)
    one_line_error(proc, "--mode elbo does not apply", "it is a field (ve) run", "use --mode generate|superres|plot")


def test_sample_py_on_the_run(launched, data_dir):
    savedir, run_dir = launched
    env = env_for(data_dir, savedir)
    proc = run([sys.executable, "sample.py", "--exp_name", str(run_dir), "--batch_size", "3", "--mode", "same_init",
                "--quiet"], env)
    assert proc.returncode == 0, proc.stderr
    out = run_dir / "additional_samples" / "same_init-latest-annealed_langevin-T1-seed0"
    data = np.load(out / "samples.npz")
    assert data["samples"].shape == (3, 2, 16, 16) and np.isfinite(data["samples"]).all()
    assert all(np.array_equal(z, data["init"][0]) for z in data["init"])
    for name in ("final.png", "init.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    one_line_error(run([sys.executable, "sample.py", "--exp_name", str(run_dir), "--batch_size", "3", "--mode",
                        "same_init", "--quiet"], env), "already holds samples", "--overwrite")
    one_line_error(run([sys.executable, "sample.py", "--exp_name", str(run_dir), "--mode", "share_noise",
                        "--sampler", "heun_ode"], env), "means nothing with the deterministic sampler heun_ode")


def test_eval_rebuilds_from_checkpoint_alone(launched, data_dir, tmp_path):
    """Copy only the checkpoint to a new folder: generate still works (no config.json needed)."""
    _, run_dir = launched
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(run_dir / "model.w_total.pt", lonely / "model.w_total.pt")
    proc = run([sys.executable, "eval.py", "--exp_name", str(lonely), "--mode", "generate", "--Ntest", "4",
                "--quiet"], env_for(data_dir, tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (lonely / "eval" / "generate-w_total-annealed_langevin-T1" / "samples.npz").is_file()


def test_user_mistakes_end_in_one_line(launched, data_dir, tmp_path):
    savedir, run_dir = launched
    env = env_for(data_dir, savedir)
    train = [sys.executable, "train.py", "--cfg", "exps/json/quickstart.json", "--quiet"]
    # unknown / mistyped config key
    one_line_error(run(train + ["--savedir", str(tmp_path / "a"), "sigma1=3"], env), "sigma1", "sigma_1")
    # wrong type
    one_line_error(run(train + ["--savedir", str(tmp_path / "a"), "L=many"], env), "L=many", "process.num_levels")
    # missing data folder
    one_line_error(run(train + ["--savedir", str(tmp_path / "b")], env_for(tmp_path / "nowhere", savedir)),
                   "nowhere")
    # wrong file size
    bad = tmp_path / "bad_data"
    shutil.copytree(data_dir, bad)
    victim = sorted(bad.rglob("*.int"))[3]
    victim.write_bytes(victim.read_bytes()[:1000])
    one_line_error(run(train + ["--savedir", str(tmp_path / "c"), *TINY], env_for(bad, savedir)), victim.name)
    # missing checkpoint: nothing is written, the folder's checkpoints are listed
    proc = run([sys.executable, "eval.py", "--exp_name", str(run_dir), "--mode", "generate",
                "--checkpoint", "model.nope.pt", "--savedir", str(tmp_path / "ev")], env)
    one_line_error(proc, "model.nope.pt", "model.w_total.pt")
    assert not (tmp_path / "ev").exists()
    # invalid mode, and a foreign file posing as a checkpoint
    one_line_error(run([sys.executable, "eval.py", "--exp_name", str(run_dir), "--mode", "dance"], env), "--mode")
    (tmp_path / "foreign").mkdir()
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign" / "model.w_total.pt")
    one_line_error(run([sys.executable, "eval.py", "--exp_name", str(tmp_path / "foreign"), "--mode", "generate"],
                       env), "not a checkpoint of this project")
    # an existing run folder with a different config is refused and left as it was
    before = (run_dir / "results.json").read_bytes()
    one_line_error(run(train + ["--savedir", str(run_dir), *TINY[:-1], "n_plot=5"], env), "different config",
                   "n_plot")
    assert (run_dir / "results.json").read_bytes() == before
