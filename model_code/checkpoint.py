"""Checkpoints: atomic writes, a format version, and loading without arbitrary pickles.

Payloads hold only tensors, numbers, strings, lists and dicts, so torch.load runs with
weights_only=True (the torch >= 2.6 default): a foreign or tampered file cannot execute
code, and a file from another program is reported as such.
"""
import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .files import atomic_write

FORMAT_VERSION = 1


def atomic_save(payload: dict, path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    atomic_write(path, lambda fh: torch.save(payload, fh))
    # The rename itself is durable only once the folder is synced.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot read checkpoint {path}: {first[:200]}") from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} is not a checkpoint of this project (format version {FORMAT_VERSION})")
    return payload


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
