"""What every evaluation of eval.py (and sample.py) shares: checkpoint words in folder names,
the refusal to overwrite, the sampler settings of a loaded run, seeded generation, writing.

A sample k always comes from seed `seed + k` alone (processes/base.py), so generating in
chunks of --val_batch_size gives the same samples as one big batch.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from . import files

DEFAULT_SEED = 20_000_000
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
TOY_SAMPLERS = ("euler_maruyama", "heun_ode", "euler_ode")


def finish_name(parts: list, ema: bool, seed: int) -> str:
    """An evaluation folder name: the settings' words, then -raw for raw weights and the seed when not the default."""
    if not ema:
        parts.append("raw")
    if seed != DEFAULT_SEED:
        parts.append(f"seed{seed}")
    return "-".join(parts)


def checkpoint_file(name) -> str:
    """--checkpoint as build.checkpoint_path takes it; '0' is the latest (model.pt), as the older scripts had it."""
    name = str(name)
    return "model.pt" if name == "0" else name


def checkpoint_word(name) -> str:
    """The checkpoint in a folder name: model.pt -> latest, model.w_total.pt -> w_total, N -> stepN."""
    name = checkpoint_file(name)
    if name.isdigit():
        return f"step{name}"
    word = Path(name).name
    word = word[:-3] if word.endswith(".pt") else word
    word = "latest" if word == "model" else word[len("model."):] if word.startswith("model.") else word
    return re.sub(r"[^A-Za-z0-9._+]", "_", word) or "checkpoint"


def check_tag(tag) -> None:
    if tag is not None and not SAFE_NAME.fullmatch(tag):
        raise UserError(f"--tag must be a folder name of letters, digits, '.', '_', '+', '-' (not starting "
                        f"with '.' or '-'); got '{tag}'")


# ------------------------------------------------------------------ evaluation folders
# An evaluation folder is complete only once its marker (metrics.json; sample.py: samples.json) is in
# place: the marker is written last and lists every other file with its size and SHA-256. Replacing an
# evaluation removes the old marker first, so a kill at any later moment leaves a folder that reads as
# incomplete, never new files beside old metrics. The new files are written into a staging folder inside
# it first (named after its writer), so a full disk or a crash while they are written leaves the old
# evaluation as it was.
OUTPUTS = ("*.npz", "*.json", "*.png", "*.pdf", "*.mp4", "*.gif", "*_log.txt")


def folder_state(folder: Path, marker: str = "metrics.json", legacy=("samples.npz",),
                 marker_optional: bool = False) -> str:
    """'none' (no outputs), 'complete' or 'incomplete' (interrupted, or files that do not match the marker's
    list). A marker without a file list (written before it had one) is complete when `legacy` files exist;
    marker_optional: so is a folder without a marker (sample.py's folders had none; Staging.commit moves
    samples.npz in last, so its presence means every file but the marker is in place)."""
    folder = Path(folder)
    if not any(p.is_file() for pattern in OUTPUTS for p in folder.glob(pattern)):
        return "none"
    if marker_optional and not (folder / marker).exists():
        return "complete" if all((folder / name).is_file() for name in legacy) else "incomplete"
    try:
        summary = json.loads((folder / marker).read_text())
    except (OSError, ValueError):
        return "incomplete"
    if not isinstance(summary, dict):
        return "incomplete"
    listed = summary.get("files")
    if listed is None:
        return "complete" if all((folder / name).is_file() for name in legacy) else "incomplete"
    for name, info in listed.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != info.get("bytes"):
            return "incomplete"
    return "complete"


def damaged_files(folder: Path, summary: dict) -> list:
    """The files of a complete evaluation whose SHA-256 differs from the marker's list (plot checks this)."""
    return [name for name, info in (summary.get("files") or {}).items()
            if _sha256(Path(folder) / name) != info.get("sha256")]


def refuse_existing(folder: Path, overwrite: bool, how: str = "--tag NAME to keep both",
                    marker: str = "metrics.json", what: str = "an evaluation", announce: bool = True,
                    marker_optional: bool = False) -> None:
    """Refuse a complete evaluation without --overwrite; an incomplete one is replaced (announce: say so)."""
    state = folder_state(folder, marker, marker_optional=marker_optional)
    if state == "complete" and not overwrite:
        raise UserError(f"{folder} already holds {what}; nothing was written: pass --overwrite to replace it, "
                        f"or {how}")
    if state == "incomplete" and announce:
        print(f"note: {folder} holds an incomplete result (interrupted before its {marker} was written); it is "
              f"replaced", file=sys.stderr)


