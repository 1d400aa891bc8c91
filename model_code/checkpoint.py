"""Checkpoints: atomic, checksummed writes, a format version, and loading without arbitrary pickles.

Payloads hold only tensors, numbers, strings, lists and dicts, so torch.load runs with
weights_only=True (the torch >= 2.6 default): a foreign or tampered file cannot execute
code, and a file from another program is reported as such.

Every checkpoint carries `checksum`, the SHA-256 of its content (every key, number, string and
every tensor's dtype, shape and bytes, in order). A bad disk or a torn copy that changes bytes
inside a tensor still loads with torch (its zip records are not verified on load), so `load`
recomputes the checksum and refuses a mismatch in one line naming the intact checkpoints beside
the damaged one. A write is verified the same way before it replaces the previous file: the
temporary is dropped from the page cache, read back from the disk and its checksum compared, so
a write damaged on its way to the disk never replaces a good checkpoint.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import random
import struct
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .files import atomic_write

FORMAT_VERSION = 2          # 2: `checksum`; 1 (no checksum) is still read, unverified
# What a training resume needs (the optimiser state is optional: best-metric checkpoints hold none).
RESUME_KEYS = ("model", "process_state", "step", "best", "generator", "rng", "source", "running", "seconds")
# What eval.py and sample.py need to rebuild a run.
RUN_KEYS = ("kind", "config", "process", "process_state", "net", "model", "data")


class DamagedCheckpoint(UserError):
    """A checkpoint whose bytes changed after it was written (or that cannot be read at all)."""


# ------------------------------------------------------------------ the checksum
def _hash_into(h, value) -> None:
    """Feed a canonical encoding of `value` into the hash (type tag, then content)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(value, dict):
        h.update(f"D{len(value)}".encode())
        for key, item in value.items():
            _hash_into(h, key)
            _hash_into(h, item)
    elif isinstance(value, (list, tuple)):
        h.update(f"L{len(value)}".encode())
        for item in value:
            _hash_into(h, item)
    elif isinstance(value, bool) or value is None:
        h.update(f"B{value}".encode())
    elif isinstance(value, int):
        h.update(f"I{value};".encode())
    elif isinstance(value, float):
        h.update(b"F" + struct.pack("<d", value))
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        h.update(f"S{len(data)};".encode() + data)
    elif isinstance(value, bytes):
        h.update(f"Y{len(value)};".encode() + value)
    else:                                   # torch.dtype, torch.Size and the like: their text
        h.update(f"O{type(value).__name__}:{value!r};".encode())


def checksum(payload: dict) -> str:
    h = hashlib.sha256()
    _hash_into(h, {k: v for k, v in payload.items() if k != "checksum"})
    return h.hexdigest()


# ------------------------------------------------------------------ writing
def _read_back_from_disk(path: Path) -> dict:
    """The payload as the disk holds it: the file's cached pages are dropped first (after the fsync they
    are clean), so the read comes from the device, not from the memory that wrote it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def atomic_save(payload: dict, path) -> None:
    """Write `payload` with its checksum: a temporary file in the same folder, fsync, verify, rename.

    A crash at any moment leaves either the old file or the new one, never a torn one; a full
    disk is files.DiskFull and the old file stays.
    """
    path = Path(path)
    payload = {**payload, "format_version": FORMAT_VERSION}
    payload["checksum"] = checksum(payload)

    def write(fh):
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
        if checksum(_read_back_from_disk(Path(fh.name))) != payload["checksum"]:
            raise UserError(f"{path} came back from the disk different from what was written (a failing "
                            f"disk?); the previous {path.name} is kept")

    atomic_write(path, write, durable=True)


# ------------------------------------------------------------------ reading
def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


def _run_folder(path: Path) -> Path:
    return path.parent.parent if path.parent.name == "snapshots" else path.parent


def intact_neighbours(path) -> list:
    """[(relative name, step, has optimiser state)] of the other checkpoints of `path`'s run folder that load
    and verify; newest step first."""
    path = Path(path)
    folder = _run_folder(path)
    found = []
    for other in [*folder.glob("model*.pt"), *(folder / "snapshots").glob("model.*.pt")]:
        if other.resolve() == path.resolve() or not other.is_file():
            continue
        try:
            state = load(other, report_neighbours=False)
        except UserError:
            continue
        found.append((str(other.relative_to(folder)), int(state.get("step", 0)), "optimizer" in state))
    return sorted(found, key=lambda item: (-item[1], item[0]))


def damaged_message(path, problem: str) -> str:
    """`problem` (what is wrong with `path`), then the intact checkpoints beside it and how to go on from one."""
    path = Path(path)
    folder = _run_folder(path)
    good = intact_neighbours(path)
    if not good:
        return f"{problem}; no intact checkpoint is beside it: restore it from a copy, or train again in a new folder"
    listed = ", ".join(f"{name} (step {step}{'' if opt else ', no optimiser state'})" for name, step, opt in good)
    best = next((g for g in good if g[2]), good[0])
    return (f"{problem}; intact checkpoints beside it: {listed}. To resume training from one: "
            f"mv {path} {path}.damaged && cp {folder / best[0]} {folder / 'model.pt'}, then run the same command "
            f"(one without optimiser state restarts the optimiser's moments); eval.py and sample.py take one "
            f"with --checkpoint {best[0]}")


def load(path, map_location="cpu", report_neighbours: bool = True) -> dict:
    """A verified payload; a damaged, foreign or newer file is one UserError line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")

    def damaged(problem):
        return DamagedCheckpoint(damaged_message(path, problem) if report_neighbours else problem)

    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:           # weights_only refused it: a pickle that would run code
        raise UserError(f"cannot read checkpoint {path}: {_first_line(err)}") from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, UnicodeDecodeError) as err:
        raise damaged(f"cannot read checkpoint {path} (damaged, truncated or not a checkpoint: "
                      f"{_first_line(err)})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("format_version"), int):
        raise UserError(f"{path} is not a checkpoint of this project")
    version = payload["format_version"]
    if version > FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer version of this project (checkpoint format {version}; this "
                        f"code reads formats 1 to {FORMAT_VERSION}): update the code to read it")
    if version >= 2:
        if not isinstance(payload.get("checksum"), str):
            raise damaged(f"{path} is damaged: it has no checksum")
        if checksum(payload) != payload["checksum"]:
            raise damaged(f"{path} is damaged: its content does not match its checksum (bytes changed after it "
                          f"was written: a failing disk or a torn copy)")
    return payload


def require(payload: dict, keys, path, what: str) -> None:
    """Refuse a checkpoint dict without the keys `what` needs (a file of another program, or hand-made)."""
    missing = [k for k in keys if k not in payload]
    if missing:
        raise UserError(f"{path} is not a complete checkpoint of this project: {what} needs "
                        f"{', '.join(missing)}, which it lacks")


@contextmanager
def fitting(path, what: str = "this run's network"):
    """Loading a state into built objects: a checkpoint of another shape or kind is one line."""
    try:
        yield
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as err:
        said = " ".join(str(err).split())           # torch lists each mismatch on a line of its own
        said = said if len(said) <= 300 else said[:297] + "..."
        raise UserError(f"{path} does not fit {what} (it was written by a run of another config?): "
                        f"{said}") from None


# ------------------------------------------------------------------ random states
def rng_state() -> dict:
    """Every global RNG a run touches (the trainer's own generators are saved separately)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    py = state["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
