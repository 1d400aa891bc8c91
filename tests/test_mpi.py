"""MPI launchers (mpiexec / mpirun): each launcher's variables, disagreeing launches, and real mpiexec runs.

The real runs use the mpiexec next to this Python (the mpich wheel's Hydra, which starts local
processes without ssh) and compare `mpiexec -n 2` with the 1-process run of the `trained` fixture.
Without mpiexec or mpi4py they are skipped with the reason; REQUIRE_MPI_TESTS=1 makes that a failure.
"""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from model_code import checkpoint
from model_code.distributed import DEFAULT_PORT, join_mpi, launch_environment, launcher_kind, resolve_launch
from model_code.distributed import _wait_for_all
from model_code.errors import UserError
from helpers import assert_trains_like_one
from systems import train_args
from test_distributed import clean_env

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = "heat_digits"              # the cheapest of the tiny runs


# ------------------------------------------------------------------ each launcher's variables
@pytest.mark.parametrize("env, rank, size, local", [
    ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}, 1, 2, 1),      # MPICH Hydra
    ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
      "PMIX_RANK": "3"}, 3, 4, 1),                                                                      # Open MPI
    ({"MV2_COMM_WORLD_RANK": "2", "MV2_COMM_WORLD_SIZE": "3", "MV2_COMM_WORLD_LOCAL_RANK": "0"}, 2, 3, 0),  # MVAPICH2
    ({"PMI_RANK": "5", "PMI_SIZE": "8", "PMI_LOCAL_RANK": "1", "PALS_RANKID": "5", "PALS_LOCAL_RANKID": "1"},
     5, 8, 1),                                                                                          # Cray PALS
    ({"PMIX_RANK": "2"}, 2, None, 2),                      # PMIx alone: the size comes from mpi4py
])
def test_each_mpi_launchers_variables(env, rank, size, local):
    got = launch_environment(env)
    assert launcher_kind(env) == "mpi"
    assert (got["launcher"], got["rank"], got["world_size"], got["local_rank"]) == ("mpi", rank, size, local)
    assert got["master_addr"] is None and got["master_port"] is None
    got = launch_environment({**env, "MASTER_ADDR": "node7", "MASTER_PORT": "4242"})
    assert (got["master_addr"], got["master_port"]) == ("node7", "4242")


def test_precedence_torchrun_then_srun_then_mpi():
    pmi = {"PMI_RANK": "1", "PMI_SIZE": "2"}
    # torchrun inside an mpiexec (one torchrun per node): torchrun's variables describe this process.
    assert launch_environment({**pmi, "RANK": "5", "WORLD_SIZE": "8"})["launcher"] == "torchrun"
    # srun --mpi=pmi2 sets PMI_* to its own values: still srun, as before.
    srun = {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_JOB_ID": "9"}
    assert launch_environment({**srun, **pmi})["launcher"] == "srun"
    assert launch_environment({**srun, "PMIX_RANK": "1"})["launcher"] == "srun"
    # mpiexec in an `srun --pty bash` shell, or Hydra / Open MPI daemons started by srun: MPI counts the ranks.
    shell = {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1", "SLURM_JOB_ID": "9"}
    assert launch_environment({**shell, **pmi})["launcher"] == "mpi"
    daemons = {**srun, "SLURM_PROCID": "0"}
    assert launch_environment({**daemons, "PMI_RANK": "3", "PMI_SIZE": "4"})["rank"] == 3
    with pytest.raises(UserError, match="SLURM_PROCID=1 and .*PMI_RANK=0"):
        launch_environment({**srun, "PMI_RANK": "0", "PMI_SIZE": "2"})
    # One process: nothing to join, and mpi4py is never started.
    assert launch_environment({"PMI_RANK": "0", "PMI_SIZE": "1"}) is None
    assert resolve_launch({"PMI_RANK": "0", "PMI_SIZE": "1"}) is None
    assert launcher_kind({}) is None


@pytest.mark.parametrize("env, message", [
    ({"PMI_RANK": "1", "PMI_SIZE": "2", "OMPI_COMM_WORLD_SIZE": "4"}, "disagree on the number of processes"),
    ({"PMI_RANK": "1", "PMI_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"}, "disagree on the rank"),
    ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "PALS_LOCAL_RANKID": "0"}, "disagree on the local"),
    ({"PMI_RANK": "2", "PMI_SIZE": "2"}, "PMI_RANK=2 is not a rank of PMI_SIZE=2 processes"),
    ({"PMI_RANK": "0", "PMI_SIZE": "2", "MPI_LOCALRANKID": "3"}, "MPI_LOCALRANKID=3 is not a rank"),
    ({"PMI_RANK": "0", "PMI_SIZE": "0"}, "is not a rank of PMI_SIZE=0"),
    ({"PMI_RANK": "-1", "PMI_SIZE": "2"}, "PMI_RANK=-1 is not a rank"),
])
def test_disagreeing_variables_are_a_one_line_error(env, message):
    with pytest.raises(UserError, match=message) as err:
        launch_environment(env)
    assert "\n" not in str(err.value) and "one launcher" in str(err.value)


