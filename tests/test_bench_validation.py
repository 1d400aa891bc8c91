"""scripts/bench_validation.py and bench_generate.py: what they conclude from the numbers they measure
(the measurements themselves are benchmarks, not tests)."""
import pytest

from helpers import load_script
from systems import ROOT


def _rows(valid: dict, eval_times: dict, noise: float, step_seconds: float = 10.0) -> list:
    return [{"step": s, "w_total": v, "time": step_seconds * s / 100 + eval_times[s], "eval_time": eval_times[s],
             "floor_w_total_p05": 0.05, "floor_w_total_p95": 0.05 + 2 * noise} for s, v in valid.items()]


def test_selection_summary_replays_both_rules_and_times_as_stated():
    bench = load_script(ROOT / "scripts" / "bench_validation.py", "bench_validation")
    final = {100: 0.30, 200: 0.20, 300: 0.12, 400: 0.10}
    # fast: flat after step 200 within its noise 0.02; langevin: noisy, prefers step 200 until the end
    runs = {"fast": _rows({100: 0.5, 200: 0.40, 300: 0.41, 400: 0.405}, {100: 1, 200: 2, 300: 3, 400: 4}, 0.02),
            "langevin": _rows({100: 0.5, 200: 0.2, 300: 0.3, 400: 0.21}, {100: 10, 200: 20, 300: 30, 400: 40}, 0.005)}
    s = bench.selection_summary("grf", runs, final, target_factor=1.25)
    assert s["oracle_step"] == 400 and s["target"] == pytest.approx(0.125)
    fast, slow = s["runs"]["fast"], s["runs"]["langevin"]
    assert fast["rules"]["best"]["selected_step"] == 200 and fast["rules"]["within_noise"]["selected_step"] == 400
    assert slow["rules"]["best"]["selected_step"] == 200 and slow["rules"]["within_noise"]["selected_step"] == 200
    assert fast["rules"]["within_noise"]["selected_final"] == 0.10
    # within_noise keeps step 300 at the third record (0.41 <= 0.40 + 0.02): final 0.12 <= 0.125, time 30 + 3
    assert fast["rules"]["within_noise"]["time_to_target"] == pytest.approx(33.0)
    assert fast["rules"]["best"]["time_to_target"] is None and slow["rules"]["best"]["time_to_target"] is None
    assert fast["spearman_valid_final"] == pytest.approx(0.4)          # ranks 4 1 3 2 against 4 3 2 1
    assert fast["share"] == pytest.approx(4 / 44) and slow["share"] == pytest.approx(40 / 80)
    # kept after each record: fast within_noise 100 200 300 400 (as latest), best 100 200 200 200;
    # langevin within_noise 100 200 200 200 (0.3 and 0.21 are further than 0.005 above 0.2)
    stops = {rule: c["mean_final_over_stops"] for rule, c in fast["rules"].items()}
    assert stops == pytest.approx({"within_noise": 0.18, "best": 0.225, "latest": 0.18})
    assert slow["rules"]["within_noise"]["mean_final_over_stops"] == pytest.approx(0.225)
    latest = slow["rules"]["latest"]
    assert latest["selected_step"] == 400 and latest["time_to_target"] == 60     # step 300 (0.12): 30 + 30


def test_langevin_throughput_is_scaled_by_network_evaluations(trained, volcano_dir, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(volcano_dir))
    bench = load_script(ROOT / "scripts" / "bench_generate.py", "bench_generate")
    row = bench.langevin_rate(trained("ve_volcano"), levels=2, n=2, device="cpu")
    # the tiny run: L = 6 levels, T = 1, a final denoising step; 2 levels run = 2 evaluations
    assert row["nfe"] == 6 * 1 + 1 and "2 of 7 network evaluations" in row["measured"]
    assert row["samples_per_second"] == pytest.approx(2 / row["seconds"])
