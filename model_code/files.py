"""Every file the project writes: whole or not at all, with the user's umask, a full disk as one line.

- `atomic_write` writes a temporary file next to the target, fsyncs it and renames it over the
  target: readers see the old content or the new one, never half of either.
- Temporaries are named after their writer (host, pid, process start time):
  `.<name>~<host>~<pid>~<start>~<random>.tmp`. `sweep_temporaries` removes only those whose
  writer is gone (on this host: its process no longer runs; on another host: the file has not
  been touched for `STALE_SECONDS`, the rule the run-folder lock applies to heartbeats), so a
  resuming training never deletes the temporary of an evaluation writing beside it.
- Files are created with mode 0o666 and the process's umask applies, as for any file the user
  creates (tempfile.mkstemp's 0o600 would hide checkpoints from a project group).
- A write that fails because the disk (or the user's quota) is full raises `DiskFull`, a
  UserError: one line naming the file, "no space left", and what was kept. torch.save reports a
  full disk as a RuntimeError ("unexpected pos ...") whose context is the OSError, so the whole
  exception chain is searched.
- JSON is written without NaN / Infinity (not JSON: pandas, jq and the readers of other
  languages refuse it); a non-finite number becomes null.
"""
from __future__ import annotations

import errno
import json
import math
import os
import secrets
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
STALE_SECONDS = 300.0
_SEP = "~"                   # not valid in a host name, so the writer's fields split unambiguously


class DiskFull(UserError):
    """A write ran out of space (disk full or quota exceeded); the previous file is intact."""


# ------------------------------------------------------------------ who writes
def process_start(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (tells a reused pid apart); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):         # a zombie: killed, not yet reaped
        return None
    return fields[19]


def process_alive(pid: int, start: str | None) -> bool:
    if not Path("/proc").is_dir():      # no procfs (macOS): existence alone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    now = process_start(pid)
    return now is not None and (start is None or now == start)


def _host() -> str:
    return socket.gethostname().replace(_SEP, "-") or "host"


def temporary_path(path, suffix: str = ".tmp") -> Path:
    """A temporary name next to `path` that says who writes it (suffix: what comes last, e.g. '.tmp.mp4')."""
    path = Path(path)
    pid = os.getpid()
    writer = _SEP.join([_host(), str(pid), process_start(pid) or "0", secrets.token_hex(4)])
    return path.with_name(f".{path.name}{_SEP}{writer}{suffix}")


def _writer_of(name: str):
    """(host, pid, start) of a temporary's name, or None for a name not made by temporary_path."""
    parts = name.split(".tmp")[0].rsplit(_SEP, 4)
    if len(parts) != 5 or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2]), None if parts[3] == "0" else parts[3]


def _last_touched(path: Path) -> float:
    """mtime of a file; of a folder (a staging folder), the newest of it and everything in it."""
    times = [path.stat().st_mtime]
    if path.is_dir():
        times += [p.stat().st_mtime for p in path.rglob("*")]
    return max(times)


def writer_gone(tmp: Path, stale_after: float = STALE_SECONDS) -> bool:
    """Whether the process that writes the temporary `tmp` (a file or a staging folder) is gone."""
    writer = _writer_of(tmp.name)
    if writer is not None and writer[0] == _host():
        return not process_alive(writer[1], writer[2])
    try:                                # another host's, or an older unnamed one: gone once untouched
        return time.time() - _last_touched(tmp) > stale_after
    except FileNotFoundError:
        return False


def sweep_temporaries(folder, stale_after: float = STALE_SECONDS) -> list:
    """Remove the temporaries (files and staging folders) under `folder` whose writer is gone (a crash
    mid-write); the real files next to them are whole. Those of live writers (an evaluation beside a
    resuming training) stay."""
    import shutil

    removed = []
    for tmp in sorted(Path(folder).glob("**/.*.tmp*")):
        if not (tmp.name.endswith(".tmp") or ".tmp." in tmp.name):     # .notes.tmpl is someone's own
            continue
        if any(tmp.is_relative_to(gone) for gone in removed) or not tmp.exists():
            continue
        if writer_gone(tmp, stale_after):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