# ------------------------------------------------------------------ agreeing with mpi4py's COMM_WORLD
class FakeWorld:
    """mpi4py's COMM_WORLD as one process of a launch sees it: `others` are what the other ranks contribute."""

    def __init__(self, rank, size, others=(), master=None, arrives=True):
        self.rank, self.size, self.others, self.master, self.arrives = rank, size, list(others), master, arrives

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def allgather(self, mine):
        gathered = list(self.others)
        gathered.insert(self.rank, mine)
        assert len(gathered) == self.size
        return gathered

    def bcast(self, value, root=0):
        return value if self.rank == root else self.master

    def Ibarrier(self):
        world = self

        class Request:
            def Test(self):
                return world.arrives
        return Request()


HOST = socket.gethostname()


def _mpi(rank, size, **more):
    env = {"PMI_RANK": str(rank), **({"PMI_SIZE": str(size)} if size else {}), **more}
    return env, launch_environment(env)


def test_rank_0_gives_its_address_and_a_free_port():
    env, launch = _mpi(0, 2)
    got = join_mpi(launch, FakeWorld(0, 2, [(1, 2, HOST)]), env)
    assert (got["rank"], got["world_size"], got["master_addr"]) == (0, 2, "127.0.0.1")    # one node
    with socket.socket() as s:
        s.bind(("", int(got["master_port"])))                    # free
    env, launch = _mpi(1, 2)
    got = join_mpi(launch, FakeWorld(1, 2, [(0, 2, HOST)], master=("node3", "5555")), env)
    assert (got["rank"], got["world_size"], got["master_addr"], got["master_port"]) == (1, 2, "node3", "5555")
    env, launch = _mpi(0, 2, MASTER_ADDR="ib-node1", MASTER_PORT="4321")
    assert join_mpi(launch, FakeWorld(0, 2, [(1, 2, HOST)]), env)["master_addr"] == "ib-node1"
    # Another node: an address that node can reach, never loopback unless the host name is all there is.
    env, launch = _mpi(0, 2)
    addr = join_mpi(launch, FakeWorld(0, 2, [(1, 2, "127.0.0.2")]), env)["master_addr"]
    assert addr == HOST or not addr.startswith("127.")
    # PMIx alone: mpi4py's world gives the size.
    env, launch = _mpi(2, None, PMIX_RANK="2", PMI_RANK="")
    assert join_mpi(launch, FakeWorld(2, 3, [(0, None, HOST), (1, None, HOST)], master=("h", "1")), env)[
        "world_size"] == 3


@pytest.mark.parametrize("rank, others, message", [
    (0, [(1, 4, HOST)], "MPI_COMM_WORLD has 2 processes, but its process 0 .* rank 0 of 4"),
    (1, [(0, 2, HOST)], None),                                    # agrees
    (0, [(0, 2, "node2")], "its process 1 \\(on node2\\) was given rank 0 of 2"),    # two processes claim rank 0
    (1, [(1, 2, HOST)], "its process 0 .* was given rank 1 of 2"),
    (0, ["PMI_RANK=x is not a rank; start ..."], "process 1 of this launch stopped: PMI_RANK=x is not a rank"),
])
def test_a_launch_that_disagrees_with_mpi4py_stops_every_process(rank, others, message):
    env, launch = _mpi(rank, 4 if "of 4" in (message or "") else 2)
    world = FakeWorld(rank, 2, others, master=("h", "1"))
    if message is None:
        assert join_mpi(launch, world, env)["world_size"] == 2
        return
    with pytest.raises(UserError, match=message) as err:
        join_mpi(launch, world, env)
    assert "\n" not in str(err.value)


def test_a_process_with_bad_variables_still_tells_the_others():
    env = {"PMI_RANK": "1", "PMI_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"}
    seen = []

    class Listening(FakeWorld):
        def allgather(self, mine):
            seen.append(mine)
            return super().allgather(mine)

    with pytest.raises(UserError, match="disagree on the rank"):
        resolve_launch(env, world=Listening(1, 2, [(0, 2, HOST)]))
    assert "disagree on the rank" in seen[0]           # what rank 0 raises with
    with pytest.raises(UserError, match="not every process of this MPI launch of 2 reached the start"):
        _wait_for_all(FakeWorld(0, 2, arrives=False), 0.05)


