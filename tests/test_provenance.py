import json
import subprocess
import sys
from pathlib import Path

import pytest

from model_code import provenance

ROOT = Path(__file__).resolve().parents[1]


def git(cwd, *args):
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q")
    git(r, "config", "user.email", "t@example.org")
    git(r, "config", "user.name", "t")
    (r / "a.py").write_text("x = 1\n")
    git(r, "add", "a.py")
    git(r, "commit", "-qm", "one")
    return r


def test_fingerprint_follows_commit_and_uncommitted_changes(repo):
    clean = provenance.fingerprint(repo)
    assert len(clean) == 40 and "+dirty" not in clean
    (repo / "a.py").write_text("x = 2\n")
    dirty = provenance.fingerprint(repo)
    assert dirty.startswith(clean + "+dirty-")
    (repo / "a.py").write_text("x = 3\n")
    assert provenance.fingerprint(repo) not in (clean, dirty)
    assert "x = 3" in provenance.git_state(repo)["diff"]


def test_a_folder_inside_another_checkout_is_not_that_checkout(repo):
    inner = repo / "results" / "code"
    inner.mkdir(parents=True)
    assert provenance.git_state(inner) == {"commit": None, "diff": ""}
    assert provenance.fingerprint(inner) == "unknown"


def test_record_appends_one_entry_per_start(repo, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (repo / "a.py").write_text("x = 5\n")
    first = provenance.record(run, repo, ["train.py", "--cfg", "x.json"])
    provenance.record(run, repo, ["train.py", "--cfg", "x.json"])
    history = json.loads((run / "provenance.json").read_text())
    assert len(history) == 2 and history[0] == first
    assert first["command"] == ["train.py", "--cfg", "x.json"] and first["host"]
    assert first["libraries"]["torch"] and first["libraries"]["numpy"]
    assert "x = 5" in (run / "git_diff.patch").read_text()


def test_eval_warns_when_the_code_differs(capsys):
    sys.path.insert(0, str(ROOT))
    import eval as eval_script
    eval_script._warn_if_code_differs({"code": "0" * 40})
    now = provenance.fingerprint(ROOT)
    err = capsys.readouterr().err
    if now == "unknown":
        assert err == ""
    else:
        assert "differs from the code that trained the run" in err and len(err.strip().splitlines()) == 1
    eval_script._warn_if_code_differs({"code": now})
    assert capsys.readouterr().err == ""


def test_the_checkpoint_carries_the_code_fingerprint_that_eval_compares(trained):
    """model.pt holds the fingerprint of the code that trained it (provenance.json's last entry), so
    eval.py can warn when it runs other code."""
    from model_code import checkpoint

    run = trained("toy")
    history = json.loads((run / "provenance.json").read_text())
    assert checkpoint.load(run / "model.pt").get("code") == history[-1]["code"]
