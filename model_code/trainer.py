"""The training loop of the VE score model (ARCHITECTURE §2, §3.9).

Receives built objects and plain settings; never reads the config. Per epoch: the
denoising loss over shuffled batches, a validation loss on fixed noise, one line of
results.json and `model.pt`; every `record_interval` epochs (and at the last) it
generates `Ntest` samples with fixed per-sample seeds, computes the five metrics and
writes `model.<metric>.pt` on each new minimum.
"""
from __future__ import annotations

import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoint, metrics, plotting
from .distributed import Context
from .errors import UserError
from .files import trim_jsonl
from .progress import LogLines
from .samplers import generate


@dataclass
class TrainSettings:
    epochs: int
    batch_size: int
    record_interval: int
    Ntest: int
    val_batch_size: int
    val_seed: int
    n_plot: int
    augment: bool
    grad_clip: float | None
    seed: int
    kind: str                      # "phase" or "real": which per-sample statistics apply
    sampler_options: dict = field(default_factory=dict)
    sampling_sigmas: object = None   # the sampler's decreasing sigma grid (tensor)
    tensorboard: bool = True
    progress: bool = True            # tqdm bars (a terminal)
    log_lines: bool = False          # plain progress lines (a log file), see progress.py
    max_minutes: float | None = None


class TrainingDiverged(UserError):
    pass


class CheckpointWriteFailed(UserError):
    pass


class Preempted(Exception):
    """A stop signal arrived; model.pt holds the exact mid-epoch state to resume from."""


