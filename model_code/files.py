"""Small-file writes that a crash (kill -9, power loss) cannot tear."""
import os
import tempfile
from pathlib import Path


def atomic_write(path, write, mode: str = "wb") -> None:
    """Call write(file) on a temporary file next to `path`, fsync it, rename it over `path`.

    Readers see the old content or the new one, never half of either; on any error the
    temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text), mode="w")


def trim_jsonl(path, key: str, upto) -> None:
    """On resume: keep the lines of a JSON-lines log whose `key` is <= upto, atomically.

    Lines after the checkpoint were written by the interrupted run and will be written
    again; a line torn by a crash mid-write is not JSON and goes too.
    """
    import json

    path = Path(path)
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get(key, 0) <= upto:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))
