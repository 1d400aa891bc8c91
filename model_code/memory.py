"""Refusing a run that cannot fit, from its config, before anything large is allocated.

    check_training(cfg, device, dist, data_dir)      train.py, before the data set and the network
    check_superres(run_folder, factor, n, device)    eval.py --mode superres, before the finer data set

The estimate is a LOWER bound of what a run holds at once, so that a refusal is never wrong:

* the data set: every loader of model_code/data returns the whole train and validation split
  as float32 tensors (volcano, grf, digits, mnist, cifar10, folder); the toy is a stream;
* one training batch and its noise draw, float32: every process draws them for the whole
  global batch (the processes' losses then take their shard), so the runs are the same on
  any number of processes;
* the network's first activation for this process's share of the batch: net width channels
  on the data's grid (2 bytes a value under bf16 autocast).

Left out, so the true peak is higher: the other layers, the gradients, the weights and the
optimiser, the copies made while loading and resizing, padding, the validation samples. A run
that passes may still run out of memory; one that is refused could not have fitted.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import UserError

FLOAT32 = 4
MEMINFO = "/proc/meminfo"
SELF_CGROUP = "/proc/self/cgroup"
CGROUP_ROOT = "/sys/fs/cgroup"
# Training and validation examples of the image sets whose size the config does not give (torchvision's
# official splits; scikit-learn's digits are split by data.val_size). An image folder counts 0: only
# reading it would tell.
DIGITS_IMAGES = 1797
OFFICIAL_SPLITS = {"mnist": (60000, 10000), "cifar10": (50000, 10000)}


# ============================================================================ what the machine has
def available_bytes(device="cpu", meminfo=MEMINFO, cgroup_root=CGROUP_ROOT, self_cgroup=SELF_CGROUP) -> Optional[int]:
    """Memory a new allocation can still get on `device`, in bytes; None when unknown (then nothing is refused).

    CUDA: the device's free memory. CPU: the smaller of MemAvailable and what the tightest memory cgroup
    of this process (a Slurm job, a container) leaves, its limit minus its usage plus its inactive page
    cache, which the kernel reclaims before it kills anything.
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    known = [v for v in (_meminfo_available(meminfo), cgroup_free(cgroup_root, self_cgroup)) if v is not None]
    return min(known) if known else None


def _meminfo_available(path) -> Optional[int]:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cgroup_free(root=CGROUP_ROOT, self_cgroup=SELF_CGROUP) -> Optional[int]:
    """What the memory cgroups of this process leave (cgroup v2, else v1), or None without a limit."""
    root, own = Path(root), _own_cgroups(self_cgroup)
    if (root / "cgroup.controllers").exists():
        return _tightest(root, own.get("", "/"), "memory.max", "memory.current", ("inactive_file",))
    if (root / "memory").is_dir():
        return _tightest(root / "memory", own.get("memory", "/"), "memory.limit_in_bytes", "memory.usage_in_bytes",
                         ("total_inactive_file", "inactive_file"))
    return None


def _own_cgroups(path) -> dict:
    """{controller: path} from /proc/self/cgroup ('' is the v2 hierarchy, 'memory' the v1 memory one)."""
    own = {}
    try:
        for line in Path(path).read_text().splitlines():
            _, controllers, where = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                own[name] = where
    except (OSError, ValueError):
        pass
    return own


def _tightest(mount: Path, own: str, limit_file: str, usage_file: str, cache_keys) -> Optional[int]:
    """The least free memory of the cgroup `own` and its ancestors up to the mount: a job's limit is often
    set on a parent (Slurm's job_N above its step_M)."""
    folder, best = mount / own.strip("/"), None
    while True:
        limit, usage = _number(folder / limit_file), _number(folder / usage_file)
        if limit is not None and usage is not None:
            free = max(0, limit - usage + _stat(folder / "memory.stat", cache_keys))
            best = free if best is None else min(best, free)
        if folder == mount or mount not in folder.parents:
            return best
        folder = folder.parent


