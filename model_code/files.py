"""Small-file writes that a crash (kill -9, power loss) cannot tear."""
import os
import tempfile
from pathlib import Path


def atomic_write_text(path, text: str) -> None:
    """Write a temporary file next to `path`, fsync it, rename it over `path`.

    Readers see the old content or the new one, never half of either.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
