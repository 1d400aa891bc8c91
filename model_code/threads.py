"""How many CPU threads torch may use: the launcher's allocation, not every core of the node.

torch's default is one thread per core of the machine. On a shared node that
oversubscribes the cores other jobs hold: a 3-epoch CPU run took 10 minutes with the
default beside another job and 15 s with one thread. Order of precedence:

1. the run's `threads` config key (>= 1; null = the rest of this list, and config.validate
   refuses 0, which once meant "automatic" only by being falsy);
2. OMP_NUM_THREADS, when the user set it;
3. SLURM_CPUS_PER_TASK (the job's allocation per task);
4. the cores this process may run on (its affinity mask) divided by the processes
   launched on this node (torchrun's LOCAL_WORLD_SIZE, srun's tasks per node, MPI's
   local size).
"""
from __future__ import annotations

import os
import re


def local_processes(env=None) -> int:
    """Processes of this launch on this node (1 when launched alone)."""
    env = os.environ if env is None else env
    for key in ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE",
                "PMI_LOCAL_SIZE", "PALS_LOCAL_SIZE"):
        if env.get(key, "").isdigit():
            return max(1, int(env[key]))
    if "SLURM_STEP_NUM_TASKS" in env:
        # "2(x3),1": the first node's count is this node's count on a homogeneous step.
        per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or ""
        match = re.match(r"\d+", per_node)
        if match:
            return max(1, int(match.group()))
    return 1


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                     # no affinity on this platform (macOS)
        return os.cpu_count() or 1


def choose(requested: int | None = None, env=None, cores: int | None = None) -> tuple[int, str]:
    """(thread count, where it came from)."""
    env = os.environ if env is None else env
    if requested is not None:
        return int(requested), "config key train.threads"
    for key in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        value = env.get(key, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value), key
    cores = available_cores() if cores is None else cores
    local = local_processes(env)
    return max(1, cores // local), f"{cores} available cores / {local} process(es) on this node"


def apply(requested: int | None = None) -> dict:
    """Set torch's intra-op thread count; returns {'threads', 'threads_from'} for provenance.json.

    Without the config key the count is only ever lowered: raising it in a process forked
    from one whose OpenMP pool already ran (multiprocessing's fork start method) hangs the
    child in libgomp, and torch's own default never exceeds the machine's cores anyway.
    """
    import torch

    n, source = choose(requested)
    current = torch.get_num_threads()
    if requested is None and n > current:
        n, source = current, f"{source} asked {n}; kept torch's {current} (only lowered)"
    torch.set_num_threads(n)
    return {"threads": n, "threads_from": source}