def random_flips(u: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each field left-right and up-down with probability 1/2 each."""
    flip = torch.rand(2, u.shape[0], generator=generator) < 0.5
    u = torch.where(flip[0].view(-1, 1, 1, 1).to(u.device), u.flip(-1), u)
    return torch.where(flip[1].view(-1, 1, 1, 1).to(u.device), u.flip(-2), u)


class Trainer:
    def __init__(self, denoiser, optimizer, ema, process, objective, noise, sampler, train_data, valid_data,
                 savedir, settings: TrainSettings, device, checkpoint_meta: dict, dist: Context | None = None):
        self.denoiser = denoiser
        self.optimizer = optimizer
        self.ema = ema
        self.process = process            # noise levels, for the figures
        self.objective = objective        # objective(model, u, generator, shard) -> one loss draw
        self.noise = noise
        self.sampler = sampler
        self.train_data = train_data
        self.valid_data = valid_data
        self.savedir = Path(savedir)
        self.s = settings
        self.device = device
        self.dist = dist or Context()     # rank / world size; rank 0 alone writes
        self.dist.broadcast_parameters(denoiser)
        self.progress = settings.progress and self.dist.is_main
        self.meta = checkpoint_meta          # config, net / noise descriptions, data shape
        self.resolution = tuple(train_data.shape[-2:])
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.epoch = 0
        self.step = 0
        self.best = {name: math.inf for name in metrics.METRIC_NAMES}
        # Position inside the epoch in progress, so a preempted run resumes mid-epoch exactly.
        self.order = None            # this epoch's permutation of the training set
        self.batches_done = 0
        self.epoch_loss = [0.0, 0]   # running (sum of loss * batch size, count)
        self.stop_requested = False
        self.real_stats = metrics.sample_stats(valid_data, settings.kind)
        self.floor = metrics.floor_metrics(valid_data, settings.kind, seed=settings.seed)
        # The floor and its bootstrap 5th-95th percentile interval, written with every recorded row.
        self.floor_columns = metrics.floor_columns(self.floor, metrics.floor_interval(
            valid_data, settings.kind, seed=settings.seed, real_stats_cached=self.real_stats,
            warn=self.dist.is_main))
        self.writer = None
        self.log = LogLines("train", "epoch", settings.epochs, enabled=False)

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        return {
            **self.meta,
            "format_version": checkpoint.FORMAT_VERSION,
            "model": self.denoiser.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best": dict(self.best),
            "generator": self.generator.get_state(),
            "rng": checkpoint.rng_state(),
            "epoch_progress": None if self.order is None else {
                "order": self.order, "batches_done": self.batches_done, "loss_sum": self.epoch_loss[0],
                "count": self.epoch_loss[1]},
        }

    def load_state(self, state: dict) -> None:
        self.denoiser.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.best.update(state["best"])
        self.generator.set_state(state["generator"])
        checkpoint.set_rng_state(state["rng"])
        progress = state.get("epoch_progress")
        if progress is not None:
            self.order = progress["order"]
            self.batches_done = int(progress["batches_done"])
            self.epoch_loss = [float(progress["loss_sum"]), int(progress["count"])]

    def sampling_model(self):
        """EMA weights when EMA is on (they are what the metrics judge)."""
        return self.ema.shadow if self.ema is not None else self.denoiser

    # ------------------------------------------------------------------ loop
    def fit(self) -> None:
        main = self.dist.is_main
        if main:
            self.savedir.mkdir(parents=True, exist_ok=True)
            # Temporary files of writes that a crash (kill -9) interrupted; the real files are whole.
            for stale in self.savedir.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
            if self.epoch == 0:
                self.plot_noise()
            self._trim_results()
        if self.s.tensorboard and main:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(self.savedir / "tb"), purge_step=self.step)
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self.request_stop)
        bar = tqdm(range(self.epoch + 1, self.s.epochs + 1), desc="epochs", disable=not self.progress,
                   initial=self.epoch, total=self.s.epochs)
        self.log = LogLines("train", "epoch", self.s.epochs, done=self.epoch, enabled=self.s.log_lines and main)
        began = time.time()
        for epoch in bar:
            start = time.time()
            loss = self.train_epoch(epoch)
            row = {"epoch": epoch, "loss": loss, "loss_valid": self.validation_loss(),
                   "lr": self.optimizer.param_groups[0]["lr"]}
            self.epoch = epoch
            # Rank 0's clock decides, so every rank stops after the same epoch.
            out_of_time = self.dist.broadcast_flag(
                self.s.max_minutes is not None and time.time() - began > 60 * self.s.max_minutes)
            self.log.unit_done(epoch, step=self.step, loss=loss, loss_valid=row["loss_valid"])
            if epoch % self.s.record_interval == 0 or epoch == self.s.epochs or out_of_time:
                values = self.record(epoch)
                row.update(values)
                self.log.metrics(epoch, {k: v for k, v in values.items() if k in metrics.METRIC_NAMES
                                         or k.endswith("_x_floor")})
            row["time"] = time.time() - start
            if main:
                self.write_row(row)
                self.save(self.state(), self.savedir / "model.pt")
            bar.set_postfix(loss=f"{loss:.4g}", w_total=row.get("w_total", "-"))
            if out_of_time and main:
                print(f"stopping after epoch {epoch}: max_minutes={self.s.max_minutes} reached", file=sys.stderr)
            if out_of_time:
                break
        if self.writer is not None:
            self.writer.close()

    def request_stop(self, *_) -> None:
        """Signal handler (SIGUSR1 / SIGTERM): stop after the current step with a checkpoint."""
        self.stop_requested = True

    def train_epoch(self, epoch: int) -> float:
        self.denoiser.train()
        n = len(self.train_data)
        if self.order is None:
            self.order = torch.randperm(n, generator=self.generator)
            self.batches_done, self.epoch_loss = 0, [0.0, 0]
        steps = range(self.batches_done * self.s.batch_size, n, self.s.batch_size)
        for start in tqdm(steps, desc=f"epoch {epoch}", leave=False, disable=not self.progress):
            u = self.train_data[self.order[start:start + self.s.batch_size]]
            if self.s.augment:
                u = random_flips(u, self.generator)
            loss, n = self.sharded_loss(u.to(self.device), self.generator, train=True)
            self.optimizer.zero_grad(set_to_none=True)
            (loss * (self._local_count(n) * self.dist.world_size / n)).backward()
            self.dist.average_gradients(self.denoiser.parameters())
            if self.s.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.denoiser.parameters(), self.s.grad_clip)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.denoiser)
            # One all-reduce per step: the global batch loss and whether any rank was signalled.
            total, stops = self.dist.sum([loss.item() * self._local_count(n), float(self.stop_requested)])
            if not math.isfinite(total):
                # Nothing is saved from here on: model.pt on disk is the last good state.
                raise TrainingDiverged(f"loss became {total / n} at epoch {epoch}, step {self.step}; "
                                       f"stopped, last good checkpoint kept in {self.savedir}")
            self.step += 1
            self.batches_done += 1
            self.epoch_loss[0] += total
            self.epoch_loss[1] += n
            self.log.advance(n, epoch - 1, step=self.step, loss=self.epoch_loss[0] / self.epoch_loss[1])
            if self.writer is not None:
                self.writer.add_scalar("train/loss_step", total / n, self.step)
            if stops > 0:
                if self.dist.is_main:
                    self.save(self.state(), self.savedir / "model.pt")
                self.dist.barrier()
                raise Preempted(f"stopped by signal at epoch {epoch}, step {self.step}; "
                                f"model.pt holds the state to resume from")
        mean = self.epoch_loss[0] / self.epoch_loss[1]
        self.order = None
        return mean

    def _local_count(self, n: int) -> int:
        part = self.dist.shard(n)
        return part.stop - part.start

    def sharded_loss(self, u: torch.Tensor, generator: torch.Generator, train: bool):
        """This rank's mean loss over its shard of the batch u, and the batch size.

        The objective draws noise for all of u (the shared stream stays in step on every
        rank); a rank with an empty shard runs one sample at weight zero so that its
        gradients exist for the all-reduce.
        """
        part = self.dist.shard(len(u))
        if part.stop == part.start:
            part = slice(0, 1)
        with torch.set_grad_enabled(train):
            return self.objective(self.denoiser, u, generator, part), len(u)

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Loss on the validation split with the same noise every epoch (comparable values)."""
        self.denoiser.eval()
        gen = torch.Generator().manual_seed(self.s.seed + 1)
        total = 0.0
        for start in range(0, len(self.valid_data), self.s.val_batch_size):
            u = self.valid_data[start:start + self.s.val_batch_size].to(self.device)
            loss, n = self.sharded_loss(u, gen, train=False)
            total += loss.item() * self._local_count(n)
        return self.dist.sum([total])[0] / len(self.valid_data)

    # ------------------------------------------------------------ validation
    def record(self, epoch: int) -> dict:
        model = self.sampling_model().eval()
        # Each rank draws its contiguous share of the Ntest seeds; every rank then holds all.
        seeds = [self.s.val_seed + k for k in range(self.s.Ntest)][self.dist.shard(self.s.Ntest)]
        if seeds:
            mine = generate(model, self.noise, self.s.sampling_sigmas, len(seeds), self.resolution, seeds,
                            self.s.val_batch_size, sampler=self.sampler, device=self.device,
                            progress=self.progress, **self.s.sampler_options)
        else:
            mine = torch.empty(0, *self.valid_data.shape[1:])
        samples = self.dist.gather_cat(mine)
        values = metrics.validation_metrics(self.valid_data, samples, self.s.kind, self.real_stats)
        values.update(metrics.relative_to_floor(values, self.floor))
        values.update(self.floor_columns)
        if self.dist.is_main:
            plotting.plot_fields(samples[:self.s.n_plot], self.savedir / "samples" / f"{epoch}", kind=self.s.kind,
                                 suptitle=f"epoch {epoch}: {plotting.floor_caption(values, 'w_total')}")
        for name in metrics.METRIC_NAMES:
            value = values.get(name)
            if value is not None and math.isfinite(value) and value < self.best[name]:
                self.best[name] = value
                if self.dist.is_main:
                    state = self.state()
                    del state["optimizer"]
                    self.save(state, self.savedir / f"model.{name}.pt")
        return values

    def write_row(self, row: dict) -> None:
        try:
            with open(self.savedir / "results.json", "a") as fh:
                fh.write(json.dumps(row) + "\n")
        except OSError as err:
            raise CheckpointWriteFailed(f"cannot append to {self.savedir / 'results.json'}: "
                                        f"{err.strerror or err} (disk full?); model.pt is intact") from None
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()

    def _trim_results(self) -> None:
        """On resume, drop lines of epochs after the checkpoint (each epoch appears once)."""
        trim_jsonl(self.savedir / "results.json", "epoch", self.epoch)

    def save(self, state: dict, path: Path) -> None:
        """Atomic checkpoint write; a full disk (or any OS error) is one clear line, old file kept."""
        try:
            checkpoint.atomic_save(state, path)
        except OSError as err:
            raise CheckpointWriteFailed(f"cannot write {path}: {err.strerror or err} (disk full?); "
                                        f"the previous {path.name} is intact, nothing else was changed") from None

    # ----------------------------------------------------------------- figures
    @torch.no_grad()
    def plot_noise(self) -> None:
        gen = torch.Generator().manual_seed(self.s.seed + 2)
        out = self.savedir / "noise"
        z = self.noise.sample(5, self.resolution, gen)
        plotting.plot_fields(z, out / "noise_samples", kind="real", ncols=5, colorbar=True,
                             suptitle="noise samples z ~ N(0, C) (channel 0)")
        init = self.process.sigma_max * self.noise.sample(5, self.resolution, gen)
        plotting.plot_fields(init, out / "init_samples", kind="real", ncols=5, colorbar=True,
                             suptitle=f"sampler start sigma_1 z, sigma_1 = {self.process.sigma_max:.4g}")
        plotting.plot_matrix(self.noise.covariance(self.resolution, 200), out / "noise_sampler_C",
                             title="noise covariance C[0:200, 0:200] (from the kernel)")
        # u + sigma z from sigma_1 to sigma_L, exactly as training perturbs.
        sig = self.process.sigmas
        idx = torch.linspace(0, len(sig) - 1, min(16, len(sig))).round().long()
        sigmas = sig[idx].float()
        u = self.train_data[:1].expand(len(sigmas), *self.train_data.shape[1:])
        z = self.noise.sample(len(sigmas), self.resolution, gen)
        noised = self.process.perturb(u, sigmas, z)
        plotting.plot_fields(noised, self.savedir / "u_noised", kind="real", ncols=4, exts=("png",),
                             titles=[f"u + {s:.3g} z" for s in sigmas.tolist()], colorbar=True)
