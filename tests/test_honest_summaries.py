"""Headline numbers that do not flatter (issue 24): every title, summary and log line puts the spectrum
error beside w_total and words a value at or inside its noisy real-vs-real floor as being at the floor,
never as a multiple below 1; the Frechet distance comes with its sampling spread; GANO's superres
folders are named after their factor."""
import io
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model_code import fid
from model_code import metrics as M
from model_code.progress import LogLines

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import eval as eval_script  # noqa: E402

ROW = {"w_total": 0.127, "w_total_x_floor": 0.127 / 0.17, "floor_w_total": 0.17, "floor_w_total_p05": 0.05,
       "floor_w_total_p95": 0.21, "spectrum_error": 0.31, "floor_spectrum_error": 0.0506,
       "spectrum_error_x_floor": 0.31 / 0.0506}


# --------------------------------------------------------------------------- the wording


def test_a_value_at_or_inside_its_floor_is_worded_as_at_the_floor_and_only_a_worse_one_gets_a_multiple():
    assert M.floor_caption(ROW, "w_total") == \
        "w_total 0.127: at the real-vs-real floor (floor 0.17, 90% interval 0.05-0.21)"
    above_floor = {**ROW, "w_total": 0.19, "w_total_x_floor": 0.19 / 0.17}
    assert M.floor_caption(above_floor, "w_total") == \
        "w_total 0.19: within the floor's noise (floor 0.17, 90% interval 0.05-0.21)"
    above_interval = {**ROW, "w_total": 0.3, "w_total_x_floor": 0.3 / 0.17}
    assert M.floor_caption(above_interval, "w_total") == \
        "w_total 0.3 = 1.76x floor (floor 0.17, 90% interval 0.05-0.21)"
    # no interval (the spectrum errors): the multiple decides
    assert M.floor_caption(ROW, "spectrum_error") == "spectrum_error 0.31 = 6.13x floor (floor 0.0506)"
    assert M.floor_caption({"spectrum_error": 0.048, "floor_spectrum_error": 0.0506}, "spectrum_error") == \
        "spectrum_error 0.048: at the real-vs-real floor (floor 0.0506)"
    # training's log passes the value and its multiple but not the floor: the floor is their quotient
    assert M.floor_caption({"w_var": 0.0123, "w_var_x_floor": 1.23}, "w_var") == "w_var 0.0123 = 1.23x floor (floor 0.01)"
    assert M.floor_caption({"w_var": 0.009, "w_var_x_floor": 0.9}, "w_var") == \
        "w_var 0.009: at the real-vs-real floor (floor 0.01)"
    # the multiple alone (a metric that is not tracked), no floor at all, nothing at all, no finite value
    assert M.floor_caption({"spectrum_error_x_floor": 6.1}, "spectrum_error") == "spectrum_error 6.1x floor"
    assert M.floor_caption({"spectrum_error_x_floor": 0.7}, "spectrum_error") == \
        "spectrum_error: at the real-vs-real floor"
    assert M.floor_caption({"w_var": 0.5}, "w_var") == "w_var 0.5"
    assert M.floor_caption({"w_var": 0.5}, "w_total") == ""
    assert M.floor_caption({"w_total": math.nan, "floor_w_total": 0.17}, "w_total") == "w_total nan (floor 0.17)"
    # the Frechet distance: its own spread after the value, its floor under <name>_floor
    frechet = {"frechet": 18.3, "frechet_p05": 12.7, "frechet_p95": 25.0, "frechet_floor": 10.2,
               "frechet_floor_p05": 8.1, "frechet_floor_p95": 13.0}
    assert M.floor_caption(frechet, "frechet") == \
        "frechet 18.3 (resampled 90% interval 12.7-25) = 1.79x floor (floor 10.2, 90% interval 8.1-13)"
    # plotting draws with the same function
    from model_code import plotting

    assert plotting.floor_caption is M.floor_caption


def test_the_headline_puts_the_spectrum_error_beside_w_total_and_leaves_out_what_a_row_lacks():
    assert M.headline(ROW) == ("w_total 0.127: at the real-vs-real floor (floor 0.17, 90% interval 0.05-0.21); "
                               "spectrum_error 0.31 = 6.13x floor (floor 0.0506)")
    old = {k: v for k, v in ROW.items() if "spectrum" not in k}          # a row written before the spectrum
    assert M.headline(old, sep="\n") == "w_total 0.127: at the real-vs-real floor (floor 0.17, 90% interval 0.05-0.21)"
    superres = {**ROW, "spectrum_error_high": 0.9, "floor_spectrum_error_high": 0.0616}
    assert M.headline(superres, sep="\n").splitlines()[2] == "spectrum_error_high 0.9 = 14.6x floor (floor 0.0616)"
    assert M.headline({"val_bpd": 1.2, "score_error": 0.1}) == ""          # image and toy rows: nothing


def _fields(n, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, 1, 16, 16, generator=g).cumsum(-1)