def _number(path: Path) -> Optional[int]:
    """An integer file; None when absent or 'max' (no limit)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stat(path: Path, keys) -> int:
    try:
        values = dict(line.split()[:2] for line in path.read_text().splitlines() if len(line.split()) >= 2)
    except (OSError, ValueError):
        return 0
    for key in keys:
        if values.get(key, "").isdigit():
            return int(values[key])
    return 0


# ============================================================================ what a run needs
@dataclass(frozen=True)
class Shape:
    """The data set as the run holds it: `examples` (train + validation) of channels x height x width."""

    examples: int
    channels: int
    height: int
    width: int

    @property
    def values(self) -> int:
        return self.channels * self.height * self.width


@dataclass(frozen=True)
class Estimate:
    """Lower bounds in bytes: the data set (host memory), one batch with its noise, the first activation."""

    data: int
    inputs: int
    activations: int

    @property
    def batch(self) -> int:
        return self.inputs + self.activations

    @property
    def total(self) -> int:
        return self.data + self.batch


def lower_bound(shape: Shape, batch: int, shard: int, net_width: int, activation_bytes: int = FLOAT32) -> Estimate:
    """The bytes a training run holds at least: the data set, `batch` examples and their noise draw, and
    the `net_width`-channel first activation of this process's `shard` of them, on the data's grid."""
    return Estimate(data=shape.examples * shape.values * FLOAT32, inputs=2 * batch * shape.values * FLOAT32,
                    activations=shard * net_width * shape.height * shape.width * activation_bytes)


def data_shape(cfg, data_dir=None, factor: int = 1) -> Optional[Shape]:
    """The config's data set as build.build_dataset makes it (`factor` times finer); None for the toy stream."""
    from .build import GRF_DEFAULT_RESOLUTION
    from .data import _OWN_IMAGE_SHAPE
    from .data.volcano import INT_SIDE

    d = cfg.data
    if d.dataset == "two_atoms":
        return None
    if d.dataset in ("volcano", "grf"):
        side = (d.resolution or (INT_SIDE if d.dataset == "volcano" else GRF_DEFAULT_RESOLUTION)) * factor
        grid = max(0, side - d.npad * factor)            # the loaders crop npad px from each axis
        if d.dataset == "grf":
            return Shape(d.grf_n_train + d.grf_n_valid, 1, grid, grid)
        return Shape(_volcano_files(data_dir, d.max_examples), 2, grid, grid)      # (cos, sin) of the phase
    own_size, own_channels = _OWN_IMAGE_SHAPE.get(d.dataset, (0, 3))            # folder: resolution is required
    size = (d.resolution or own_size) * factor
    return Shape(_image_count(d), d.channels or own_channels, size, size)


def _volcano_files(data_dir, max_examples) -> int:
    """How many files the loader reads (0 when the folder is missing: the loader then says so)."""
    from .data.volcano import list_volcano_files

    if data_dir is None:
        return 0
    try:
        n = len(list_volcano_files(data_dir))
    except UserError:
        return 0
    return n if max_examples is None else min(n, max_examples)


def _image_count(d) -> int:
    """Training (first data.max_examples) plus validation images the loader keeps."""
    def first(n):
        return n if d.max_examples is None else min(n, d.max_examples)

    if d.dataset == "digits":
        valid = max(1, int(round(d.val_size * DIGITS_IMAGES)))          # images.seeded_split_indices
        return first(DIGITS_IMAGES - valid) + valid
    if d.dataset in OFFICIAL_SPLITS:
        train, valid = OFFICIAL_SPLITS[d.dataset]
        return first(train) + valid
    return 0


def net_width(cfg) -> int:
    """Channels of the network's first activation (the toy's MLP sees no grid)."""
    n = cfg.net
    return {"unet": n.unet.model_channels, "mlp": 0}.get(n.type, n.width)


def activation_bytes(precision: str) -> int:
    return 2 if precision == "bf16" else FLOAT32


def training_estimate(cfg, data_dir=None, dist=None) -> Optional[Estimate]:
    """The lower bound for this process of a (possibly multi-process) run; None for the toy."""
    shape = data_shape(cfg, data_dir)
    if shape is None:
        return None
    batch = cfg.train.batch_size
    shard = batch if dist is None else len(range(batch)[dist.shard(batch)])
    return lower_bound(shape, batch, shard, net_width(cfg), activation_bytes(cfg.train.precision))


# ============================================================================ the checks
def check_training(cfg, device, dist=None, data_dir=None, available=None) -> None:
    """Refuse (UserError) a training run whose lower bound exceeds the free memory; rank 0's verdict counts
    on every process (the others exit with status 2 silently, as run_dir.claim_on_main does)."""
    problem = training_problem(cfg, device, dist, data_dir, available)
    refused = problem is not None if dist is None else dist.broadcast_flag(problem is not None)
    if refused:
        if dist is not None and not dist.is_main:
            raise SystemExit(2)
        raise UserError(problem)


def training_problem(cfg, device, dist=None, data_dir=None, available=None) -> Optional[str]:
    """Why the run cannot fit, or None (also when the memory is unknown)."""
    estimate = training_estimate(cfg, data_dir, dist)
    if estimate is None:
        return None
    shape, d = data_shape(cfg, data_dir), cfg.data
    parts = [Part("the data set", estimate.data, f"{shape.examples} examples", host=True),
             Part("one batch and its noise", estimate.inputs),
             Part(f"the first layer's {net_width(cfg)}-channel activations", estimate.activations)]
    lead = (f"data.resolution={'null' if d.resolution is None else d.resolution} ({_grid(shape)} per example), "
            f"train.batch_size={cfg.train.batch_size}: training needs")
    return shortfall(lead, parts, device, available, "lower data.resolution, train.batch_size or data.max_examples")


