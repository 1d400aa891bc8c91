"""Every command of README.org's code blocks stays runnable as written: the scripts and files it names
exist, and each train.py line's config files and key=value overrides load into the schema (without
training), each eval.py / sample.py line parses. A renamed config, key or flag fails here instead of
on a newcomer's first try."""
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list:
    """(line number, words) of each command in README.org's bash blocks: continuation lines joined, comments
    dropped, `cd exps && ... && cd ..` split into the commands it runs (each with the folder it runs in)."""
    lines = (ROOT / "README.org").read_text().splitlines()
    commands, inside, pending, start = [], False, "", 0
    for number, line in enumerate(lines, 1):
        if line.strip().lower().startswith("#+begin_src bash"):
            inside = True
            commands.append((number, None))           # a block starts in the repository root
            continue
        if line.strip().lower().startswith("#+end_src"):
            inside = False
            continue
        if not inside:
            continue
        text = line.split(" #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        if not pending:
            start = number
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        text, pending = (pending + text).strip(), ""
        if text:
            commands.append((start, text))
    out, here = [], ROOT
    for number, text in commands:
        if text is None:
            here = ROOT
            continue
        for part in text.split("&&"):
            words = shlex.split(part)
            if words[:1] == ["cd"]:
                here = (here / words[1]).resolve()
                continue
            if words[0] in ("source", "make") or "[FILE" in part:      # set-up, and the synopsis line
                continue
            out.append((number, here, words))
    return out


def _script_and_args(words):
    """(script, its arguments) for `[ENV=..] [torchrun ...|mpiexec -n N|bash] python X.py args`, else None."""
    words = [w for w in words if not re.fullmatch(r"[A-Z_]+=\S*", w) or "." in w.split("=")[0]]
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        words = words[1:]
    for i, w in enumerate(words):
        if w.endswith((".py", ".sh")) and not w.startswith("-"):
            return w, words[i + 1:]
    return None


COMMANDS = readme_commands()


def test_the_readme_has_commands_to_check():
    assert len(COMMANDS) > 30
    assert any(words[:2] == ["python", "train.py"] for _, _, words in COMMANDS)


@pytest.mark.parametrize("number, here, words", COMMANDS, ids=[f"line{n}" for n, _, _ in COMMANDS])
def test_a_readme_command_names_files_that_exist(number, here, words):
    found = _script_and_args(words)
    assert found is not None, f"README.org line {number}: no script in {' '.join(words)}"
    script, args = found
    assert (here / script).is_file(), f"README.org line {number}: {script} not found from {here.name}/"
    for arg in args:
        value = arg.split("=", 1)[-1]
        if re.search(r"\.(json|yaml|yml|py)$", value) and "/" in value and "<" not in value:
            assert (here / value).is_file(), f"README.org line {number}: {value} not found"


TRAIN_LINES = [(n, h, w) for n, h, w in COMMANDS if (_script_and_args(w) or ("",))[0] == "train.py"]
EVAL_LINES = [(n, h, w) for n, h, w in COMMANDS if (_script_and_args(w) or ("",))[0] in ("eval.py", "sample.py")]


@pytest.mark.parametrize("number, here, words", TRAIN_LINES, ids=[f"line{n}" for n, _, _ in TRAIN_LINES])
def test_a_readme_training_line_loads_its_config(number, here, words, monkeypatch):
    import train
    from model_code import config

    monkeypatch.chdir(here)
    cli = train.parse_args(_script_and_args(words)[1])
    cfg = config.load(cli.config, cli.overrides)
    assert cfg.data.dataset


@pytest.mark.parametrize("number, here, words", EVAL_LINES, ids=[f"line{n}" for n, _, _ in EVAL_LINES])
def test_a_readme_evaluation_line_parses(number, here, words):
    import eval as eval_script
    from helpers import load_script

    script, args = _script_and_args(words)
    module = eval_script if script == "eval.py" else load_script(ROOT / "sample.py", "sample_for_readme")
    cli = module.parse_args(args)
    if script == "eval.py":
        assert cli.mode in eval_script.MODES
