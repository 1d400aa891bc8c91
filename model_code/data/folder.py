"""Which data folder a run reads, and how its run folder remembers it.

train.py records the folder its data set was read from, made absolute, in provenance.json (each
start's `data_dir`) and in every checkpoint, so that an evaluation rebuilds the same split without
the environment the run was trained in (`DATA_DIR=data python train.py ...` followed by a plain
`python eval.py ...`). An evaluation takes, in this order:

    --data_dir            the folder given on the command line (it replaces data.root too)
    DATA_DIR              when the user set it; exps/env.sh's own default does not count
    the run's record      the folder training read
    nothing               the data set's own default, as at training

The launchers' exps/env.sh fills an unset DATA_DIR with <repo>/data and exports that default as
DATA_DIR_DEFAULT, so that a launcher's default never hides the folder a run was trained on.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional

DEFAULT_MARK = "DATA_DIR_DEFAULT"


def absolute(folder) -> Optional[str]:
    """`folder` as an absolute path (from the current directory), or None."""
    return None if folder is None else os.path.abspath(os.path.expanduser(str(folder)))


def user_data_dir(environ: Mapping[str, str]) -> Optional[str]:
    """DATA_DIR when the user set it, None when unset or when it is only env.sh's default."""
    value = environ.get("DATA_DIR") or None
    if value is not None and environ.get(DEFAULT_MARK) and absolute(value) == absolute(environ[DEFAULT_MARK]):
        return None
    return value


def recorded(run_folder, state: Optional[dict] = None) -> Optional[str]:
    """The data folder a run's training last read: the newest start in provenance.json that names one,
    else the checkpoint's record (`state`), else None. A damaged provenance.json counts as no record."""
    try:
        history = json.loads((Path(run_folder) / "provenance.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        history = []
    if isinstance(history, list):
        for entry in reversed(history):
            if isinstance(entry, dict) and isinstance(entry.get("data_dir"), str):
                return entry["data_dir"]
    value = (state or {}).get("data_dir")
    return value if isinstance(value, str) else None


def for_evaluation(flag: Optional[str], environ: Mapping[str, str], record: Optional[str]) -> tuple:
    """(folder, where it came from, replaces data.root) for an evaluation; folder None: nothing given."""
    if flag is not None:
        return absolute(flag), "--data_dir", True
    given = user_data_dir(environ)
    if given is not None:
        return absolute(given), "DATA_DIR", False
    if record is not None:
        return record, "recorded by the run's training", True
    fallback = environ.get("DATA_DIR") or None
    return absolute(fallback), "DATA_DIR (exps/env.sh's default)", False
