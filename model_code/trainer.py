"""THE training loop of every system (after EDM's training_loop: one loop, one loss call).

Receives built objects (build.py) and plain settings; never reads the config. Each step:
a batch from the data source, `process.train_step(model, batch, generator, shard, step, update)`
on this rank's shard (the process's loss; GANO updates its critic, then its generator), where
`update` averages gradients over ranks, clips and steps the optimiser; LR schedule, EMA. Runs are
counted in epochs (finite data) or steps (streams, step-counted runs); every interval below
counts that unit:

    log_interval         one line of results.json (mean loss and terms, lr, validation loss)
    record_interval      the evaluators on fixed seeds; model.<metric>.pt on each new minimum
    checkpoint_interval  model.pt, the exact resume point (also on a stop signal and at the end)
    snapshot_interval    snapshots/model.<step>.pt, kept
    figure_interval      samples/<unit>.png

A stop signal (SIGUSR1 / SIGTERM) on any rank stops every rank after the same step with
model.pt written; the same command resumes mid-epoch exactly.
"""
from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

from . import checkpoint, files
from .distributed import Context
from .errors import UserError
from .processes.base import sample_in_batches
from .progress import LogLines


@dataclass
class LoopSettings:
    unit: str                        # "epoch" or "step"
    length: int                      # number of units
    steps_per_unit: int              # batches per epoch (1 for steps)
    batch_size: int
    log_interval: int = 1
    record_interval: int = 1
    checkpoint_interval: int = 1
    snapshot_interval: Optional[int] = None
    figure_interval: Optional[int] = None
    grad_clip: Optional[float] = None
    ema_update_after: int = 0
    ema_update_every: int = 1
    seed: int = 0
    max_minutes: Optional[float] = None
    track: Optional[list] = None     # metrics with a best checkpoint (None: all the evaluators report)
    select: str = "within_noise"     # or "best": which record model.<metric>.pt keeps (select_checkpoint)
    n_samples: int = 64              # samples per evaluation
    n_plot: int = 16
    eval_batch_size: int = 64
    eval_seed: int = 10_000
    n_valid: Optional[int] = None    # validation examples of the validation loss
    sample_shape: tuple = ()
    sample_options: dict = field(default_factory=dict)
    num_classes: int = 0             # > 0: samples are drawn for labels k % num_classes
    tensorboard: bool = True
    progress: bool = False           # tqdm bars (a terminal)
    log_lines: bool = False          # plain progress lines (a log file)
    pin_memory: bool = False         # CUDA: batches through pinned host memory, copied asynchronously

    @property
    def total_steps(self) -> int:
        return self.length * self.steps_per_unit


def noise_of(values: dict, name: str) -> float:
    """A metric's sampling noise: half the width of its real-vs-real floor's 90% interval (0 without one)."""
    low, high = values.get(f"floor_{name}_p05"), values.get(f"floor_{name}_p95")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return 0.0
    return max(0.0, (high - low) / 2)


def select_checkpoint(value: float, best: float, noise: float, rule: str) -> bool:
    """Whether a record replaces model.<metric>.pt: a new best, or (within_noise) a value no further above
    the best so far than the metric's noise. Validation metrics from a few hundred samples flatten out
    while training still improves the model for a slower sampler, so the lowest of a flat noisy
    curve is a draw among equals; a later one among them has trained longer."""
    if value < best:
        return True
    return rule == "within_noise" and value <= best + noise


class TrainingDiverged(UserError):
    pass


class CheckpointWriteFailed(UserError):
    pass


class Preempted(Exception):
    """A stop signal arrived; model.pt holds the exact state to resume from."""


