"""The bootstrap interval of the real-vs-real floor, its small-sample warning, and where it is reported."""
import io

import numpy as np
import pytest
import torch

from model_code import build, config
from model_code import metrics as M
from model_code import plotting


def fields(n, seed):
    """n fields (n, 1, 4, 4) of N(0, s^2) values with a per-field scale s ~ U(1, 2): known distribution."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64) * (1 + torch.rand(n, 1, 1, 1, generator=g))


@pytest.fixture(autouse=True)
def fresh_warning(monkeypatch):
    monkeypatch.setattr(M, "_few_fields_warned", False)


def test_interval_is_deterministic_for_a_seed_and_ordered():
    x = fields(60, 0)
    a = M.floor_interval(x, "real", seed=3, warn=False)
    assert a == M.floor_interval(x, "real", seed=3, warn=False)
    assert a != M.floor_interval(x, "real", seed=4, warn=False)
    assert set(a) == set(M.W1_NAMES)
    for lo, hi in a.values():
        assert 0 <= lo < hi
    # cached statistics give the same answer
    assert a == M.floor_interval(x, "real", seed=3, warn=False, real_stats_cached=M.sample_stats(x, "real"))


def test_interval_contains_the_floor_and_matches_its_sampling_spread():
    """The interval is the range of floors a real set of this size gives (5th-95th percentile).

    So the floor measured on one real set falls inside for about 90% of real sets (not every
    one: it is itself one draw of that range), the median floor of independent real sets lies
    inside, and the width matches the spread of those floors.
    """
    n = 400
    inside, floors, intervals = {name: 0 for name in M.W1_NAMES}, [], []
    for k in range(40):
        x = fields(n, 100 + k)
        floor = M.floor_metrics(x, "real", seed=k)
        interval = M.floor_interval(x, "real", seed=k, warn=False)
        for name in M.W1_NAMES:
            inside[name] += interval[name][0] <= floor[name] <= interval[name][1]
        floors.append(floor["w_total"])
        intervals.append(interval["w_total"])
    assert all(count >= 30 for count in inside.values()), inside      # expected 36 of 40
    lo, hi = intervals[0]
    assert lo < np.median(floors) < hi
    true_width = np.subtract(*np.percentile(floors, [95, 5]))
    assert 0.5 < (hi - lo) / true_width < 2.0


def test_width_shrinks_like_one_over_sqrt_n():
    def mean_width(n):
        widths = []
        for k in range(8):
            lo, hi = M.floor_interval(fields(n, 10 + k), "real", seed=k, warn=False)["w_total"]
            widths.append(hi - lo)
        return np.mean(widths)

    ratio = mean_width(25) / mean_width(400)       # sqrt(400 / 25) = 4
    assert 2.5 < ratio < 6.5, ratio


def test_columns_are_flat_and_named_after_the_percentiles():
    x = fields(40, 3)
    floor, interval = M.floor_metrics(x, "real"), M.floor_interval(x, "real", warn=False)
    cols = M.floor_columns(floor, interval)
    assert M.FLOOR_PERCENTILES == (5, 95)
    assert set(cols) == {f"floor_{n}{s}" for n in M.W1_NAMES for s in ("", "_p05", "_p95")}
    assert all(isinstance(v, float) for v in cols.values())
    assert cols["floor_w_var"] == floor["w_var"] and (cols["floor_w_var_p05"], cols["floor_w_var_p95"]) == \
        interval["w_var"]


def test_warning_once_below_100_fields_and_never_from_100(capsys):
    M.floor_interval(fields(100, 4), "real")
    M.floor_interval(fields(150, 4), "real")
    assert capsys.readouterr().err == ""
    M.floor_interval(fields(26, 5), "real")
    M.floor_interval(fields(6, 5), "real")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "26 validation fields" in err[0] and "fewer than 100" in err[0]
    # the check itself, on a stream
    M._few_fields_warned = False
    stream = io.StringIO()
    assert not M.warn_if_few_fields(100, stream) and M.warn_if_few_fields(99, stream)
    assert not M.warn_if_few_fields(5, stream) and len(stream.getvalue().splitlines()) == 1


def test_caption_gives_ratio_floor_and_interval():
    values = {"w_total": 0.12, "w_total_x_floor": 0.8, "floor_w_total": 0.15, "floor_w_total_p05": 0.09,
              "floor_w_total_p95": 0.22}
    assert plotting.floor_caption(values, "w_total") == \
        "w_total 0.12: at the real-vs-real floor (floor 0.15, 90% interval 0.09-0.22)"
    values = {**values, "w_total": 0.45, "w_total_x_floor": 3.0}
    assert plotting.floor_caption(values, "w_total") == \
        "w_total 0.45 = 3x floor (floor 0.15, 90% interval 0.09-0.22)"
    assert plotting.floor_caption({"w_var": 0.5}, "w_var") == "w_var 0.5"


def test_training_rows_carry_the_floor_interval(tmp_path, capsys):
    """The trainer's recorded rows (results.json) hold floor_<metric> with _p05 / _p95; 8 fields warn once."""
    tiny = ["dataset=grf", "resolution=8", "npad=0", "grf_n_train=16", "grf_n_valid=8", "batch_size=8", "epochs=2",
            "record_interval=1", "Ntest=4", "val_batch_size=4", "L=4", "T=1", "arch=fno", "d_co_domain=8",
            "n_layers=2", "n_modes=3", "embedding_dim=8", "n_plot=2", "tensorboard=false", "device=cpu"]
    trainer = build.build_trainer(config.load([], tiny), tmp_path, None, progress=False)
    trainer.fit()
    import json
    rows = [json.loads(line) for line in (tmp_path / "results.json").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        for name in M.W1_NAMES:
            lo, f, hi = row[f"floor_{name}_p05"], row[f"floor_{name}"], row[f"floor_{name}_p95"]
            assert 0 <= lo < hi and f > 0
            assert row[f"{name}_x_floor"] == pytest.approx(row[name] / f)
    assert rows[0]["floor_w_total_p95"] == rows[1]["floor_w_total_p95"]
    err = [line for line in capsys.readouterr().err.splitlines() if "validation fields" in line]
    assert len(err) == 1 and "only 8 validation fields" in err[0]
