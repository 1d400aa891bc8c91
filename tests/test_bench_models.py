"""scripts/bench_models.py without training: its maths (floor intervals, NFE, table) and its
evaluation path on fake runs whose "generator" draws exact GRF fields from the seeds."""
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return load_script(ROOT / "scripts" / "bench_models.py", "bench_models")


def test_floor_interval_of_the_multiples(bench):
    values = {"w_var": 0.2, "floor_w_var_p05": 0.1, "floor_w_var_p95": 0.4,
              "w_skew": 0.3, "floor_w_skew_p05": 0.0, "floor_w_skew_p95": 0.5,      # a zero floor: no interval
              "w_total": float("nan"), "floor_w_total_p05": 0.1, "floor_w_total_p95": 0.2}
    out = bench.floor_intervals(values)
    assert out == {"w_var_x_floor_lo": pytest.approx(0.5), "w_var_x_floor_hi": pytest.approx(2.0)}
    assert bench.floor_intervals({"w_var": 1.0}) == {}


def test_network_evaluations_of_the_published_samplers(bench):
    from model_code import build, config

    def nfe(cfg_file, name, overrides=()):
        cfg = config.load([str(ROOT / cfg_file)], list(overrides))
        return bench.nfe_of(build.sampler_setup(cfg, name))

    assert nfe("exps/json/grf-quality.json", "annealed_langevin") == 60 * 2 + 1
    assert nfe("exps/json/grf-quality.json", "heun_ode") == 39
    assert nfe("exps/json/ffm-grf.json", None) == 39
    assert nfe("configs/gano/grf_32px.yaml", None) == 1
    assert nfe("configs/gano/volcano_32px.yaml", None) == 1


def test_every_run_config_loads_with_its_overrides(bench):
    from model_code import config

    bench.check_overrides(bench.DATASETS, bench.MODELS, 0.5)
    cfg = config.load([str(ROOT / bench.CONFIGS["ve"]["volcano"])], bench.train_overrides("ve", "volcano", 4))
    assert (cfg.data.dataset, cfg.data.resolution, cfg.data.npad) == ("volcano", 32, 0)
    assert cfg.process.sigma_data == 0.7 and cfg.train.max_minutes == 4 and cfg.train.threads == 2
    # steps, not epochs: the budget is checked after every step
    assert cfg.train.epochs is None and cfg.train.steps >= 10 ** 7
    cmd = bench.train_command("gano", "grf", Path("/x/run"), 0.5)
    assert "--quiet" in cmd and "train.max_minutes=0.5" in cmd and cmd[cmd.index("--config") + 1].endswith(
        "configs/gano/grf_32px.yaml")


ROW = {"dataset": "grf", "resolution": 64, "model": "ve", "sampler": "heun_ode", "nfe": 39, "s_per_sample": 0.01234,
       "train_s": 240.4, "steps": 1500, "w_var_x_floor": 1.5, "w_var_x_floor_lo": 1.0, "w_var_x_floor_hi": 2.25,
       "w_skew_x_floor": 0.8, "w_total_x_floor": 1.2, "w_total_x_floor_lo": 0.9, "w_total_x_floor_hi": 1.6,
       "spectrum_error": 0.1234, "spectrum_error_x_floor": 2.04, "spectrum_error_low": 0.05,
       "spectrum_error_low_x_floor": 1.0, "spectrum_error_high": 0.4, "spectrum_ratio_high": 0.456}


def test_table_cells(bench):
    lines = bench.table([ROW, {**ROW, "resolution": 32, "n_nonfinite": 3, "steps": None,
                               "w_skew_x_floor": None}]).splitlines()
    head = lines[0].count("|")
    assert all(line.count("|") == head for line in lines)
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells == ["grf", "64", "ve", "heun_ode", "39", "0.0123", "240", "1500", "1.50 [1.00, 2.25]", "0.80",
                     "1.20 [0.90, 1.60]", "0.123 (2.0x)", "0.050 (1.0x)", "0.400", "0.46"]
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells[3] == "heun_ode (3 non-finite)" and cells[7] == "–" and cells[9] == "–"
    short = {k: v for k, v in ROW.items() if not k.startswith(("spectrum_error_", "spectrum_ratio"))}
    cells = [c.strip() for c in bench.table([short]).splitlines()[2].strip("|").split("|")]
    assert cells[-3:] == ["–", "–", "–"]