class Trainer:
    def __init__(self, model, process, source, optimizer, ema, evaluators, valid, savedir, settings: LoopSettings,
                 device, meta: dict, dist: Context | None = None, lr_factor: Callable[[int], float] = lambda s: 1.0,
                 figure: Callable | None = None, start_figures: Callable | None = None):
        self.model, self.process, self.source = model, process, source
        self.optimizer, self.ema, self.evaluators = optimizer, ema, list(evaluators)
        self.valid = valid                    # (x, labels) of the validation split
        self.savedir, self.s, self.device, self.meta = Path(savedir), settings, device, meta
        self.dist = dist or Context()         # rank / world size; rank 0 alone writes
        self.dist.broadcast_parameters(model)
        self.lr_factor, self.figure, self.start_figures = lr_factor, figure, start_figures
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.step = 0
        self.best: dict = {}
        self.running: dict = {}               # sums of the loss terms since the last results.json line
        self.seconds = 0.0                    # training time over all starts
        self.eval_seconds = 0.0               # the part of it spent on validation metrics and figures
        self.stop_requested = False
        self.stop_everywhere = False
        self.writer = None
        self._log_unsynced = False            # results.json has lines not yet fsynced

    # ------------------------------------------------------------------ state
    def state(self, with_optimizer: bool = True) -> dict:
        state = {
            **self.meta, "format_version": checkpoint.FORMAT_VERSION,
            "model": self.model.state_dict(), "ema": self.ema.state_dict() if self.ema is not None else None,
            "process_state": self.process.state_dict(), "step": self.step, "unit": self.unit_index(),
            "best": dict(self.best), "generator": self.generator.get_state(), "rng": checkpoint.rng_state(),
            "source": self.source.state_dict(), "running": dict(self.running), "seconds": self.seconds,
            "eval_seconds": self.eval_seconds,
        }
        if with_optimizer:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state(self, state: dict) -> None:
        """Resume from `state` (checkpoint.RESUME_KEYS). Without an optimiser state (a best-metric checkpoint
        copied over model.pt) the optimiser starts afresh; everything else continues exactly."""
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        elif self.dist.is_main:
            print(f"warning: the checkpoint of step {int(state['step'])} holds no optimiser state; the optimiser "
                  f"starts afresh from there", file=sys.stderr)
        self.process.load_state_dict(state["process_state"])
        self.step = int(state["step"])
        self.best = dict(state["best"])
        self.generator.set_state(state["generator"])
        checkpoint.set_rng_state(state["rng"])
        self.source.load_state_dict(state["source"])
        self.running = dict(state["running"])
        self.seconds = float(state["seconds"])
        self.eval_seconds = float(state.get("eval_seconds", 0.0))    # absent from older checkpoints

    def set_aside_damaged_best(self) -> None:
        """On resume: a model.<metric>.pt that fails its checksum is renamed to .damaged with one warning, and
        its metric's best is forgotten, so that the next record writes a good one in its place."""
        for name in list(self.best):
            path = self.savedir / f"model.{name}.pt"
            if not path.exists():
                continue
            try:
                checkpoint.load(path, report_neighbours=False)
            except UserError as err:
                path.replace(path.with_name(path.name + ".damaged"))
                del self.best[name]
                print(f"warning: {err}; renamed it to {path.name}.damaged, the next evaluation writes a new "
                      f"{path.name}", file=sys.stderr)

    def sampling_model(self):
        """EMA weights when EMA is on (they are what the metrics judge)."""
        return self.ema.shadow if self.ema is not None else self.model

    def unit_index(self) -> int:
        return self.step // self.s.steps_per_unit

    # ------------------------------------------------------------------ loop
    def fit(self) -> None:
        main = self.dist.is_main
        if main:
            self.savedir.mkdir(parents=True, exist_ok=True)
            # Only temporaries whose writer is gone: an eval.py writing beside a resuming run keeps its own.
            files.sweep_temporaries(self.savedir)
            dropped = files.trim_jsonl(self.savedir / "results.json", self.s.unit, self.unit_index())
            if dropped:
                print(f"warning: {self.savedir / 'results.json'}: dropped {dropped} damaged line(s) (not JSON); "
                      f"the others are kept", file=sys.stderr)
            if self.step == 0 and self.start_figures is not None:
                self.start_figures(self.savedir)
        if self.s.tensorboard and main:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.savedir / "tb"), purge_step=self.step)
        old = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGUSR1, signal.SIGTERM)}
        try:
            self._loop()
        except BaseException:
            self._close_tensorboard(quietly=True)       # the error that stopped the loop is the one to report
            raise
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
        self._close_tensorboard()

    def _close_tensorboard(self, quietly: bool = False) -> None:
        writer, self.writer = self.writer, None
        if writer is None:
            return
        try:
            with self._tensorboard():
                writer.close()
        except Exception:
            if not quietly:
                raise

    def _loop(self) -> None:
        s, main = self.s, self.dist.is_main
        bar = tqdm(total=s.total_steps, initial=self.step, desc="steps", disable=not (s.progress and main))
        log = LogLines("train", s.unit, s.length, done=self.unit_index(), enabled=s.log_lines and main)
        began = time.time() - self.seconds
        started = time.time()
        batches = self.source.batches(s.batch_size, self.generator)
        while self.step < s.total_steps:
            terms, n = self.train_step(next(batches))
            bar.update(1)
            self.seconds = time.time() - began
            if s.unit == "epoch":
                log.advance(n, self.unit_index(), step=self.step, loss=self._mean("loss"))
            else:
                log.tick(n, self.step, loss=self._mean("loss"))
            stop = self.stop_everywhere
            if self.step % s.steps_per_unit and not stop:
                continue
            unit = self.unit_index()
            # Rank 0's clock decides, so every rank stops after the same unit.
            out_of_time = self.dist.broadcast_flag(s.max_minutes is not None
                                                   and time.time() - started > 60 * s.max_minutes)
            last = self.step == s.total_steps or out_of_time
            if not self.step % s.steps_per_unit:
                self._unit_done(unit, last, log, bar)
            if stop:
                self._save_latest()
                self.dist.barrier()
                raise Preempted(f"stopped by signal at {s.unit} {unit}, step {self.step}; "
                                f"model.pt holds the state to resume from")
            if out_of_time:
                if main:
                    print(f"stopping after {s.unit} {unit}: max_minutes={s.max_minutes} reached", file=sys.stderr)
                break
        bar.close()

    def _unit_done(self, unit: int, last: bool, log, bar) -> None:
        s = self.s
        if s.unit == "epoch":
            log.unit_done(unit, step=self.step, loss=self._mean("loss"))
        row = None
        if unit % s.log_interval == 0 or last:
            row = {s.unit: unit, "step": self.step, **{k: self._mean(k) for k in self.running if k != "_count"},
                   "lr": self.optimizer.param_groups[0]["lr"]}
            valid_loss = self.validation_loss()
            if valid_loss is not None:
                row["loss_valid"] = valid_loss
            self.running = {}
        evaluating = time.time()
        if unit % s.record_interval == 0 or last:
            values = self.record(unit)
            # The log line: the tracked metrics and their multiples of the real-vs-real floor.
            tracked = self._tracked()
            log.metrics(unit, {k: v for k, v in values.items() if k in tracked or k.endswith("_floor")})
            row = {**(row or {s.unit: unit, "step": self.step}), **values}
        if s.figure_interval and (unit % s.figure_interval == 0 or last) and self.figure is not None:
            self.draw_figure(unit)
        spent = time.time() - evaluating
        self.eval_seconds += spent
        self.seconds += spent                # as the next step's clock will count it
        if row is not None and self.dist.is_main:
            # time: the run's wall-clock seconds so far, eval_time: the part spent validating.
            row["time"] = round(self.seconds, 2)
            row["eval_time"] = round(self.eval_seconds, 2)
            self.write_row(row)
            bar.set_postfix(loss=f"{row.get('loss', math.nan):.4g}")
        if unit % s.checkpoint_interval == 0 or last:
            self._save_latest()
        if s.snapshot_interval and unit % s.snapshot_interval == 0 and self.dist.is_main:
            self.save(self.state(), self.savedir / "snapshots" / f"model.{self.step}.pt")

    def request_stop(self, *_) -> None:
        """Signal handler (SIGUSR1 / SIGTERM): stop after the current step with a checkpoint."""
        self.stop_requested = True

    def _mean(self, key: str) -> float:
        count = self.running.get("_count", 0)
        return self.running.get(key, math.nan) / count if count else math.nan

    def _set_lr(self) -> None:
        factor = self.lr_factor(self.step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def train_step(self, batch):
        """One optimiser step on the global batch; returns the logged terms and the batch size."""
        self.model.train()
        self._set_lr()
        n = len(batch)
        shard, count = self._shard(n)
        # Each rank's mean over its rows, weighted so that averaging over ranks gives the batch mean.
        update = partial(self._update, count * self.dist.world_size / n)
        draw = self.process.train_step(self.model, self.to_device(batch), self.generator, shard, self.step, update)
        self._update_ema()
        names = ["loss", *draw.terms]
        # One all-reduce per step: the global loss terms and whether any rank was signalled.
        *totals, stops = self.dist.sum([float(draw.loss.detach()) * count,
                                        *(v * count for v in draw.terms.values()), float(self.stop_requested)])
        self.stop_everywhere = stops > 0
        bad = [name for name, total in zip(names, totals) if not math.isfinite(total)]
        if bad:
            # Nothing is saved from here on: model.pt on disk is the last good state.
            raise TrainingDiverged(f"{bad[0]} became {totals[names.index(bad[0])] / n} at step {self.step}; "
                                   f"stopped, the last good checkpoint is kept in {self.savedir}")
        self.step += 1
        for name, total in zip(names, totals):
            self.running[name] = self.running.get(name, 0.0) + total / n
        self.running["_count"] = self.running.get("_count", 0) + 1
        if self.writer is not None:
            with self._tensorboard():
                self.writer.add_scalar("train/loss_step", totals[0] / n, self.step)
        return dict(zip(names, totals)), n

    def to_device(self, batch):
        """The batch on the training device; on CUDA with pin_memory through page-locked memory, so that
        the copy runs asynchronously and the host goes on to queue the step's kernels."""
        if not (self.s.pin_memory and torch.device(self.device).type == "cuda"):
            return batch.to(self.device)
        pinned = replace(batch, x=batch.x.pin_memory(),
                         labels=None if batch.labels is None else batch.labels.pin_memory())
        return pinned.to(self.device, non_blocking=True)

    def _update(self, weight: float, loss, parameters=None) -> None:
        """Backpropagate `loss` (times `weight`) into `parameters` (None: all), average the gradients
        over the ranks, clip them and step the optimiser (parameters without a gradient stay as they are)."""
        params = list(self.model.parameters()) if parameters is None else list(parameters)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * weight).backward(inputs=None if parameters is None else params)
        self.dist.average_gradients(params)
        if self.s.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, self.s.grad_clip)
        self.optimizer.step()

    def _update_ema(self) -> None:
        if self.ema is None:
            return
        if self.step < self.s.ema_update_after:
            self.ema.copy_from(self.model)
        elif self.step % self.s.ema_update_every == 0:
            self.ema.update(self.model)

    def _shard(self, n: int):
        """This rank's rows of a batch of n and how many they are; an empty shard runs one row at
        weight zero so that its gradients exist for the all-reduce."""
        part = self.dist.shard(n)
        count = part.stop - part.start
        return (part if count else slice(0, 1)), count

    @torch.no_grad()
    def validation_loss(self) -> float | None:
        """Loss on the validation split with the same draws every time (comparable values)."""
        x, labels = self.valid
        if x is None or len(x) == 0:
            return None
        from .data.sources import Batch

        if self.s.n_valid is not None:
            x, labels = x[:self.s.n_valid], None if labels is None else labels[:self.s.n_valid]
        self.model.eval()
        gen = torch.Generator().manual_seed(self.s.seed + 1)
        total, size = 0.0, self.s.eval_batch_size
        for start in range(0, len(x), size):
            batch = Batch(x[start:start + size], None if labels is None else labels[start:start + size])
            shard, count = self._shard(len(batch))
            draw = self.process.loss(self.model, self.to_device(batch), gen, shard, self.step)
            total += float(draw.loss) * count
        return self.dist.sum([total])[0] / len(x)

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def generate(self, n: int, seed: int | None = None) -> torch.Tensor:
        """n samples with seeds eval_seed + k: each rank draws its contiguous share, every rank gets all."""
        seed = self.s.eval_seed if seed is None else seed
        model = self.sampling_model().eval()
        mine = [seed + k for k in range(n)][self.dist.shard(n)]
        labels = torch.tensor([(s - seed) % self.s.num_classes for s in mine]) if self.s.num_classes else None
        mine = sample_in_batches(self.process, model, mine, self.s.sample_shape, self.device,
                                 self.s.eval_batch_size, labels, **self.s.sample_options)
        return self.dist.gather_cat(mine)

    def context(self):
        cache = {}

        def generate(n):
            if n not in cache:
                cache[n] = self.generate(n)
            return cache[n]

        return SimpleNamespace(model=self.sampling_model().eval(), process=self.process, valid=self.valid[0],
                               valid_labels=self.valid[1], generate=generate, device=self.device, step=self.step,
                               dist=self.dist, savedir=self.savedir, cache=cache)

    def record(self, unit: int) -> dict:
        ctx = self.context()
        values = {}
        for evaluator in self.evaluators:
            values.update(evaluator(ctx))
        if self.figure is not None and not self.s.figure_interval:
            # Every rank takes part in generating (a gather); the evaluators' samples when they drew some.
            n = self.s.n_samples if self.s.n_samples in ctx.cache else self.s.n_plot
            samples = ctx.generate(n)[:self.s.n_plot]
            if self.dist.is_main:
                self.figure(samples, self.savedir / "samples" / f"{unit}", f"{self.s.unit} {unit}", values)
        for name in self._tracked():
            value = values.get(name)
            if value is None or not math.isfinite(value):
                continue
            keep = select_checkpoint(value, self.best.get(name, math.inf), noise_of(values, name), self.s.select)
            self.best[name] = min(value, self.best.get(name, math.inf))
            if keep and self.dist.is_main:
                self.save(self.state(with_optimizer=False), self.savedir / f"model.{name}.pt")
        return values

    def _tracked(self) -> list:
        """The metrics with a best checkpoint: train.track, or every metric of every evaluator."""
        if self.s.track is not None:
            return list(self.s.track)
        return [m for ev in self.evaluators for m in ev.metrics]

    def draw_figure(self, unit: int) -> None:
        samples = self.generate(self.s.n_plot)
        if self.dist.is_main:
            self.figure(samples, self.savedir / "samples" / f"{unit}", f"{self.s.unit} {unit}", {})

    # ------------------------------------------------------------ writing
    def _save_latest(self) -> None:
        if self.dist.is_main:
            self.save(self.state(), self.savedir / "model.pt")

    def write_row(self, row: dict) -> None:
        """One line of results.json: JSON (a NaN loss is null), fsynced before the next checkpoint (save)."""
        path = self.savedir / "results.json"
        try:
            files.append_line(path, files.json_text(row))
        except OSError as err:                                  # a full disk is files.DiskFull already
            raise CheckpointWriteFailed(f"cannot append to {path}: {err.strerror or err}; model.pt is "
                                        f"intact") from None
        self._log_unsynced = True
        if self.writer is not None:
            with self._tensorboard():
                for key, value in row.items():
                    if key not in (self.s.unit, "step") and isinstance(value, (int, float)) and math.isfinite(value):
                        self.writer.add_scalar(key, value, row["step"])
                self.writer.flush()

    def _tensorboard(self):
        """TensorBoard writes on a thread of its own and raises a full disk at the next call."""
        return files.reporting_disk_full(self.savedir / "tb", "the checkpoints and results.json are intact")

    def save(self, state: dict, path: Path) -> None:
        """Atomic checkpoint write; a full disk (or any OS error) is one clear line, old file kept.

        results.json is fsynced first, so that after a power loss the log never lags the checkpoint."""
        try:
            if self._log_unsynced:
                files.sync_file(self.savedir / "results.json")
                self._log_unsynced = False
            with files.reporting_disk_full(path):
                path.parent.mkdir(parents=True, exist_ok=True)
                checkpoint.atomic_save(state, path)
        except OSError as err:                                  # a full disk is files.DiskFull by now
            raise CheckpointWriteFailed(f"cannot write {path}: {err.strerror or err}; the previous {path.name} "
                                        f"is intact, nothing else was changed") from None
