"""torch.distributed set-up from the launcher's environment (torchrun, Slurm's srun, or an MPI mpiexec).

    torchrun --nproc_per_node=N train.py ...        RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT
    srun --ntasks=N python train.py ...              SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID,
                                                     SLURM_STEP_NODELIST, SLURM_JOB_ID
    mpiexec -n N python train.py ...                 PMI_* (MPICH, Intel MPI), OMPI_COMM_WORLD_* (Open MPI),
                                                     PMIX_RANK, MV2_COMM_WORLD_* (MVAPICH2), PALS_* (Cray);
                                                     rank 0's address through mpi4py, else MASTER_ADDR

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
import socket
import time
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import UserError


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


# Variables MPI launchers give each process: MPICH / Intel MPI (Hydra), Open MPI, PMIx, MVAPICH2,
# Cray PALS. Several launchers set more than one family (Open MPI also sets PMIX_RANK, Cray's
# mpiexec PMI_RANK and PALS_RANKID), so all that are set must agree.
MPI_RANK = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK", "PALS_RANKID")
MPI_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
MPI_LOCAL_RANK = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK", "PMI_LOCAL_RANK",
                  "PALS_LOCAL_RANKID")
DEFAULT_PORT = "29500"
# How long the processes of an MPI launch wait for each other at the start: a process that
# stopped at a launch error of its own never arrives, and the others must not wait forever.
# Generous, because importing torch from a cold shared file system can take minutes.
MPI_ARRIVAL_SECONDS = 300
_CLEAN_START = "start train.py with one launcher, from an environment without another launch's variables"


def _set(env, name) -> str:
    return env.get(name, "").strip()


def launcher_kind(env=None) -> str | None:
    """'torchrun', 'srun', 'mpi' or None (alone), from which variables are set; never raises.

    The same answer on every process of a launch, because it looks only at what the launcher
    sets alike everywhere: which families exist and the process counts. An mpiexec inside an
    srun step (an `srun --pty bash` shell, or Hydra / Open MPI starting their per-node daemons
    with srun, as they do under Slurm) leaves the step's SLURM_* variables in every rank,
    counting the shells or daemons rather than the ranks: a different MPI count wins. srun
    itself sets MPI variables only to its own values (--mpi=pmi2 / pmix).
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env:
        return "torchrun"
    mpi = any(_set(env, name) for name in MPI_RANK)
    # SLURM_STEP_NUM_TASKS exists only inside an srun step: a batch script that runs python
    # directly under --ntasks=2 is one process, not rank 0 of two.
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:
        sizes = {_set(env, name) for name in MPI_SIZE if _set(env, name)}
        if not mpi or sizes <= {_set(env, "SLURM_STEP_NUM_TASKS")}:
            return "srun"
    return "mpi" if mpi else None


def launch_environment(env=None) -> dict | None:
    """The launch this process belongs to, from the launcher's environment alone; None alone.

    A dict of launcher (launcher_kind), rank, world_size, local_rank, master_addr, master_port;
    a UserError when the variables contradict each other. For 'mpi' the master address and
    port are MASTER_ADDR / MASTER_PORT or None, and world_size is None with PMIx alone:
    join_mpi completes them (resolve_launch does both).
    """
    env = os.environ if env is None else env
    kind = launcher_kind(env)
    if kind == "torchrun":                              # torchrun (or any env:// launcher)
        world = int(env["WORLD_SIZE"])
        if world <= 1:
            return None
        return {"launcher": kind, "rank": int(env["RANK"]), "world_size": world,
                "local_rank": int(env.get("LOCAL_RANK", 0)),
                "master_addr": env.get("MASTER_ADDR", "127.0.0.1"), "master_port": env.get("MASTER_PORT", "29500")}
    if kind == "srun":
        mpi = mpi_variables(env)
        if mpi is not None and mpi["rank"] != int(env["SLURM_PROCID"]):
            raise UserError(f"srun's SLURM_PROCID={env['SLURM_PROCID']} and the MPI launcher's {mpi['variables']} "
                            f"disagree on this process's rank; {_CLEAN_START}")
        world = int(env["SLURM_STEP_NUM_TASKS"])
        if world <= 1:
            return None
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        # Fixed per job, so every task of the step agrees without talking first.
        port = env.get("MASTER_PORT") or str(15000 + int(env.get("SLURM_JOB_ID", "0")) % 20000)
        return {"launcher": kind, "rank": int(env["SLURM_PROCID"]), "world_size": world,
                "local_rank": int(env.get("SLURM_LOCALID", 0)),
                "master_addr": env.get("MASTER_ADDR") or first_host(nodes), "master_port": port}
    if kind == "mpi":
        mpi = mpi_variables(env)
        return None if mpi["world_size"] == 1 else mpi
    return None