class ExactGRF:
    """A stand-in process: exact GRF fields, seeded by the batch's first seed (a perfect generator)."""

    def sample(self, model, seeds, shape, device, labels=None, progress=False, **options):
        from model_code.data.grf import PeriodicGRF

        assert options == {}                       # GANO's sampler_setup: no options
        return PeriodicGRF().sample(len(seeds), shape[-1], torch.Generator().manual_seed(seeds[0]))


def fake_run(cfg_file="configs/gano/grf_32px.yaml", process=None):
    from model_code import config

    cfg = config.load([str(ROOT / cfg_file)], ["eval.batch_size=16"])
    return SimpleNamespace(cfg=cfg, process=process or ExactGRF(), model=None, shape=(1, 32, 32), kind="real",
                           device=torch.device("cpu"), state={})


def test_a_perfect_generator_scores_about_the_floor(bench):
    run = fake_run()
    real = bench.real_fields("grf", run.cfg, 48, 2, None)
    assert real.shape == (48, 1, 64, 64)
    row, samples = bench.evaluate(run, None, 32, 2, bench.Reference(real, "real"))
    assert samples.shape == (32, 1, 64, 64)
    assert row["sampler"] == "generator" and row["nfe"] == 1 and row["resolution"] == 64 and row["n_real"] == 48
    for m in bench.W1:
        assert row[f"{m}_x_floor_lo"] <= row[f"{m}_x_floor"] * (1 + 1e-9)
        assert row[f"{m}_x_floor"] < 4
    # same field law at every band: no band error far above the floor, power ratio about 1 above the trained band
    assert row["spectrum_error_x_floor"] < 4 and 0.7 < row["spectrum_ratio_high"] < 1.4
    assert len(row["spectrum"]) == 33


def test_evaluate_dataset_rows_and_figures(bench, tmp_path, monkeypatch):
    from model_code import build

    class Smooth(ExactGRF):
        """Too smooth: the fields of ExactGRF blurred, so the high bands lack power."""

        def sample(self, *args, **kw):
            x = super().sample(*args, **kw)
            return (x + x.roll(1, -1) + x.roll(-1, -1) + x.roll(1, -2) + x.roll(-1, -2)) / 5

    runs = {"ffm": fake_run(), "gano": fake_run(process=Smooth())}
    monkeypatch.setattr(build, "load_run", lambda folder, name, device: runs[str(folder)])
    monkeypatch.setattr(bench, "SAMPLERS", {"ffm": (None,), "gano": (None,)})
    trained = {m: {"train_s": 1.0, "steps": 10} for m in runs}
    rows, figures = bench.evaluate_dataset("grf", {m: m for m in runs}, trained, 8, tmp_path, None)
    assert [(r["resolution"], r["model"]) for r in rows] == [(32, "ffm"), (32, "gano"), (64, "ffm"), (64, "gano")]
    assert figures == ["spectra_grf_32px.png", "spectra_grf_64px.png", "samples_grf_64px.png"]
    assert all((tmp_path / f).stat().st_size > 0 for f in figures)
    assert "spectrum_error_high" not in rows[0] and "spectrum_error_high" in rows[2]
    smooth, exact = rows[3], rows[2]
    assert smooth["spectrum_ratio_high"] < 0.5 < exact["spectrum_ratio_high"]
    assert all(r["train_s"] == 1.0 and r["dataset"] == "grf" for r in rows)
    assert math.isfinite(smooth["w_total_x_floor"])
