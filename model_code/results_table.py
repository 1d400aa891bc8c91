"""The inverse-heat seed's result tables: eval.py --experiment_name NAME --param_name KEY adds each
elbo / fid / frechet result, keyed by KEY, to

    <results_root>/<dataset_name>/evaluation_results/<experiment_name>/<mode>_results.json

and one line to <mode>.log beside it (`experiment_name` names a suite of evaluations, e.g. FID
against delta; `param_name` one value of it, e.g. delta0.013). Evaluations of one experiment run
in parallel: the read-modify-write holds the folder's writer lock, and a busy folder is retried
for a while, since each write takes milliseconds. A key already in the table is never replaced
without --overwrite.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .errors import UserError
from .files import append_line, atomic_write_text, json_text


def table_folder(results_root, dataset_name: str, experiment_name: str) -> Path:
    return Path(results_root) / dataset_name / "evaluation_results" / experiment_name


def refuse_existing_key(folder: Path, mode: str, key: str, overwrite: bool) -> None:
    path = folder / f"{mode}_results.json"
    if overwrite or not path.exists():
        return
    try:
        table = json.loads(path.read_text())
    except ValueError:
        raise UserError(f"{path} is not a JSON results table; move it away or choose another --experiment_name") \
            from None
    if key in table:
        raise UserError(f"{path} already holds the {mode} result '{key}'; nothing was written: pass --overwrite to "
                        f"replace it, or --param_name NAME to keep both")


def add_result(folder: Path, mode: str, key: str, result: dict, overwrite: bool = False,
               wait: float = 120.0) -> Path:
    """Add `result` under `key` to folder/<mode>_results.json and a line to folder/<mode>.log."""
    from . import run_dir

    path = folder / f"{mode}_results.json"
    deadline = time.time() + wait
    while True:
        try:
            with run_dir.claim(folder, owner="eval.py"):
                refuse_existing_key(folder, mode, key, overwrite)
                table = json.loads(path.read_text()) if path.exists() else {}
                table[key] = result
                atomic_write_text(path, json_text(table, indent=2) + "\n", durable=True)
                summary = {k: v for k, v in result.items() if not isinstance(v, (list, dict))}
                append_line(folder / f"{mode}.log", f"{time.strftime('%Y-%m-%d %H:%M:%S')} {key}: {json_text(summary)}",
                            sync=True)
            return path
        except run_dir.RunFolderBusy:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