def check_superres(run_folder, factor: int, n_samples: Optional[int], device_name: str = "auto", data_dir=None,
                   available=None) -> None:
    """Refuse eval.py --mode superres when the finer data set, the samples kept for the metrics and one
    sample's first activation exceed the free memory. Silent where the run's config cannot be read
    (the loading that follows reports that)."""
    import json

    from . import build, config

    try:
        cfg = config.from_dict(json.loads((Path(run_folder) / "config.json").read_text()))
        device = build.resolve_device(device_name)
    except (OSError, ValueError, UserError):
        return
    if cfg.data.dataset not in ("volcano", "grf"):       # superres is for field runs; eval.py says so next
        return
    shape = data_shape(cfg, data_dir, factor)
    n = n_samples or cfg.eval.n_samples
    bound = lower_bound(shape, 0, 1, net_width(cfg), activation_bytes(cfg.train.precision))
    parts = [Part("the data set", bound.data, f"{shape.examples} examples", host=True),
             Part("the samples", n * shape.values * FLOAT32, f"{n} fields", host=True),   # gathered on the host
             Part(f"one sample's {net_width(cfg)}-channel first activation", bound.activations)]
    problem = shortfall(f"--factor {factor} ({_grid(shape)} per field): superres needs", parts, device, available,
                        "lower --factor or --Ntest")
    if problem is not None:
        raise UserError(problem)


@dataclass(frozen=True)
class Part:
    """One term of an estimate; `host`: held in host memory whatever the device (the data set)."""

    label: str
    bytes: int
    note: str = ""
    host: bool = False


def shortfall(lead: str, parts, device, available=None, advice: str = "") -> Optional[str]:
    """The message when the parts exceed the free memory where they live, else None. On a CPU every part
    shares the host's memory; on a GPU the host parts are compared with the host's, the rest with the GPU's."""
    import torch

    available = available_bytes if available is None else available     # looked up now: tests replace it
    device = torch.device(device)
    places = [("this machine", torch.device("cpu"), [p for p in parts if p.host or device.type == "cpu"])]
    if device.type != "cpu":
        places.append((str(device), device, [p for p in parts if not p.host]))
    for where, place, here in places:
        need, have = sum(p.bytes for p in here), (available(place) if here else None)
        if have is not None and need > have:
            detail = ", ".join(f"{p.label} {describe_bytes(p.bytes)}" + (f" for {p.note}" if p.note else "")
                               for p in here)
            return (f"{lead} at least {describe_bytes(need)} ({detail}) but {where} has {describe_bytes(have)} "
                    f"available; {advice}")
    return None


def _grid(shape: Shape) -> str:
    return f"{shape.channels} x {shape.height} x {shape.width} float32"


def describe_bytes(n: int) -> str:
    """1.9 TB, 23.4 GB, ... (powers of 1000)."""
    for unit, size in (("PB", 10 ** 15), ("TB", 10 ** 12), ("GB", 10 ** 9), ("MB", 10 ** 6), ("kB", 10 ** 3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# ============================================================================ after the first steps
# A run holding more than this share of the memory that was free at its start leaves no room for a job
# beside it (or for its own later peaks: validation, checkpoints): say so while the user can still act.
TIGHT_SHARE = 0.8


def peak_bytes(device) -> Optional[int]:
    """The most this process has held so far: CUDA's peak allocation on a GPU, else the peak resident size
    (getrusage; kilobytes on Linux); None where neither can be read."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    if device.type != "cpu":
        return None
    try:
        import resource
    except ImportError:                 # not a Unix
        return None
    scale = 1 if sys.platform == "darwin" else 1024      # macOS reports bytes
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def held_bytes(device) -> Optional[int]:
    """What this process holds now: CUDA's allocation on a GPU, else the resident size (/proc/self/statm;
    where it cannot be read, the peak so far, which only makes the growth after it smaller)."""
    import os

    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return peak_bytes(device)


def tight_memory_note(peak: Optional[int], free_at_start: Optional[int], device) -> Optional[str]:
    """One line when the measured peak takes more than TIGHT_SHARE of the memory free at the start, else None."""
    if peak is None or not free_at_start or peak <= TIGHT_SHARE * free_at_start:
        return None
    where = "this machine" if str(device) == "cpu" else str(device)
    return (f"this run holds {describe_bytes(peak)} after its first steps, {peak / free_at_start:.0%} of the "
            f"{describe_bytes(free_at_start)} {where} had free at its start: beside another job it may be killed "
            f"for memory; lower train.batch_size or data.resolution, or run it where there is more memory "
            f"(a GPU-sized config: see README.org for its CPU-sized form)")
