"""scripts/bench_checkpoint.py: the payload it times is a training state, and its table (the timing itself is a
benchmark, not a test)."""

from helpers import load_script
from systems import ROOT


def test_the_payload_holds_four_copies_of_the_weights_and_the_table_both_steps(capsys):
    bench = load_script(ROOT / "scripts" / "bench_checkpoint.py", "bench_checkpoint")
    payload = bench.training_state("exps/json/quickstart.json", ["net.type=fno", "net.width=8", "net.n_layers=2",
                                                                  "net.n_modes=4"])
    weights = sum(v.numel() for v in payload["model"].values() if v.is_floating_point())
    moments = sum(m[k].numel() for m in payload["optimizer"]["state"].values() for k in ("exp_avg", "exp_avg_sq"))
    assert weights > 0 and moments == 2 * weights and payload["ema"]["shadow"] is payload["model"]
    assert bench.main(["--quick"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in table[1:]] == ["| save", "| load"]
    assert all(row.endswith("x |") for row in table[1:])