def _agreed_value(env, names, what) -> tuple[int | None, str]:
    """The value the variables `names` agree on (None when none is set) and 'NAME=value, ...' for messages."""
    found = [(name, _set(env, name)) for name in names if _set(env, name)]
    said = ", ".join(f"{name}={value}" for name, value in found)
    for name, value in found:
        if not value.isdigit():
            raise UserError(f"{name}={value} is not a {what}; {_CLEAN_START}")
    values = {int(value) for _, value in found}
    if len(values) > 1:
        raise UserError(f"the MPI launcher's variables disagree on the {what} ({said}); {_CLEAN_START}")
    return (values.pop() if values else None), said


def mpi_variables(env) -> dict | None:
    """An MPI launcher's rank, size and local rank (launch_environment's keys); None without a rank variable.

    world_size is None when only PMIX_RANK is set (PMIx gives the size through its API, which
    join_mpi reaches through mpi4py). 'variables' names what was read, for messages.
    """
    rank, rank_said = _agreed_value(env, MPI_RANK, "rank")
    if rank is None:
        return None
    size, size_said = _agreed_value(env, MPI_SIZE, "number of processes")
    local, local_said = _agreed_value(env, MPI_LOCAL_RANK, "local rank")
    if size is not None and (size < 1 or rank >= size or (local or 0) >= size):
        raise UserError(f"{', '.join(filter(None, (rank_said, local_said)))} is not a rank of {size_said} "
                        f"processes; {_CLEAN_START}")
    return {"launcher": "mpi", "rank": rank, "world_size": size,
            # Without a local rank, GPUs go by global rank, which is right on one node.
            "local_rank": rank if local is None else local,
            "master_addr": env.get("MASTER_ADDR") or None, "master_port": env.get("MASTER_PORT") or None,
            "variables": ", ".join(filter(None, (rank_said, size_said)))}


def join_mpi(launch: dict | None, world, env=None, problem: UserError | None = None) -> dict | None:
    """Complete an MPI launch: check it against mpi4py's COMM_WORLD, agree on rank 0's address and port.

    `launch` is launch_environment's answer, or None with `problem`, the UserError it raised
    here; `world` is mpi4py's COMM_WORLD, or None without mpi4py. Every process decides from
    the same gathered facts, so a problem on any of them stops all of them with one message
    rather than leaving the others waiting in a collective. mpi4py linked to another MPI than
    the launcher (the pip mpich wheel under a cluster's Open MPI mpirun) sees each process as
    a world of one: then MASTER_ADDR, with the launcher's rank and size, or an error saying so.
    """
    env = os.environ if env is None else env
    alone = world is None or world.Get_size() == 1
    if not alone:
        _wait_for_all(world, MPI_ARRIVAL_SECONDS)
        mine = str(problem) if problem else (launch["rank"], launch["world_size"], socket.gethostname())
        peers = world.allgather(mine)
        if problem:
            raise problem
        for index, peer in enumerate(peers):
            if isinstance(peer, str):
                raise UserError(f"process {index} of this launch stopped: {peer}")
        for index, (their_rank, their_size, host) in enumerate(peers):
            if their_rank != index or their_size not in (None, len(peers)):
                raise UserError(
                    f"mpi4py's MPI_COMM_WORLD has {len(peers)} processes, but its process {index} (on {host}) was "
                    f"given rank {their_rank} of {their_size or '?'} by the launcher's variables; {_CLEAN_START}")
        addr, port = world.bcast(_rank0_master(peers, env) if world.Get_rank() == 0 else None, root=0)
        return {**launch, "world_size": len(peers), "master_addr": addr, "master_port": port}
    if problem:
        raise problem
    rank, size, said = launch["rank"], launch["world_size"], launch["variables"]
    seen_one = world is not None
    if size is None:
        if rank == 0:
            return None              # PMIx alone and a world of one: nothing says there are others
        raise UserError(f"{said} is set but no variable gives the number of processes"
                        f"{' and mpi4py sees one' if seen_one else ''}: install mpi4py built on this MPI, or set "
                        f"RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT as torchrun does")
    if not env.get("MASTER_ADDR"):
        if seen_one:
            raise UserError(
                f"the launcher started {size} processes ({said}) but mpi4py's MPI sees only this one: mpi4py is "
                f"built on another MPI than this mpiexec; pip uninstall mpich so that mpi4py uses the site's MPI "
                f"(or launch with the mpiexec of mpi4py's MPI), or set MASTER_ADDR to rank 0's host")
        raise UserError(f"an MPI launch of {size} processes ({said}) needs rank 0's address: pip install mpi4py "
                        f"(built on this MPI), or set MASTER_ADDR to rank 0's host (and MASTER_PORT to a free port)")
    return {**launch, "master_addr": env["MASTER_ADDR"], "master_port": env.get("MASTER_PORT") or DEFAULT_PORT}


class _Late(UserError):
    """Some process never reached the start: MPI must not be finalised with the barrier pending."""


