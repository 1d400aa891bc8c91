"""An entry script started from a Python without the project's packages says, in one line, which
environment to activate (README's commands assume .venv is active; without it every `python ...`
ended in a traceback `No module named 'torch'`)."""
import subprocess
import sys
from pathlib import Path

import pytest

from model_code import errors

ROOT = Path(__file__).resolve().parents[1]

# (script, arguments, package hidden from it): each reaches that import before doing any work.
SCRIPTS = [
    ("train.py", ["--config", "exps/json/quickstart.json", "--savedir", "{tmp}/run"], "torch"),
    ("eval.py", ["--exp_name", "{tmp}", "--mode", "generate"], "torch"),
    ("sample.py", ["--exp_name", "{tmp}"], "torch"),
    ("scripts/make_volcano.py", ["--out", "{tmp}/data", "--n", "2"], "torch"),
    ("scripts/gpu_check.py", ["--help"], "torch"),
    ("scripts/convert_published_checkpoint.py", ["--help"], "torch"),
    ("scripts/analyse_toy.py", ["--runs-dir", "{tmp}"], "torch"),
]


@pytest.mark.parametrize("script, args, hidden", SCRIPTS, ids=[s[0] for s in SCRIPTS])
def test_a_missing_package_is_one_line_naming_the_fix(tmp_path, script, args, hidden):
    # None in sys.modules makes `import <hidden>` raise ModuleNotFoundError, as in a Python without it.
    runner = ("import runpy, sys; sys.modules[sys.argv[1]] = None; script = sys.argv[2]; "
              "sys.argv = sys.argv[2:]; runpy.run_path(script, run_name='__main__')")
    argv = [a.format(tmp=tmp_path) for a in args]
    done = subprocess.run([sys.executable, "-c", runner, hidden, script, *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    name = Path(script).name
    assert lines[0].startswith(f"{name}: error: No module named '{hidden}' in this Python ({sys.executable}): ")
    assert "source .venv/bin/activate" in lines[0] or "make venv" in lines[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_the_fix_names_make_venv_where_there_is_no_venv(tmp_path, monkeypatch):
    fake = tmp_path / "model_code" / "errors.py"
    fake.parent.mkdir()
    fake.write_text("")
    monkeypatch.setattr(errors, "__file__", str(fake))
    monkeypatch.chdir(tmp_path)
    err = ModuleNotFoundError("No module named 'torch'", name="torch")
    assert errors.missing_module_message(err).endswith(
        "make venv (or make demo / make test) creates .venv with them; then source .venv/bin/activate")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text("")
    assert errors.missing_module_message(err).endswith(
        "activate the project's environment first: source .venv/bin/activate (or run .venv/bin/python instead of "
        "python)")


def test_our_own_missing_module_is_still_a_traceback():
    """A module of the project itself missing is a bug of the checkout, not of the environment."""
    with pytest.raises(ModuleNotFoundError):
        errors.exit_for_missing_module(ModuleNotFoundError("x", name="model_code.nowhere"), "train.py")
