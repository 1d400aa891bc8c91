"""scripts/bench_threads.py: the two layouts it launches and the throughput it reports (the timing
itself is a benchmark, not a test)."""
import pytest

from systems import ROOT
from helpers import load_script


def load():
    return load_script(ROOT / "scripts" / "bench_threads.py", "bench_threads")


def test_the_layouts_differ_only_in_processes_and_threads(tmp_path):
    bench = load()
    one, env_one = bench.command("threads", 2, "exps/json/grf-quality.json", ["resolution=16"], tmp_path, 10)
    many, env_many = bench.command("processes", 2, "exps/json/grf-quality.json", ["resolution=16"], tmp_path, 10)
    assert (env_one["OMP_NUM_THREADS"], env_many["OMP_NUM_THREADS"]) == ("2", "1")
    assert "train.threads=2" in one and "train.threads=1" in many
    assert many[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    # the same training run otherwise: the train.py argument lists agree but for the thread count
    script_one = one[one.index(str(ROOT / "train.py")):]
    script_many = many[many.index(str(ROOT / "train.py")):]
    assert [a for a in script_one if not a.startswith("train.threads")] == \
        [a for a in script_many if not a.startswith("train.threads")]
    assert "train.steps=10" in script_one and "train.checkpoint_interval=10" in script_one


def test_throughput_is_the_slope_between_the_short_and_the_long_run():
    bench = load()
    # 50 extra steps of batch 32 in 8 extra seconds; the 12 s of fixed cost cancel
    assert bench.throughput((10, 60), (14.0, 22.0), 32) == pytest.approx(50 * 32 / 8.0)
    with pytest.raises(SystemExit, match="raise --steps"):
        bench.throughput((10, 60), (14.0, 13.0), 32)


def test_bad_steps_are_refused(capsys):
    bench = load()
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "60", "10"])
    assert "SHORT < LONG" in capsys.readouterr().err