def test_the_validation_log_line_words_every_metric_with_a_floor_and_shows_the_spectrum_error():
    from model_code.evaluators import FieldStats
    from model_code.spectrum import SpectrumError

    valid = _fields(128, 0)
    samples = _fields(128, 1, scale=1.6)                 # too rough: far above every floor
    evaluators = [FieldStats("real", valid, warn=False), SpectrumError(valid)]
    ctx = type("Ctx", (), {"generate": staticmethod(lambda n: samples)})()
    values = {}
    for ev in evaluators:
        values.update(ev(ctx))
    tracked = [m for ev in evaluators for m in ev.metrics]
    # what trainer.py passes: the tracked metrics and the keys ending in _floor (the multiples)
    passed = {k: v for k, v in values.items() if k in tracked or k.endswith("_floor")}
    out = io.StringIO()
    LogLines("train", "epoch", 3, stream=out).metrics(3, passed)
    line = out.getvalue().strip().split("] ", 1)[1]
    items = line[len("validation epoch 3: "):].split("; ")
    assert line.startswith("validation epoch 3: w_var ")
    spectrum = f"spectrum_error {values['spectrum_error']:.3g} = {values['spectrum_error_x_floor']:.3g}x floor " \
               f"(floor {values['floor_spectrum_error']:.3g})"
    total = f"w_total {values['w_total']:.3g} = {values['w_total_x_floor']:.3g}x floor " \
            f"(floor {values['floor_w_total']:.3g})"
    assert spectrum in items and total in items
    assert items == [M.floor_caption(passed, k) if M.has_floor(passed, k) else f"{k} {passed[k]:.4g}"
                     for k in ("w_var", "w_skew", "w_total", "mean_l2", "spectrum_error")]
    assert "x_floor" not in line
    # a model as good as the data: at the floor, no multiple below 1
    out = io.StringIO()
    LogLines("train", "epoch", 3, stream=out).metrics(3, {"w_total": 0.0579, "w_total_x_floor": 0.91})
    assert out.getvalue().strip().endswith("validation epoch 3: w_total 0.0579: at the real-vs-real floor "
                                           "(floor 0.0636)")


# --------------------------------------------------------------------------- eval.py generate / superres / plot


@pytest.fixture(autouse=True)
def data_dir(volcano_dir, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(volcano_dir))


def _copy(trained, tmp_path, name):
    dest = tmp_path / name
    shutil.copytree(trained(name), dest)
    return dest


def _evaluate(run, capsys, *flags):
    capsys.readouterr()
    assert eval_script.main(["--exp_name", str(run), "--quiet", *map(str, flags)]) == 0
    return capsys.readouterr().out.splitlines()


def test_generate_prints_and_plot_titles_the_spectrum_error_beside_w_total(trained, tmp_path, capsys, monkeypatch):
    from model_code import plotting

    run = _copy(trained, tmp_path, "interpolant_grf")
    out = _evaluate(run, capsys, "--mode", "generate", "--tag", "g", "--Ntest", "8")
    values = json.loads((run / "eval" / "g" / "metrics.json").read_text())["metrics"]
    assert "spectrum_error" in values and "w_total" in values
    line = "generate: " + M.floor_caption(values, "w_total") + "; " + M.floor_caption(values, "spectrum_error")
    assert line in out
    titles = {}

    def keep(fig, path, exts=("png",)):
        titles[Path(path).name] = fig._suptitle.get_text() if fig._suptitle else ""
        import matplotlib.pyplot as plt

        plt.close(fig)
        return []

    monkeypatch.setattr(plotting, "save", keep)
    _evaluate(run, capsys, "--mode", "plot", "--tag", "g")
    for figure in ("real_vs_generated", "final_stats"):
        lines = titles[figure].splitlines()
        assert lines[-2:] == [M.floor_caption(values, "w_total"), M.floor_caption(values, "spectrum_error")], figure


def test_gano_superres_folders_are_named_after_their_factor(trained, tmp_path, capsys):
    from model_code.eval_fields import generate_name

    assert generate_name("superres", "model.pt", {}, factor=4) == "superres-latest-generator-nfe1-x4"
    assert generate_name("generate", "model.pt", {}, ema=False) == "generate-latest-generator-nfe1-raw"
    run = _copy(trained, tmp_path, "gano_grf")
    _evaluate(run, capsys, "--mode", "superres", "--factor", "2", "--Ntest", "2")
    _evaluate(run, capsys, "--mode", "superres", "--factor", "4", "--Ntest", "2")
    found = {d.name: json.loads((d / "metrics.json").read_text()) for d in (run / "eval").iterdir()}
    assert sorted(s["factor"] for s in found.values()) == [2, 4]
    for name, summary in found.items():
        assert name.endswith(f"-generator-nfe1-x{summary['factor']}") and summary["resolution"] == \
            [8 * summary["factor"]] * 2


# --------------------------------------------------------------------------- the Frechet distance's spread

