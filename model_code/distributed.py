"""torch.distributed set-up from the launcher's environment (torchrun or Slurm's srun).

    torchrun --nproc_per_node=N train.py ...        RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT
    srun --ntasks=N python train.py ...              SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID,
                                                     SLURM_STEP_NODELIST, SLURM_JOB_ID

How the work is split (so N processes train exactly like one process with the same
global batch): every rank holds the same shared random stream, draws the global
batch's order, noise levels and noise for all of its samples, and runs the network
on its own contiguous shard only; its loss is scaled by shard size x N / batch size,
so the average of the ranks' gradients is the gradient of the global batch mean. Validation samples are split the
same way (sample k keeps seed val_seed + k whichever rank draws it). Rank 0 alone
prints and writes files.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of n items (sizes differ by at most one)."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    # Collectives are no-ops in a single process, so callers need no branches.
    def sum(self, values: list[float]) -> list[float]:
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(t)
        return t.tolist()

    def gather_cat(self, part: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's CPU tensor in rank order."""
        if not self.active:
            return part
        parts = [None] * self.world_size
        dist.all_gather_object(parts, part.cpu())
        # A rank with nothing to contribute may hold an empty tensor of another shape.
        return torch.cat([p for p in parts if p.numel()] or parts[:1])

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's value everywhere (decisions that depend on a clock, say)."""
        if not self.active:
            return flag
        box = [flag]
        dist.broadcast_object_list(box, src=0)
        return bool(box[0])

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Start every rank from rank 0's weights."""
        if self.active:
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)

    def average_gradients(self, parameters) -> None:
        """Replace each gradient by its mean over the ranks (one flat all-reduce).

        Done by hand rather than with DistributedDataParallel: the objectives call methods
        other than forward (an interpolant model's predict) and the toy regularizers
        differentiate twice, neither of which DDP's hooks follow.
        """
        if not self.active:
            return
        # Complex spectral weights travel as (real, imag) pairs so one real buffer holds all.
        grads = [torch.view_as_real(p.grad) if p.grad.is_complex() else p.grad
                 for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def _collective_device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def launch_environment(env=None) -> dict | None:
    """(rank, world_size, local_rank, master_addr, master_port) from torchrun or srun; None alone."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env:          # torchrun (or any env:// launcher)
        world = int(env["WORLD_SIZE"])
        if world <= 1:
            return None
        return {"rank": int(env["RANK"]), "world_size": world, "local_rank": int(env.get("LOCAL_RANK", 0)),
                "master_addr": env.get("MASTER_ADDR", "127.0.0.1"), "master_port": env.get("MASTER_PORT", "29500")}
    # SLURM_STEP_NUM_TASKS exists only inside an srun step: a batch script that runs python
    # directly under --ntasks=2 is one process, not rank 0 of two.
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:
        world = int(env["SLURM_STEP_NUM_TASKS"])
        if world <= 1:
            return None
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        # Fixed per job, so every task of the step agrees without talking first.
        port = env.get("MASTER_PORT") or str(15000 + int(env.get("SLURM_JOB_ID", "0")) % 20000)
        return {"rank": int(env["SLURM_PROCID"]), "world_size": world,
                "local_rank": int(env.get("SLURM_LOCALID", 0)),
                "master_addr": env.get("MASTER_ADDR") or first_host(nodes), "master_port": port}
    return None


def first_host(nodelist: str) -> str:
    """First host of a Slurm node list: 'gpu[03-05,7],cpu1' -> 'gpu03'."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if match is None:
        return nodelist
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + re.split(r"[-,]", ranges)[0]


def initialise(device: torch.device, env=None, timeout_minutes: float = 30) -> Context:
    """Join the process group the launcher set up (gloo on CPU, nccl on CUDA)."""
    launch = launch_environment(env)
    if launch is None:
        return Context()
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", launch["master_addr"])
        os.environ.setdefault("MASTER_PORT", str(launch["master_port"]))
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(device)
        from datetime import timedelta
        dist.init_process_group(backend, init_method="env://", rank=launch["rank"],
                                world_size=launch["world_size"], timeout=timedelta(minutes=timeout_minutes))
    return Context(rank=launch["rank"], world_size=launch["world_size"], local_rank=launch["local_rank"])


def rank_device(requested: torch.device, env=None) -> torch.device:
    """Each process of a multi-GPU launch takes the GPU of its local rank."""
    launch = launch_environment(env)
    if launch is None or requested.type != "cuda" or requested.index is not None:
        return requested
    return torch.device("cuda", launch["local_rank"] % max(torch.cuda.device_count(), 1))


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
