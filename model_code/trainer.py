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

A stop signal (SIGUSR1 / SIGTERM, or a first Ctrl-C) on any rank stops every rank after the same
step with model.pt written; the same command resumes mid-epoch exactly. max_minutes stops at the
first step that ends past it (rank 0's clock decides), mid-epoch too, the same way.
"""
from __future__ import annotations

import math
import os
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
from .progress import LogLines, steps_within

# A second SIGINT this soon after the first is the same Ctrl-C delivered twice, not a second press:
# a launcher in the terminal's process group forwards what it gets while the terminal signals the
# whole group too (exps/launch_exp.sh's trap; torchrun of versions whose workers share its group).
SAME_CTRL_C_SECONDS = 1.0
# Without max_minutes, a projection past this gets a note after the first timed steps: a run of
# more than a day was most likely started on the wrong machine or with the wrong config.
LONG_RUN_HOURS = 24


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
    """A stop signal arrived; model.pt holds the exact state to resume from. `interrupted`: the stop was a
    Ctrl-C (SIGINT) on every rank that stopped, not a scheduler's SIGTERM / SIGUSR1 (a launcher requeues those)."""

    def __init__(self, message: str, interrupted: bool = False):
        super().__init__(message)
        self.interrupted = interrupted


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    if seconds < 90:
        return f"{seconds:.0f} s"
    if hours < 1.5:
        return f"{seconds / 60:.0f} min"
    if hours < 72:
        return f"{hours:.0f} h" if hours >= 10 else f"{hours:.1f} h"
    return f"{hours / 24:.0f} days"


def time_note(seconds_per_step: float, step: int, total_steps: int, steps_per_unit: int, unit: str, device,
              threads: int, seconds_left: float | None = None, max_minutes: float | None = None) -> str | None:
    """The line that says early that a run will not fit, from the time of its steps: past the time left to
    max_minutes (`seconds_left`), or without one past LONG_RUN_HOURS; None when it fits."""
    left = total_steps - step
    need = seconds_per_step * left
    if seconds_left is not None:
        if need <= seconds_left:
            return None
        fit = steps_within(seconds_per_step, seconds_left, left)
        stop = step + fit
        where = f"step {stop}/{total_steps}"
        if unit == "epoch":
            where += f", in epoch {(stop - 1) // steps_per_unit + 1}/{total_steps // steps_per_unit}"
        text = (f"max_minutes={max_minutes:g} stops this start after about {fit} of the {left} steps left ({where}); "
                f"all of them would take about {_duration(need)}")
    elif need > LONG_RUN_HOURS * 3600:
        text = f"the {left} steps left take about {_duration(need)}"
    else:
        return None
    on_cpu = torch.device(device).type == "cpu"
    here = f"cpu, {threads} thread{'' if threads == 1 else 's'}" if on_cpu else str(device)
    hint = "; this run is GPU-sized (train.device=cuda), or see the CPU-sized configs in README.org" if on_cpu else ""
    per = f"{seconds_per_step:.0f}" if seconds_per_step >= 100 else f"{seconds_per_step:.3g}"
    return f"note: {per} s per step here ({here}): {text}{hint}"


def _say_now(text: str) -> None:
    """One line from inside a signal handler: written to the descriptor, since the handler may have
    interrupted a write to sys.stderr (tqdm's bar), where a second buffered write raises."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):      # a stream without a descriptor (captured output)
        try:
            print(text, file=sys.stderr, flush=True)
        except RuntimeError:
            pass
        return
    os.write(fd, (text + "\n").encode())


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
        self.stop_requested = False           # SIGUSR1 / SIGTERM on this rank
        self.interrupt_requested = False      # a first Ctrl-C on this rank
        self.stop_everywhere = False
        self.stopped_by_ctrl_c = False        # what every rank agreed: Ctrl-C only, no scheduler's signal
        self.out_of_time = False              # rank 0 is past max_minutes, told to every rank
        self.clock = time.monotonic           # max_minutes, step times and ETAs (tests inject one)
        # (free bytes, bytes this process held) before the data set and the network existed: train.py sets it,
        # and the first steps' growth over it is compared with what was free (memory.tight_memory_note).
        self.memory_at_start = None
        self._deadline = None                 # max_minutes on self.clock, for this start
        self._interrupted_at = None
        self._recorded_at = None              # step of this start's last evaluators' record
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
        handlers = {signal.SIGUSR1: self.request_stop, signal.SIGTERM: self.request_stop,
                    signal.SIGINT: self.request_interrupt}
        old = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
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
        limit = None if s.max_minutes is None else 60 * s.max_minutes
        log = LogLines("train", s.unit, s.length, done=self.unit_index(), enabled=s.log_lines and main,
                       clock=self.clock, limit_seconds=limit)
        began = time.time() - self.seconds
        started = self.clock()
        self._deadline = None if limit is None else started + limit
        first, timed = self.step, []
        batches = self.source.batches(s.batch_size, self.generator)
        while self.step < s.total_steps:
            before = self.clock()
            terms, n = self.train_step(next(batches))
            now, here = self.clock(), self.step - first
            if main and here in (2, 3):
                # The first step of a start includes the warm-up (allocations, kernel choice); not the evaluations.
                timed.append(now - before)
                if here == 3:
                    self._note_time(sum(timed) / len(timed), now)
            if limit is not None and not bar.disable:
                # The bar's total is where this start stops, so that its ETA is to max_minutes when that comes first.
                expected = self.step if self.out_of_time else self.step + steps_within(
                    (now - started) / here, self._deadline - now, s.total_steps - self.step)
                if expected != bar.total:
                    bar.total = expected
                    bar.set_description("steps" if expected == s.total_steps else "steps to max_minutes",
                                        refresh=False)
            bar.update(1)
            self.seconds = time.time() - began
            if s.unit == "epoch":
                log.advance(n, self.unit_index(), step=self.step, loss=self._mean("loss"))
            else:
                log.tick(n, self.step, loss=self._mean("loss"))
            # Both agreed in train_step's all-reduce, so every rank stops after the same step.
            stop, late = self.stop_everywhere, self.out_of_time
            boundary = self.step % s.steps_per_unit == 0
            if not (boundary or stop or late):
                continue
            unit = self.unit_index()
            last = self.step == s.total_steps or late
            if boundary:
                self._unit_done(unit, last, log, bar)
            if stop:
                self._save_latest()
                self.dist.barrier()
                how = "Ctrl-C" if self.stopped_by_ctrl_c else "signal"
                where = f"epoch {unit}, step {self.step}" if s.unit == "epoch" else f"step {self.step}"
                raise Preempted(f"stopped by {how} at {where}; model.pt holds the state to resume from",
                                interrupted=self.stopped_by_ctrl_c)
            if late:
                if not boundary:
                    # The resume point first; the record after it is not part of it (see _unit_done).
                    self._save_latest()
                    if self._recorded_at != self.step - 1:    # else the deadline passed in that record's evaluation
                        self._unit_done(unit + 1, True, log, bar, partial=True)
                if main:
                    print(self._time_stop_line(unit, boundary), file=sys.stderr)
                break
        bar.close()

    def _time_stop_line(self, unit: int, boundary: bool) -> str:
        s, minutes = self.s, f"{self.s.max_minutes:g}"
        if boundary:
            where = f"after {s.unit} {unit}/{s.length}" + (f" (step {self.step})" if s.unit == "epoch" else "")
        else:
            where = (f"at step {self.step}, {s.unit} {unit + 1}/{s.length} in progress "
                     f"({self.step - unit * s.steps_per_unit}/{s.steps_per_unit} of its steps)")
        return (f"stopped {where}: max_minutes={minutes} reached; model.pt holds this state: run the same command "
                f"to go on from it for up to {minutes} more minutes (a larger train.max_minutes, or null for no "
                f"limit, may be given on resume)")

    def _note_time(self, seconds_per_step: float, now: float) -> None:
        s = self.s
        note = time_note(seconds_per_step, self.step, s.total_steps, s.steps_per_unit, s.unit, self.device,
                         torch.get_num_threads(), None if self._deadline is None else self._deadline - now,
                         s.max_minutes)
        if note is not None:
            print(note, file=sys.stderr)
        if self.memory_at_start is not None:
            from . import memory

            free, held = self.memory_at_start
            peak = memory.peak_bytes(self.device)
            growth = None if peak is None or held is None else max(0, peak - held)
            note = memory.tight_memory_note(growth, free, self.device)
            if note is not None:
                print(f"note: {note}", file=sys.stderr)

    def _unit_done(self, unit: int, last: bool, log, bar, partial: bool = False) -> None:
        """The work at the end of a unit. partial: the final record of a max_minutes stop inside `unit`, after
        model.pt was written: its results.json line (labelled with that unit) is the last one this start
        writes, and a resume drops it (trim_jsonl keeps the units model.pt completed) and writes the unit
        again at its real end; it replaces no model.<metric>.pt, so the folder stays what the run that
        never stopped has at the same step."""
        s = self.s
        if s.unit == "epoch" and not partial:
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
            values = self.record(unit, keep_best=not partial)
            self._recorded_at = self.step
            # The log line: the tracked metrics and their multiples of the real-vs-real floor.
            tracked = self._tracked()
            # ... with the floors' intervals (so that a value inside one reads "within the floor's noise") and the
            # spectrum errors, which w_total cannot stand in for.
            log.metrics(unit, {k: v for k, v in values.items() if k in tracked or k.endswith("_floor")
                               or k.startswith(("floor_", "spectrum_error"))})
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
        if partial:
            return
        if unit % s.checkpoint_interval == 0 or last:
            self._save_latest()
        if s.snapshot_interval and unit % s.snapshot_interval == 0 and self.dist.is_main:
            self.save(self.state(), self.savedir / "snapshots" / f"model.{self.step}.pt")

    def request_stop(self, *_) -> None:
        """Signal handler (SIGUSR1 / SIGTERM): stop after the current step with a checkpoint."""
        self.stop_requested = True

    def request_interrupt(self, *_) -> None:
        """SIGINT handler: the first Ctrl-C stops like request_stop, the next one aborts at once (a
        checkpoint being written is left whole: the previous file stays, the temporary is removed)."""
        now = self.clock()
        if self._interrupted_at is None:
            self._interrupted_at = now
            self.interrupt_requested = True
            if self.dist.is_main:
                _say_now(("\n" if self.s.progress else "") + "Ctrl-C: stopping after the current step with model.pt "
                         "written (Ctrl-C again aborts without saving)")
            return
        if now - self._interrupted_at < SAME_CTRL_C_SECONDS:
            return
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt

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
        late = self.dist.is_main and self._deadline is not None and self.clock() > self._deadline
        # One all-reduce per step: the global loss terms, whether any rank was signalled (a scheduler's
        # signal or a Ctrl-C) and whether rank 0 is past max_minutes.
        *totals, stops, interrupts, lates = self.dist.sum([
            float(draw.loss.detach()) * count, *(v * count for v in draw.terms.values()),
            float(self.stop_requested), float(self.interrupt_requested), float(late)])
        self.stop_everywhere = stops + interrupts > 0
        # A scheduler's signal anywhere wins: its launcher requeues on exit 3.
        self.stopped_by_ctrl_c = stops == 0 and interrupts > 0
        self.out_of_time = lates > 0
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

    def record(self, unit: int, keep_best: bool = True) -> dict:
        """The evaluators' values at `unit`; keep_best: model.<metric>.pt where select_checkpoint says so."""
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
        for name in self._tracked() if keep_best else []:
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
