"""What code, command and libraries produced a run (docs/maths.md).

train.py writes provenance.json (one entry per start, so resumed runs keep their history)
and git_diff.patch into the run folder and stores the code fingerprint in checkpoints;
eval.py compares that fingerprint with the code it runs and warns when they differ.
"""
import hashlib
import importlib.metadata
import json
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

from .files import atomic_write, atomic_write_text, json_text

LIBRARIES = ("torch", "numpy", "scipy", "neuraloperator", "omegaconf", "matplotlib")


def _git(root: Path, *args) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(root) -> dict:
    """Commit and uncommitted diff of the checkout at `root` (None outside a checkout of its own)."""
    root = Path(root).resolve()
    top = _git(root, "rev-parse", "--show-toplevel")
    # A run folder inside another checkout (results/ of the repo) must not borrow its history.
    if top is None or Path(top.strip()).resolve() != root:
        return {"commit": None, "diff": ""}
    return {"commit": (_git(root, "rev-parse", "HEAD") or "").strip() or None,
            "diff": _git(root, "diff", "HEAD") or ""}


def fingerprint(root) -> str:
    """commit[+dirty-<hash of the diff>], or 'unknown' outside a git checkout."""
    state = git_state(root)
    if state["commit"] is None:
        return "unknown"
    if not state["diff"]:
        return state["commit"]
    return f"{state['commit']}+dirty-{hashlib.sha256(state['diff'].encode()).hexdigest()[:12]}"


def versions() -> dict:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def read_history(path: Path) -> list:
    """The starts recorded so far. A torn or damaged file never stops a resume: it is kept beside as
    provenance.json.damaged, one warning says so, and the history goes on from this start."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    try:
        history = json.loads(raw.decode("utf-8"))
        if isinstance(history, list) and all(isinstance(e, dict) for e in history):
            return history
    except ValueError:
        pass
    kept = path.with_name(path.name + ".damaged")
    atomic_write(kept, lambda fh: fh.write(raw))
    print(f"warning: {path} was damaged (not a JSON list of starts); kept as {kept.name}, the history starts "
          f"again with this start", file=sys.stderr)
    return []


def record(run_dir, root, argv=None, extra: dict | None = None) -> dict:
    """Append this start to run_dir/provenance.json and write the uncommitted diff.

    extra: more facts about this start (e.g. the CPU thread count and where it came from).
    """
    run_dir = Path(run_dir)
    state = git_state(root)
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": list(argv if argv is not None else sys.argv),
             "cwd": str(Path.cwd()), "host": socket.gethostname(), "python": platform.python_version(),
             "libraries": versions(), "git_commit": state["commit"], "code": fingerprint(root), **(extra or {})}
    path = run_dir / "provenance.json"
    history = read_history(path)
    history.append(entry)
    atomic_write_text(path, json_text(history, indent=2) + "\n")
    patch = run_dir / "git_diff.patch"
    if state["diff"] and not (patch.is_file() and patch.read_bytes() == state["diff"].encode()):
        atomic_write_text(patch, state["diff"])
    return entry
