"""One job per experiment directory: a lock file holding the owner's PID and host.

``<exp_dir>/run.lock`` is created with ``O_CREAT | O_EXCL`` (atomic on local and NFSv3+ file
systems); a lock whose content could not be written (a full disk) is removed again, so no empty
lock is left. A second job gets :class:`RunLockError` naming the holder. A lock on this host is
stale, and taken over with a warning, when its process no longer exists (kill -9, power loss), when
the PID now belongs to another process (its start time differs from the one the lock recorded), or
when it names this very process without this process holding it (a PID reused after a container
restart). A lock from another host is never taken over (its PID cannot be checked from here). The
lock is removed when released, only if it is still ours.

Example::

    with ExperimentLock("runs/a"):
        train(...)
"""
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, Optional, Set, Union

LOCK_FILE = "run.lock"
logger = logging.getLogger(__name__)


class RunLockError(RuntimeError):
    """Another live job holds the experiment directory."""


_HELD: Set[Path] = set()  # lock files this process holds (a lock naming our PID but not in here is stale)


def process_start_ticks(pid: int) -> Optional[int]:
    """The process's start time (clock ticks since boot, ``/proc/<pid>/stat`` field 22), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])  # fields after the command name start at field 3 (the state)
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_holder(path: Union[str, os.PathLike]) -> Optional[Dict[str, Any]]:
    """The lock file's ``{"pid", "host", "since"}``, or None when missing or unreadable."""
    try:
        holder = json.loads(Path(path).read_text())
        return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None
    except (OSError, ValueError):
        return None


class ExperimentLock:
    """The lock of one experiment directory (created if missing)."""

    def __init__(self, exp_dir: Union[str, os.PathLike]) -> None:
        self.exp_dir = Path(exp_dir)
        self.path = self.exp_dir / LOCK_FILE
        self.held = False
        self._me = {"pid": os.getpid(), "host": socket.gethostname()}

    def acquire(self) -> "ExperimentLock":
        """Takes the lock; raises :class:`RunLockError` when a live job holds it or it cannot be written."""
        from lzero_ext.fs_errors import errno_cause

        try:
            self.exp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunLockError(f"cannot create {self.exp_dir}: {errno_cause(error.errno)}") from None
        for _ in range(3):  # lost races with another job taking over the same stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            except OSError as error:
                raise RunLockError(f"cannot write {self.path}: {errno_cause(error.errno)}") from None
            holder = {**self._me, "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                      "started": process_start_ticks(self._me["pid"])}
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(holder, f)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as error:  # a full disk: no empty or half-written lock stays behind
                self.path.unlink(missing_ok=True)
                raise RunLockError(f"cannot write {self.path}: {errno_cause(error.errno)}") from None
            except BaseException:
                self.path.unlink(missing_ok=True)
                raise
            self.held = True
            _HELD.add(self.path.absolute())
            return self
        raise RunLockError(f"cannot lock {self.exp_dir}: {self.path} keeps reappearing (another job starting?)")

    def _take_over_if_stale(self) -> None:
        holder = read_holder(self.path)
        if holder is None:  # being written right now, or garbage: wait a moment, then treat garbage as stale
            time.sleep(0.2)
            holder = read_holder(self.path)
            if holder is None:
                logger.warning(f"removing the unreadable lock file {self.path}")
                self.path.unlink(missing_ok=True)
                return
        same_host = holder.get("host") == self._me["host"]
        stale = self._stale_because(holder) if same_host else None
        if stale is not None:
            logger.warning(f"taking over the stale lock of {self.exp_dir}: process {holder['pid']} on "
                           f"{holder['host']} (since {holder.get('since', '?')}) {stale}")
            self.path.unlink(missing_ok=True)
            return
        raise RunLockError(
            f"{self.exp_dir} is in use by process {holder['pid']} on {holder.get('host', '?')} "
            f"(since {holder.get('since', '?')}): wait for it, stop it, or choose another --exp-name"
            + ("" if same_host else f"; if that job is gone, delete {self.path}")
        )

    def _stale_because(self, holder: Dict[str, Any]) -> Optional[str]:
        """Why a lock of this host is stale, or None while its process may still hold it."""
        pid = holder["pid"]
        if pid == self._me["pid"]:
            if self.path.absolute() in _HELD:
                return None  # this process really holds it (a second lock in the same process is refused)
            return "is this process's own PID, which does not hold the lock: a PID reused (e.g. after a container restart)"
        if not _alive(pid):
            return "no longer runs"
        started, now = holder.get("started"), process_start_ticks(pid)
        if isinstance(started, int) and now is not None and now != started:
            return "is another process now: the PID was reused (its start time differs from the lock's)"
        return None

    def release(self) -> None:
        """Removes the lock file if it is still ours."""
        if self.held:
            self.held = False
            _HELD.discard(self.path.absolute())
            holder = read_holder(self.path)
            if holder is not None and holder.get("pid") == self._me["pid"] and holder.get("host") == self._me["host"]:
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> "ExperimentLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