def _wait_for_all(world, seconds: float) -> None:
    request = world.Ibarrier()
    deadline = time.monotonic() + seconds
    while not request.Test():
        if time.monotonic() > deadline:
            raise _Late(f"not every process of this MPI launch of {world.Get_size()} reached the start within "
                        f"{seconds:.0f} s (a process that stopped at an error of its own says why)")
        time.sleep(0.01)


def _rank0_master(peers, env) -> tuple[str, str]:
    """On rank 0: the address the others reach it at, and a port (MASTER_ADDR / MASTER_PORT when set)."""
    port = env.get("MASTER_PORT") or str(_free_port())
    if env.get("MASTER_ADDR"):
        return env["MASTER_ADDR"], port
    hosts = [host for _, _, host in peers]
    others = [host for host in hosts if host != hosts[0]]
    if not others:
        return "127.0.0.1", port
    # The source address of the route to another node is one that node can reach; rank 0's
    # host name may resolve to 127.0.1.1 on its own node.
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((others[0], 9))              # UDP: connecting sends nothing
            addr = probe.getsockname()[0]
        if not addr.startswith("127."):
            return addr, port
    except OSError:
        pass
    return hosts[0], port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _mpi_world():
    """mpi4py's COMM_WORLD, or None without mpi4py (missing, its MPI library missing, MPI4PY_RC_INITIALIZE=0)."""
    try:
        import mpi4py

        # Finalised by resolve_launch, except after _Late, where finalising would wait forever.
        mpi4py.rc.finalize = False
        with warnings.catch_warnings():
            # mpi4py's multi-line warning about a foreign mpiexec: join_mpi says it in one line.
            warnings.simplefilter("ignore", RuntimeWarning)
            from mpi4py import MPI
    except (ImportError, RuntimeError):
        return None
    if not MPI.Is_initialized() or MPI.Is_finalized():
        return None
    return MPI.COMM_WORLD


def _finalize_mpi() -> None:
    """MPI serves only to agree on the address: finalising now keeps its library (network
    hooks, progress threads) out of the training that follows."""
    from mpi4py import MPI

    if MPI.Is_initialized() and not MPI.Is_finalized():
        MPI.Finalize()


_RESOLVED: dict = {}


def resolve_launch(env=None, world=None) -> dict | None:
    """launch_environment, completed by join_mpi for an MPI launch (what initialise and rank_device use).

    `world` stands in for mpi4py's COMM_WORLD in tests. The MPI agreement is collective, so it
    runs once per process: remembered under the launcher variables it was made from (a child
    forked with other variables decides afresh).
    """
    env = os.environ if env is None else env
    if launcher_kind(env) != "mpi":
        return launch_environment(env)
    key = tuple(env.get(name) for name in (*MPI_RANK, *MPI_SIZE, *MPI_LOCAL_RANK, "MASTER_ADDR", "MASTER_PORT"))
    if world is None and key in _RESOLVED:
        return _RESOLVED[key]
    try:
        launch, problem = launch_environment(env), None
    except UserError as err:
        launch, problem = None, err
    if launch is None and problem is None:
        return None                   # one process (PMI_SIZE=1): no need to start MPI
    own_world = world is None
    if own_world:
        world = _mpi_world()
    finalize = own_world and world is not None
    try:
        launch = join_mpi(launch, world, env, problem)
    except _Late:
        finalize = False
        raise
    finally:
        if finalize:
            _finalize_mpi()
    if own_world:
        _RESOLVED[key] = launch
    return launch


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
    launch = resolve_launch(env)
    if launch is None:
        return Context()
    if not dist.is_initialized():
        os.environ["MASTER_ADDR"] = str(launch["master_addr"])
        os.environ["MASTER_PORT"] = str(launch["master_port"])
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(device)
        from datetime import timedelta
        try:
            dist.init_process_group(backend, init_method="env://", rank=launch["rank"],
                                    world_size=launch["world_size"], timeout=timedelta(minutes=timeout_minutes))
        except RuntimeError as err:
            # Only rank 0 listens; a busy port is either another run's or a second "rank 0".
            if "EADDRINUSE" not in str(err):
                raise
            raise UserError(f"port {launch['master_port']} on {socket.gethostname()} is in use (another run on this "
                            f"node, or a second process that was also given rank 0): set MASTER_PORT to a free "
                            f"port, or check the launcher's rank variables") from None
    return Context(rank=launch["rank"], world_size=launch["world_size"], local_rank=launch["local_rank"])


def rank_device(requested: torch.device, env=None) -> torch.device:
    """Each process of a multi-GPU launch takes the GPU of its local rank."""
    launch = resolve_launch(env)
    if launch is None or requested.type != "cuda" or requested.index is not None:
        return requested
    return torch.device("cuda", launch["local_rank"] % max(torch.cuda.device_count(), 1))


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