def _sha256(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


class Staging:
    """The files of one evaluation, written in a staging folder and put in place together (module comment).

        with Staging(out) as stage:
            np.savez(stage.path / "samples.npz", ...)      # any writer, into stage.path
            stage.commit(summary)                            # the marker last, with the file list
    """

    def __init__(self, folder: Path, marker: str = "metrics.json"):
        self.folder, self.marker = Path(folder), marker
        self.path = files.temporary_path(self.folder / "staging")

    def __enter__(self):
        with files.reporting_disk_full(self.path, f"{self.folder} is as it was"):
            self.path.mkdir(parents=True)
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)
        return False

    def write(self, name: str, write, mode: str = "wb") -> None:
        with files.reporting_disk_full(self.folder / name, f"{self.folder} is as it was"):
            with open(self.path / name, mode) as fh:
                write(fh)

    def commit(self, summary: dict) -> None:
        """Old marker out, old outputs out, new files in, new marker (listing them) last."""
        # samples.npz last: the old sample.py folders have no marker, and there it stands for one
        new = sorted((p for p in self.path.iterdir() if p.is_file()), key=lambda p: (p.name == "samples.npz", p.name))
        for path in new:                       # durable before the old evaluation goes
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
        (self.folder / self.marker).unlink(missing_ok=True)
        files.sync_folder(self.folder)
        for pattern in OUTPUTS:
            for old in self.folder.glob(pattern):
                if old.is_file():
                    old.unlink()
        listed = {}
        for path in new:
            listed[path.name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
            os.replace(path, self.folder / path.name)
        summary = {**summary, "files": listed}
        files.atomic_write_text(self.folder / self.marker, files.json_text(summary, indent=2, default=_plain) + "\n",
                                kept="the evaluation is incomplete and is replaced by the next run of the same "
                                     "command", durable=True)


def sampler_options(run, sampler=None, steps=None, sigma_min=None, delta=None) -> dict:
    """process.sample's options for a loaded run (build.sampler_setup), the flags that do not apply refused."""
    from . import build

    ptype = run.process.name
    if ptype == "levels":
        for flag, value in (("--sampler", sampler), ("--steps", steps), ("--sigma_min", sigma_min)):
            if value is not None:
                raise UserError(f"{flag} does not apply to a levels run (its sampler is the reverse chain; "
                                f"set its noise with --delta)")
        options = build.sampler_setup(run.cfg)
        if delta is not None:
            if not delta > 0:
                raise UserError(f"--delta must be positive, got {delta}")
            options["delta"] = float(delta)
        return options
    if delta is not None:
        raise UserError("--delta applies to levels runs only")
    if ptype == "adversarial":
        for flag, value in (("--sampler", sampler), ("--steps", steps), ("--sigma_min", sigma_min)):
            if value is not None:
                raise UserError(f"{flag} does not apply to a GANO run: a sample is one evaluation of its generator")
        return {}
    if ptype == "wrapped_ve":
        if sigma_min is not None:
            raise UserError("--sigma_min does not apply to a toy run (its grid is the process's sigma(t))")
        if sampler is not None and sampler not in TOY_SAMPLERS:
            raise UserError(f"a toy run samples with {' | '.join(TOY_SAMPLERS)}; got --sampler {sampler}")
        options = build.sampler_setup(run.cfg, steps=steps)
        if sampler not in (None, "euler_maruyama"):
            options["sampler"] = sampler
        return options
    return build.sampler_setup(run.cfg, sampler, steps, sigma_min)


def sampler_summary(options: dict) -> dict:
    """The sampler settings as JSON: name, steps word, network evaluations per sample, the sigma grid."""
    from .build import sampler_label
    from .samplers import network_evaluations

    name, word = sampler_label(options)
    rest = {k: v for k, v in options.items() if k not in ("sampler", "sigmas")}
    out = {"sampler": name, "steps": word, "sampler_options": rest}
    if name == "generator":
        out["nfe"] = 1
    if "sigmas" in options:
        sigmas = [float(s) for s in options["sigmas"]]
        out.update(nfe=network_evaluations(name, len(sigmas), rest), sigmas=sigmas)
    return out


def labels_for(run, seeds, label=None):
    """Class labels of conditional runs: `label` for every sample, else sample k gets class k mod classes."""
    if not run.num_classes:
        if label is not None:
            raise UserError("--label applies to class-conditional runs only")
        return None
    if label is not None:
        if not 0 <= label < run.num_classes:
            raise UserError(f"--label must lie in 0..{run.num_classes - 1}; got {label}")
        return torch.full((len(seeds),), int(label), dtype=torch.long)
    return torch.tensor([(s - seeds[0]) % run.num_classes for s in seeds], dtype=torch.long)


@torch.no_grad()
def generate(run, seeds, shape, options: dict, batch_size: int, progress: bool = False, log_lines: bool = False,
             labels=None, timing: dict | None = None) -> torch.Tensor:
    """len(seeds) samples of one-sample shape `shape` (CPU float32), in chunks of batch_size.

    timing (a dict) receives the batch size, the sampling seconds and the samples per second."""
    from .processes.base import sample_in_batches
    from .progress import LogLines

    log = LogLines("generate", "batch", -(-len(seeds) // batch_size), enabled=log_lines)
    start = time.perf_counter()
    samples = sample_in_batches(run.process, run.model, seeds, shape, run.device, batch_size, labels, progress,
                                after_batch=lambda done, size: log.tick(size, done), **options)
    if timing is not None:
        seconds = time.perf_counter() - start
        timing.update(batch_size=batch_size, seconds=seconds, samples_per_second=len(seeds) / max(seconds, 1e-9))
    return samples


def write_evaluation(folder: Path, summary: dict, arrays: dict | None = None, npz: str = "samples.npz",
                     after=None) -> None:
    """`npz` (when there are arrays), what after(staging folder) draws, then metrics.json listing them all."""
    with Staging(folder) as stage:
        if arrays is not None:
            stage.write(npz, lambda fh: np.savez_compressed(fh, **arrays))
        if after is not None:
            after(stage.path)
        stage.commit(summary)


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


def run_summary(run, name: str, mode: str, checkpoint: str, ema: bool) -> dict:
    """The head of every metrics.json: what was evaluated."""
    return {"name": name, "mode": mode, "checkpoint": checkpoint, "step": int(run.state.get("step", 0)),
            "kind": run.kind, "process": run.process.name, "dataset": run.cfg.data.dataset,
            "ema": bool(ema and run.state.get("ema") is not None)}