# ------------------------------------------------------------------ a full disk
def exception_chain(err: BaseException):
    """`err`, then what caused it (__cause__, else __context__), and so on."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def is_disk_full(err: BaseException) -> bool:
    return any(isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS for e in exception_chain(err))


def free_bytes(folder) -> int | None:
    """Bytes this user may still write on the file system of `folder` (None when it cannot be asked)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def disk_full_message(path, kept: str | None = None) -> str:
    from .memory import describe_bytes

    path = Path(path)
    kept = kept or (f"the previous {path.name} is intact" if path.exists() else f"no partial {path.name} was left")
    free = free_bytes(path.parent)
    free = "" if free is None else f", {describe_bytes(free)} free there"
    return (f"cannot write {path}: no space left on device (disk full or quota exceeded{free}); "
            f"{kept}: free some space and run the same command again")


@contextmanager
def reporting_disk_full(path, kept: str | None = None):
    """Turn a full disk inside the body into DiskFull naming `path`; other errors pass unchanged."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as err:
        if is_disk_full(err):
            raise DiskFull(disk_full_message(path, kept)) from None
        raise


# ------------------------------------------------------------------ writing
def sync_folder(folder) -> None:
    """Make the renames in `folder` durable (a rename is only on disk once its folder is)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass                            # some file systems do not sync folders; the data itself is synced
    finally:
        os.close(fd)


def atomic_write(path, write, mode: str = "wb", kept: str | None = None, durable: bool = False,
                 suffix: str = ".tmp") -> None:
    """Call write(file) on a temporary file next to `path`, fsync it, rename it over `path`.

    On any error the temporary is removed and `path` is untouched; a full disk is DiskFull.
    durable: also sync the folder, so that the rename survives a power loss (checkpoints).
    """
    path = Path(path)
    tmp = temporary_path(path, suffix)
    with reporting_disk_full(path, kept):
        try:
            # 'x': O_EXCL (never someone else's file), mode 0o666 under the umask
            with open(tmp, "xb" if "b" in mode else "x") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if durable:
            sync_folder(path.parent)


def atomic_write_text(path, text: str, **options) -> None:
    atomic_write(path, lambda fh: fh.write(text), mode="w", **options)


def append_line(path, line: str, sync: bool = False) -> None:
    """Append one line (a log); a line torn by a full disk or a crash is dropped by the next trim_jsonl."""
    path = Path(path)
    with reporting_disk_full(path, f"the lines before it in {path.name} are intact"):
        with open(path, "a") as fh:
            fh.write(line.rstrip("\n") + "\n")
            fh.flush()
            if sync:
                os.fsync(fh.fileno())


def sync_file(path) -> None:
    """fsync a file written by appends (results.json before the checkpoint it describes)."""
    path = Path(path)
    if not path.exists():
        return
    with reporting_disk_full(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ------------------------------------------------------------------ JSON
def finite(value):
    """`value` with every NaN / infinite float (also in lists and dicts) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return finite(value.item())
    return value


def json_text(value, **options) -> str:
    """json.dumps that writes JSON: non-finite numbers as null (default= converts the unknown types first)."""
    default = options.pop("default", None)
    if default is not None:
        value = json.loads(json.dumps(value, default=default))
    return json.dumps(finite(value), allow_nan=False, **options)


def read_json_lines(path) -> tuple[list, int]:
    """(the JSON objects of a JSON-lines log, how many lines were not JSON): torn or damaged lines are skipped."""
    rows, bad = [], 0
    for line in Path(path).read_bytes().decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def trim_jsonl(path, key: str, upto) -> int:
    """On resume: keep the lines of a JSON-lines log whose `key` is <= upto, atomically; returns how many
    lines were dropped as not JSON (a line torn by a crash mid-write, or damaged bytes).

    Lines after the checkpoint were written by the interrupted run and will be written again.
    """
    path = Path(path)
    if not path.exists():
        return 0
    rows, bad = read_json_lines(path)
    kept = [row for row in rows if isinstance(row.get(key, 0), (int, float)) and row.get(key, 0) <= upto]
    atomic_write_text(path, "".join(json_text(row) + "\n" for row in kept))
    return bad
