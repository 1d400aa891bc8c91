"""One writer per run folder (training runs and evaluation folders alike).

    with run_dir.claim(savedir, owner="train.py"):
        ...   # the only process writing into savedir

A lock file (`writer.lock`) is created with O_CREAT | O_EXCL, which is atomic on local
and network file systems alike (flock is not honoured by every cluster file system). It
holds the holder's host, pid, process start time, Slurm job id and restart count, the
time it was taken and a heartbeat time that a daemon thread refreshes. A second writer
stops with one line naming the holder. A lock is taken over, with a warning, when

- its holder is on this host and its process is gone (kill -9, a crashed node
  rebooted under the same name), or its pid now belongs to another process;
- its holder is on another host and its heartbeat is older than `stale_after`;
- its holder is the previous incarnation of this very Slurm job (same job id, lower
  SLURM_RESTART_COUNT): a requeued job waits up to `predecessor_wait` seconds for the
  old one to finish tearing down (process gone, or heartbeat stopped), then takes over.

Two processes that both find a stale lock serialise the take-over through a second
O_EXCL file, so exactly one of them wins.

`claim` also creates the folder (and missing parents) and, when the body fails before
anything but the lock was written there, removes what it created: a first start that
fails (no data, a bad flag) leaves no empty run folder behind.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError
from .files import process_alive, process_start, reporting_disk_full

LOCK_NAME = "writer.lock"
# What exps/main.sh writes into a new run folder before train.py starts (the code copy).
LAUNCHER_FILES = ("code", "code.partial", "git_commit.txt", "git_diff.patch", "git_status.txt")
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 300.0          # another host's lock with no heartbeat for this long is dead
PREDECESSOR_WAIT_SECONDS = 180.0


class RunFolderBusy(UserError):
    """Another live process writes into this folder."""


def _job() -> tuple[str | None, int]:
    return os.environ.get("SLURM_JOB_ID"), int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def describe(holder: dict, now: float | None = None) -> str:
    """'train.py, pid 123 on node7, Slurm job 456, since 2026-11-30 12:00:00 (heartbeat 12 s ago)'."""
    now = time.time() if now is None else now
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    job = holder.get("job_id")
    job = f", job {job}" + (f" (restart {holder['restart']})" if holder.get("restart") else "") if job else ""
    beat = now - float(holder.get("heartbeat", 0))
    return (f"{holder.get('owner', '?')}, pid {holder.get('pid', '?')} on {holder.get('host', '?')}{job}, "
            f"since {since} (heartbeat {beat:.0f} s ago)")


class WriterLock:
    """The lock file of one folder; acquire() or raise RunFolderBusy, release() when done."""

    def __init__(self, folder, owner: str, heartbeat: float = HEARTBEAT_SECONDS,
                 stale_after: float = STALE_SECONDS, predecessor_wait: float = PREDECESSOR_WAIT_SECONDS):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.owner = owner
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self.predecessor_wait = predecessor_wait
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread = None

    # ------------------------------------------------------------------ the lock record
    def _record(self) -> dict:
        job_id, restart = _job()
        now = time.time()
        return {"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                "pid_start": process_start(os.getpid()), "job_id": job_id, "restart": restart,
                "since": now, "heartbeat": now, "token": self.token, "command": " ".join(sys.argv)}

    def _read(self) -> dict | None:
        """The current holder, None when there is no lock; a torn or foreign file counts as dead."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
            return holder if isinstance(holder, dict) else {}
        except ValueError:
            return {}

    def _create(self) -> bool:
        """Create the lock file atomically; False if it exists."""
        try:
            with reporting_disk_full(self.path, "nothing was written"):
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        except OSError as err:                  # a full disk is DiskFull by now
            raise UserError(f"run folder {self.folder} is not writable: {err.strerror or err}") from None
        self.record = self._record()
        with reporting_disk_full(self.path, "nothing was written"):
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(json.dumps(self.record))
                    fh.flush()
                    os.fsync(fh.fileno())
            except BaseException:
                self.path.unlink(missing_ok=True)
                raise
        return True

    # ------------------------------------------------------------------ deciding about a holder
    def _verdict(self, holder: dict) -> str:
        """'dead' (take over), 'predecessor' (wait for it) or 'alive' (refuse)."""
        if not holder.get("token"):
            return "dead"                                         # torn by a crash mid-write
        job_id, restart = _job()
        predecessor = job_id is not None and holder.get("job_id") == job_id and int(holder.get("restart", 0)) < restart
        if holder.get("host") == socket.gethostname():
            pid = int(holder.get("pid", -1))
            alive = pid > 0 and process_alive(pid, holder.get("pid_start"))
        else:
            alive = time.time() - float(holder.get("heartbeat", 0)) < self.stale_after
        if not alive:
            return "dead"
        return "predecessor" if predecessor else "alive"

    def acquire(self) -> "WriterLock":
        deadline = None
        while not self._create():
            holder = self._read()
            if holder is None:
                continue                                          # released between our two calls
            verdict = self._verdict(holder)
            if verdict == "alive":
                raise RunFolderBusy(f"{self.folder} is in use by {describe(holder)}; nothing was written "
                                    f"(wait for it to finish, or delete {self.path} if that process is "
                                    f"certainly gone)")
            if verdict == "predecessor":
                deadline = deadline or time.time() + self.predecessor_wait
                if time.time() > deadline:
                    raise RunFolderBusy(f"{self.folder}: the previous run of this job is still writing after "
                                        f"{self.predecessor_wait:.0f} s: {describe(holder)}")
                # Same host: its pid vanishes; another host: its heartbeat stops.
                beat_age = time.time() - float(holder.get("heartbeat", 0))
                if holder.get("host") != socket.gethostname() and beat_age > 3 * self.heartbeat:
                    verdict = "dead"
                else:
                    time.sleep(min(1.0, self.heartbeat))
                    continue
            if self._take_over(holder):
                print(f"warning: took over the lock of {self.folder} from {describe(holder)}, which is no "
                      f"longer running", file=sys.stderr)
                break
        self._thread = threading.Thread(target=self._beat, name="run-folder-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _take_over(self, holder: dict) -> bool:
        """Replace a dead holder's lock; only one of several contenders succeeds."""
        guard = self.folder / f"{LOCK_NAME}.takeover"
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            # A contender is taking over; a guard left by a crash mid-take-over expires.
            try:
                if time.time() - guard.stat().st_mtime > 60:
                    guard.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            time.sleep(0.2)
            return False
        os.close(fd)
        try:
            if self._read() != holder:          # changed hands meanwhile: decide again
                return False
            self.path.unlink(missing_ok=True)
            return self._create()
        finally:
            guard.unlink(missing_ok=True)

    # ------------------------------------------------------------------ heartbeat and release
    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            holder = self._read()
            if not holder or holder.get("token") != self.token:
                print(f"warning: {self.path} was taken over by {describe(holder or {})}; this process keeps "
                      f"running but no longer holds the folder", file=sys.stderr)
                return
            holder["heartbeat"] = time.time()
            tmp = self.folder / f".{LOCK_NAME}.{self.token}"   # its own name: only this writer replaces it
            try:
                tmp.write_text(json.dumps(holder))
                os.replace(tmp, self.path)
            except OSError:
                pass                                          # a full disk: the next beat retries

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        holder = self._read()
        if holder and holder.get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def _make_folder(folder: Path) -> list[Path]:
    """mkdir -p, returning the folders it created (deepest first)."""
    created = []
    probe = folder
    while not probe.exists():
        created.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    try:
        with reporting_disk_full(folder, "nothing was written"):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:                      # a full disk is DiskFull by now
        raise UserError(f"run folder {folder} is not writable: {err.strerror or err}") from None
    return created


def _only_lock_left(folder: Path, ignore=()) -> bool:
    if not folder.is_dir():
        return True
    return all(p.name in (LOCK_NAME, f"{LOCK_NAME}.takeover", *ignore) for p in folder.iterdir())


@contextmanager
def claim(folder, owner: str, made_by_launcher: bool = False, **lock_options):
    """Create `folder` if needed and hold its writer lock for the body.

    If the body raises while the folder holds nothing but the lock, the folders this
    call created are removed again (never a folder that existed before).
    made_by_launcher: the launcher created `folder` just now for its code copy (exps/main.sh
    says so in RUN_DIR_FROM_LAUNCHER); it counts as created here, and the copy as nothing.
    """
    folder = Path(folder)
    created = _make_folder(folder)
    ignore = ()
    if made_by_launcher and not created:
        created, ignore = [folder], LAUNCHER_FILES
    lock = WriterLock(folder, owner, **lock_options)
    try:
        lock.acquire()
    except RunFolderBusy:
        raise                               # another writer's folder: never removed
    except BaseException:
        _remove_created(created, ignore)
        raise
    try:
        yield lock
    except BaseException:
        lock.release()
        if created and _only_lock_left(folder, ignore):
            _remove_created(created, ignore)
        raise
    lock.release()


def _remove_created(created: list[Path], ignore=()) -> None:
    if not created:
        return
    if _only_lock_left(created[0], ignore):
        shutil.rmtree(created[0], ignore_errors=True)
    for parent in created[1:]:
        try:
            parent.rmdir()                      # only while empty
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise
            break


@contextmanager
def claim_on_main(dist, folder, owner: str, **lock_options):
    """claim() on rank 0 of a multi-process run; every rank learns whether it succeeded.

    `dist` is a distributed.Context. When rank 0 is refused, the other ranks exit with
    status 2 silently (rank 0 prints the reason), instead of waiting forever for it.
    """
    if not dist.is_main:
        if not dist.broadcast_flag(False):          # rank 0's verdict
            raise SystemExit(2)
        yield None
        return
    holding = claim(folder, owner, **lock_options)
    try:
        lock_ = holding.__enter__()
    except BaseException:
        dist.broadcast_flag(False)
        raise
    dist.broadcast_flag(True)
    try:
        yield lock_
    except BaseException:
        if not holding.__exit__(*sys.exc_info()):
            raise
    else:
        holding.__exit__(None, None, None)



def refuse_other_config(folder, config: dict, ignore=(), warn: bool = True) -> None:
    """Refuse a run folder that holds model.pt of a different experiment (its config differs in more than
    the keys of `ignore`, which say how a start runs, not what is trained); nothing is touched.

    The folder's config is config.json; when that is missing or damaged, the config inside model.pt (a
    damaged config.json never blocks a resume: train.py rewrites it, and `warn` says so in one line)."""
    import json

    from .config import differences

    folder = Path(folder)
    saved, latest = folder / "config.json", folder / "model.pt"
    if not latest.exists():
        return
    try:
        old = json.loads(saved.read_bytes().decode("utf-8"))
        if not isinstance(old, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as err:
        from . import checkpoint

        state = checkpoint.load(latest)
        checkpoint.require(state, ("config",), latest, "a resume")
        old = state["config"]
        if warn:
            why = "missing" if isinstance(err, FileNotFoundError) else "damaged"
            print(f"warning: {saved} is {why}; the run's config is taken from {latest.name} and config.json is "
                  f"written again", file=sys.stderr)
    diff = differences(old, config, ignore)
    if diff:
        raise UserError(f"{folder} already holds a run with a different config (differs in: "
                        f"{', '.join(diff[:8])}{', ...' if len(diff) > 8 else ''}); choose another run folder")
