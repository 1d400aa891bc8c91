"""Plain progress lines for logs that are not terminals (a Slurm job's stderr).

On a terminal tqdm draws bars; in a log file those are off, and without this the log
says nothing until the run ends. A `LogLines` prints one line per unit of work (an
epoch, or a block of steps), at most one a minute, always the first and the last; a
unit longer than `within` seconds (5 minutes) also gets a line every `within` seconds
from inside it; every validation round gets its own line with its metrics:

    [12:03:10] train epoch 3/100 (step 120) loss 0.4312 | 52.1 samples/s | elapsed 0:01:02 | ETA 0:31:10
    [12:03:12] validation epoch 3: w_var 0.0123 = 1.12x floor (floor 0.011); ...; w_total 0.0579: at the real-vs-real floor (floor 0.0636)

With a time limit (train.max_minutes) the ETA is to the limit where that comes first, marked
"ETA 0:03:12 (max_minutes)". `enabled_for(quiet, is_main)` says whether a process should print
them at all.
"""
from __future__ import annotations

import math
import sys
import time


def enabled_for(quiet: bool, is_main: bool = True, stream=None) -> bool:
    """Plain lines when stderr is not a terminal, not --quiet, and on rank 0 only."""
    stream = sys.stderr if stream is None else stream
    return not quiet and is_main and not stream.isatty()


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def remaining(elapsed: float, done: int, left: int, limit: float | None = None) -> tuple[float, bool]:
    """Seconds to the end of the `left` units still to do at the pace of the `done` ones (`elapsed`
    seconds), or to the time limit `limit` (seconds from the same start) where that comes first;
    and whether it is the limit."""
    if left <= 0:
        return 0.0, False
    pace = elapsed / done * left if done > 0 else math.inf
    if limit is not None and limit - elapsed < pace:
        return max(0.0, limit - elapsed), True
    return pace, False


def steps_within(seconds_per_step: float, seconds_left: float, steps_left: int) -> int:
    """How many of `steps_left` steps of `seconds_per_step` run before a time limit `seconds_left`
    away: the loop stops after the first step that ends past it, so that one counts too."""
    if not (seconds_per_step > 0 and math.isfinite(seconds_per_step)):
        return steps_left
    return min(steps_left, math.floor(max(seconds_left, 0.0) / seconds_per_step) + 1)


class LogLines:
    """Progress of `total` units (epochs or steps) starting at `done`; prints to `stream`. limit_seconds:
    the loop stops that long after this object is made (train.max_minutes), and the ETA is to
    whichever comes first, the last unit or the limit (then marked "(max_minutes)")."""

    def __init__(self, what: str, unit: str, total: int, done: int = 0, enabled: bool = True,
                 every: float = 60.0, within: float = 300.0, stream=None, clock=time.monotonic,
                 limit_seconds: float | None = None):
        self.what, self.unit, self.total = what, unit, int(total)
        self.limit = limit_seconds
        self.enabled = enabled
        self.every, self.within = every, within
        self.stream = stream
        self.clock = clock
        self.began = clock()
        self.start_done = int(done)          # units already done before this process (resume)
        self.samples = 0
        self.last_line = None

    def _print(self, text: str) -> None:
        stream = sys.stderr if self.stream is None else self.stream
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=stream, flush=True)
        self.last_line = self.clock()

    def _rate_and_eta(self, done: int) -> str:
        elapsed = self.clock() - self.began
        parts = []
        if self.samples and elapsed > 0:
            parts.append(f"{self.samples / elapsed:.3g} samples/s")
        eta, by_limit = remaining(elapsed, done - self.start_done, self.total - done, self.limit)
        parts.append(f"elapsed {_clock(elapsed)}")
        parts.append(f"ETA {_clock(eta)}" + (" (max_minutes)" if by_limit else ""))
        return " | ".join(parts)

    def tick(self, samples: int, done: int, **fields) -> None:
        """A short unit (a step, a batch) of `samples` samples ended; unit_done's line rules apply."""
        self.samples += int(samples)
        self.unit_done(done, **fields)

    def advance(self, samples: int, done: int, **fields) -> None:
        """Inside unit done + 1: count samples; a line only after `within` seconds without one."""
        self.samples += int(samples)
        if not self.enabled:
            return
        since = self.clock() - (self.last_line if self.last_line is not None else self.began)
        if since >= self.within:
            self._print(self._line(done, fields, inside=True))

    def unit_done(self, done: int, **fields) -> None:
        """At the end of unit `done` (1-based): a line if it is the first or last, or a minute has passed."""
        if not self.enabled:
            return
        first = self.last_line is None
        due = first or done >= self.total or self.clock() - self.last_line >= self.every
        if due:
            self._print(self._line(done, fields))

    def _line(self, done: int, fields: dict, inside: bool = False) -> str:
        where = (f"{self.unit} {done + 1}/{self.total} (in progress)" if inside
                 else f"{self.unit} {done}/{self.total}")
        values = " ".join(f"{k} {_value(v)}" for k, v in fields.items() if v is not None)
        return f"{self.what} {where}" + (f" {values}" if values else "") + f" | {self._rate_and_eta(done)}"

    def metrics(self, done: int, values: dict, label: str = "validation") -> None:
        """Every validation round: its metrics on one line, each one with a floor (or a multiple of it)
        worded against it by metrics.floor_caption, its floor keys folded in (metrics.caption_names);
        the items are then separated by '; '."""
        if not self.enabled:
            return
        from .metrics import caption_names, floor_caption, has_floor

        numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        names = caption_names(numbers)
        worded = {name for name in names if has_floor(numbers, name)}
        shown = ("; " if worded else " ").join(
            floor_caption(numbers, name) if name in worded else f"{name} {_value(numbers[name])}" for name in names)
        self._print(f"{label} {self.unit} {done}: {shown}")
