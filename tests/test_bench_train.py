"""scripts/bench_train.py at tiny sizes: its FLOP conventions, the rows and table of a --quick run, and the
peak-memory measurement."""
import json
import math
from pathlib import Path

import pytest
import torch

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return load_script(ROOT / "scripts" / "bench_train.py", "bench_train")


def test_flop_conventions(bench):
    counter = bench.FlopCounter()
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    za, zb = torch.randn(2, 3, 5, dtype=torch.cfloat), torch.randn(2, 5, 7, dtype=torch.cfloat)
    with counter:
        torch.mm(a, b)
    assert counter.flops["matmul"] == 2 * 3 * 5 * 7
    with counter:
        torch.bmm(za, zb)                                  # a complex multiply-add is four real ones
    assert counter.flops["matmul"] == 2 * 3 * 5 * 7 + 4 * 2 * 2 * 3 * 5 * 7
    with counter:
        torch.fft.rfft2(torch.randn(4, 16, 32))
    assert counter.flops["fft"] == pytest.approx(4 * 2.5 * 512 * 9)
    x = torch.randn(1, 2, 8, 8, requires_grad=True)
    with counter:
        torch.nn.functional.interpolate(x, size=(4, 4), mode="bicubic", align_corners=True).sum().backward()
    assert counter.flops["bicubic"] == 2 * (2 * 16 * 2 * 4 * 4)     # forward and backward


def test_quick_run_rows_table_and_json(bench, tmp_path, capsys):
    out = tmp_path / "bench_train.json"
    result = bench.main(["--quick", "--no-memory", "--networks", "fno_grf", "uno_64px", "unet_digits",
                         "--json", str(out)])
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(result["rows"]))
    m = result["machine"]
    assert all(m[k] > 0 for k in ("sgemm_1", "sgemm_t", "fft_128", "fft_136"))
    rows = {(r["network"], r["path"]): r for r in result["rows"]}
    # the UNO times both paths of the same weights; FNO and U-Net have one
    assert set(rows) == {("fno_grf", "project"), ("uno_64px", "reference"), ("uno_64px", "project"),
                         ("unet_digits", "project")}
    uno = rows[("uno_64px", "project")]
    assert uno["shape"] == [2, 20, 20] and uno["batch"] == 2       # --quick: 24 px minus npad 4
    assert uno["speedup"] == pytest.approx(rows[("uno_64px", "reference")]["step_s"] / uno["step_s"])
    assert uno["gflop_by_kind"]["fft"] > 0 and uno["gflop_by_kind"]["bicubic"] > 0
    assert rows[("fno_grf", "project")]["gflop_by_kind"]["bicubic"] == 0
    assert rows[("unet_digits", "project")]["shape"] == [1, 8, 8]
    assert all(r["step_s"] > 0 and r["gflop"] > 0 and r["params"] > 0 for r in rows.values())
    lines = capsys.readouterr().out.strip().splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + 4 and len({line.count("|") for line in table}) == 1
    # % sgemm is taken against the sgemm rate measured beside each network's steps
    for line, r in zip(table[2:], result["rows"]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        rate, sgemm = r["gflop"] / r["step_s"], r["sgemm_alongside"]
        assert sgemm > 0 and cells[9] == f"{sgemm:.1f}" and cells[10] == f"{100 * rate / sgemm:.0f}"
    assert "sgemm" in lines[0] and table[4].rstrip(" |").endswith("x") and table[3].endswith("|  |")


def test_peak_memory_of_a_step(bench):
    mem = bench.memory_child("unet_digits", "project", quick=True, threads=1, malloc="default")
    assert mem["method"] in ("VmHWM", "ru_maxrss")
    assert math.isfinite(mem["peak_mib"]) and mem["peak_mib"] >= 0


def test_allocator_rounds_time_both_settings_in_fresh_processes(bench, capsys):
    result = bench.main(["--quick", "--no-memory", "--networks", "uno_quickstart", "--allocator-rounds", "1"])
    (row,) = result["allocator"]
    assert row["network"] == "uno_quickstart"
    assert all(row[m]["step_s"] > 0 and row[m]["faults_per_step"] >= 0 for m in ("keep", "default"))
    assert row["speedup"] == pytest.approx(row["default"]["step_s"] / row["keep"]["step_s"])
    out = capsys.readouterr().out
    assert "malloc: glibc" in out or "malloc: left" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("| uno_quickstart |") and f"{row['speedup']:.2f}x" in last


def test_unknown_network_is_refused(bench):
    with pytest.raises(SystemExit, match="unknown networks: nope"):
        bench.main(["--quick", "--networks", "nope"])