def test_mpi4py_on_another_mpi_than_the_launcher():
    """The pip mpich wheel's mpi4py under a site's Open MPI mpirun: a world of one in every process."""
    env, launch = _mpi(1, 4)
    with pytest.raises(UserError, match="started 4 processes .* mpi4py's MPI sees only this one.*pip uninstall "
                                        "mpich.*set MASTER_ADDR") as err:
        join_mpi(launch, FakeWorld(0, 1), env)
    assert "\n" not in str(err.value)
    # MASTER_ADDR: the launcher's rank and size, as torchrun's would be.
    env, launch = _mpi(1, 4, MASTER_ADDR="node1")
    got = join_mpi(launch, FakeWorld(0, 1), env)
    assert (got["rank"], got["world_size"], got["master_addr"], got["master_port"]) == (1, 4, "node1", DEFAULT_PORT)
    # PMIx alone: rank 0 in a world of one is one process; any other rank cannot tell the size.
    env, launch = _mpi(0, None, PMIX_RANK="0", PMI_RANK="")
    assert join_mpi(launch, FakeWorld(0, 1), env) is None
    env, launch = _mpi(3, None, PMIX_RANK="3", PMI_RANK="")
    with pytest.raises(UserError, match="PMIX_RANK=3 is set but no variable gives the number of processes"):
        join_mpi(launch, FakeWorld(0, 1), env)


def test_without_mpi4py_master_addr_is_needed():
    env, launch = _mpi(0, 2)
    with pytest.raises(UserError, match="needs rank 0's address: pip install mpi4py .*set MASTER_ADDR"):
        join_mpi(launch, None, env)
    env, launch = _mpi(0, 2, MASTER_ADDR="n1", MASTER_PORT="7")
    assert join_mpi(launch, None, env)["master_port"] == "7"


# ------------------------------------------------------------------ real mpiexec runs
def _mpiexec() -> str:
    found = Path(sys.executable).with_name("mpiexec")
    path = str(found) if found.exists() else shutil.which("mpiexec")
    problem = None
    if path is None:
        problem = "no mpiexec next to this Python or on PATH (pip install mpich)"
    elif subprocess.run([sys.executable, "-c", "import mpi4py"], capture_output=True).returncode:
        problem = "mpi4py is not importable (pip install mpi4py)"
    if problem:
        if os.environ.get("REQUIRE_MPI_TESTS") == "1":
            pytest.fail(f"REQUIRE_MPI_TESTS=1 but {problem}")
        pytest.skip(problem)
    return path


@pytest.mark.slow
def test_mpiexec_of_two_processes_trains_like_one(tmp_path, trained):
    mpiexec = _mpiexec()
    two = tmp_path / "two"
    proc = subprocess.run([mpiexec, "-n", "2", sys.executable, "train.py", *train_args(SYSTEM, two, "train.threads=1")],
                          cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("done:") == 1 and "(step 12, 2 processes)" in proc.stdout, proc.stdout
    one = trained(SYSTEM)
    assert_trains_like_one(one, two)              # losses, metrics, weights; provenance written once
    assert len((two / "results.json").read_text().splitlines()) == len((one / "results.json").read_text().splitlines())
    assert not (two / "writer.lock").exists()
    adam = [checkpoint.load(run / "model.pt")["optimizer"]["state"] for run in (one, two)]
    assert {float(s["step"]) for s in adam[1].values()} == {float(s["step"]) for s in adam[0].values()} == {12.0}


@pytest.mark.slow
def test_mpiexec_with_a_rank_variable_that_disagrees_stops_every_process(tmp_path):
    """Rank 1 alone has a stale OMPI_COMM_WORLD_RANK: both processes stop with one line, nothing is written."""
    mpiexec = _mpiexec()
    run = tmp_path / "run"
    args = [sys.executable, "train.py", *train_args(SYSTEM, run)]
    proc = subprocess.run([mpiexec, "-n", "1", *args, ":", "-n", "1", "-env", "OMPI_COMM_WORLD_RANK", "0", *args],
                          cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=120)
    # One message per process. mpiexec forwards each process's stderr in its own chunks, so two lines
    # written at the same moment can arrive joined: the messages are counted, not the lines.
    text = proc.stderr.strip()
    assert proc.returncode != 0 and text.startswith("train.py: error: "), text[-3000:]
    lines = ["train.py: error: " + part.strip() for part in text.split("train.py: error: ")[1:]]
    assert len(lines) == 2 and all("(PMI_RANK=1, OMPI_COMM_WORLD_RANK=0)" in line for line in lines), lines
    assert any("process 1 of this launch stopped" in line for line in lines), lines
    assert not run.exists()


def _spawn_with_foreign_mpi(run):
    """What each process sees when mpi4py's MPI is not the launcher's: PMI_RANK / PMI_SIZE, but no PMI
    connection, so mpi4py's MPICH starts a world of one."""
    return [subprocess.Popen([sys.executable, "train.py", *train_args(SYSTEM, run, "train.threads=1")],
                             cwd=ROOT, env=clean_env(PMI_RANK=str(rank), PMI_SIZE="2", MPI_LOCALRANKID=str(rank)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]


@pytest.mark.slow
def test_mpi4py_on_another_mpi_is_refused_with_one_line(tmp_path):
    """Without MASTER_ADDR; with it, such a launch joins by the launcher's ranks (unit test above)."""
    _mpiexec()
    run = tmp_path / "refused"
    procs = _spawn_with_foreign_mpi(run)
    outs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 2 and out == "", err
        assert err.strip().startswith("train.py: error: the launcher started 2 processes") and \
            "pip uninstall mpich" in err and len(err.strip().splitlines()) == 1, err
    assert not run.exists()