# a ~ N(0, diag(1, 4)), b ~ N((1, 0), diag(4, 1)): the covariances commute, (S_a S_b)^{1/2} = 2 I, so
# FD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2}) = 1 + (5 + 5 - 8) = 3.
EXACT_FD = 3.0


def _gaussian_features(n, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 2, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0], dtype=torch.float64)
    b = torch.randn(n, 2, generator=g, dtype=torch.float64) * torch.tensor([2.0, 1.0], dtype=torch.float64)
    return a, b + torch.tensor([1.0, 0.0], dtype=torch.float64)


def test_the_frechet_interval_covers_the_exact_distance_and_has_the_estimates_spread():
    # K independent pairs of sets of n = 2000 (bias ~ tr / n = 0.005, against a spread of 0.14): a 90%
    # interval covers FD = 3 in Binomial(K, 0.9) of them; P(count <= 29 of 40) = 0.15% at nominal coverage.
    K, n, resamples = 40, 2000, 100
    covered, widths, estimates = 0, [], []
    for k in range(K):
        a, b = _gaussian_features(n, k)
        lo, hi = fid.frechet_interval(a, b, torch.Generator().manual_seed(1000 + k), resamples)
        covered += lo <= EXACT_FD <= hi
        widths.append(hi - lo)
        estimates.append(fid.frechet_of_features(a, b))
    assert covered >= 30
    # the width is the estimate's own scatter: 3.29 standard deviations for a near-normal spread; the
    # standard deviation of K = 40 estimates is known to about 1 / sqrt(2 K) = 11%, so 0.7-1.4 is > 3 sigma
    assert 0.7 < np.mean(widths) / (2 * 1.645 * np.std(estimates, ddof=1)) < 1.4
    # and the analytic value is the one the estimates scatter around (3 standard errors of their mean)
    assert abs(np.mean(estimates) - EXACT_FD) < 3 * np.std(estimates, ddof=1) / math.sqrt(K)


def test_the_frechet_interval_narrows_like_one_over_root_n_and_is_reproducible():
    small, large = _gaussian_features(250, 7), _gaussian_features(4000, 7)
    lo_s, hi_s = fid.frechet_interval(*small, torch.Generator().manual_seed(0))
    lo_l, hi_l = fid.frechet_interval(*large, torch.Generator().manual_seed(0))
    # 16x the samples: a quarter of the width; 200 resamples put about 10% of noise on each width
    assert 2.8 < (hi_s - lo_s) / (hi_l - lo_l) < 5.5
    assert lo_l < fid.frechet_of_features(*large) < hi_l
    again = fid.frechet_interval(*small, torch.Generator().manual_seed(0))
    assert again == (lo_s, hi_s)
    assert fid.frechet_interval(*small, torch.Generator().manual_seed(1)) != (lo_s, hi_s)
    assert all(math.isnan(v) for v in fid.frechet_interval(small[0][:1], small[1], torch.Generator()))


def test_the_floor_interval_spans_the_floors_that_real_sets_of_that_size_give():
    # real ~ N(0, diag(1, 4)): the floor (two disjoint halves of 200) estimates FD = 0 and is all bias and
    # noise. Its 90% interval, from one real set, against the scatter of the floors of K independent sets.
    K, n = 40, 400
    floors, widths = [], []
    for k in range(K):
        real = _gaussian_features(n, 100 + k)[0]
        floor = fid.frechet_of_features(real[: n // 2], real[n // 2:])
        lo, hi = fid.frechet_floor_interval(real, floor, torch.Generator().manual_seed(k), 100)
        assert 0 <= lo <= hi
        floors.append(floor)
        widths.append(hi - lo)
    spread = np.percentile(floors, 95) - np.percentile(floors, 5)
    # the 5th-95th range of 40 draws is known to about 25%: 0.5-2 is a wide margin around 1
    assert 0.5 < np.mean(widths) / spread < 2.0


def test_eval_frechet_stores_and_prints_the_interval_beside_the_value_and_the_floor(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path, "starter_digits")
    out = _evaluate(run, capsys, "--mode", "frechet", "--Ntest", "32", "--tag", "a")
    summary = json.loads((run / "eval" / "a" / "metrics.json").read_text())
    m = summary["metrics"]
    for name in ("frechet", "frechet_floor"):
        assert 0 <= m[f"{name}_p05"] < m[f"{name}_p95"] and math.isfinite(m[name])
    assert "bootstrap resamples" in summary["frechet_interval"]
    assert M.floor_caption(m, 'frechet') in out        # its own name leads the line, once
    assert f"resampled 90% interval {m['frechet_p05']:.3g}-{m['frechet_p95']:.3g}" in M.floor_caption(m, "frechet")
    _evaluate(run, capsys, "--mode", "frechet", "--Ntest", "32", "--tag", "b")
    again = json.loads((run / "eval" / "b" / "metrics.json").read_text())["metrics"]
    assert {k: again[k] for k in m if k.startswith("frechet")} == {k: m[k] for k in m if k.startswith("frechet")}
