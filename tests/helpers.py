"""Small helpers shared by several test modules."""
import json
import sys
from pathlib import Path

import pytest

from model_code import checkpoint
from model_code.errors import run_cli


def load_script(path: Path, name: str):
    """A script of the repository (scripts/*.py, sample.py) imported as the module `name`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module                 # dataclasses of the script look their module up there
    spec.loader.exec_module(module)
    return module


def rows(run: Path) -> list:
    """results.json of a run folder, one dict per line."""
    return [json.loads(line) for line in (Path(run) / "results.json").read_text().splitlines()]


def same_rows(a: Path, b: Path) -> None:
    """The same results.json lines in two run folders: steps, and every float but the clocks to rounding."""
    ra, rb = rows(a), rows(b)
    assert [r["step"] for r in rb] == [r["step"] for r in ra]
    for x, y in zip(ra, rb):
        for key, value in x.items():
            if key not in ("time", "eval_time") and isinstance(value, float):
                assert y[key] == pytest.approx(value, rel=1e-6, abs=1e-12), key


def assert_trains_like_one(one: Path, two: Path) -> None:
    """The same results.json lines (losses, validation metrics) and weights as the 1-process run."""
    a, b = rows(one), rows(two)
    assert [r["step"] for r in b] == [r["step"] for r in a]
    assert a[0]["loss"] != a[-1]["loss"]              # the weights moved, so the comparison means something
    for ra, rb in zip(a, b):
        for key, value in ra.items():
            if key not in ("time", "eval_time") and isinstance(value, float) and not key.startswith("floor"):
                assert rb[key] == pytest.approx(value, rel=1e-4, abs=1e-7), key
    wa, wb = checkpoint.load(one / "model.pt")["model"], checkpoint.load(two / "model.pt")["model"]
    # Summation order differs between one and two processes, so weights agree to rounding relative
    # to their scale; except that Adam turns a gradient that is zero up to rounding into steps of
    # up to lr whose sign follows the summation order. The U-Net's last biases are such weights: a
    # GroupNorm of one channel per group removes them, so they never change the function (the
    # losses and validation metrics above are what show the function is the same).
    scale = max(float(w.abs().max()) for w in wa.values() if w.is_floating_point() and w.numel())
    adam_steps = 2 * max(r.get("lr", 0.0) for r in a)
    for name in wa:
        if wa[name].is_floating_point() and wa[name].numel():
            err = float((wa[name] - wb[name]).abs().max())
            assert err <= max(1e-4 * float(wa[name].abs().max()) + 2e-5 * scale, adam_steps), name
    assert len(json.loads((two / "provenance.json").read_text())) == 1     # written once, by rank 0


def cli_exit(capsys, main, prog: str, *argv):
    """An entry script as the shell runs it (run_cli): (exit status, stderr lines)."""
    capsys.readouterr()
    old = sys.argv
    sys.argv = [prog, *map(str, argv)]
    try:
        with pytest.raises(SystemExit) as stop:
            run_cli(main, prog)
    finally:
        sys.argv = old
    return stop.value.code, capsys.readouterr().err.strip().splitlines()
