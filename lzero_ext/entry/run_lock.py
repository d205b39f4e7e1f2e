"""One job per experiment directory: a lock file holding the owner's PID and host.

``<exp_dir>/run.lock`` is created with ``O_CREAT | O_EXCL`` (atomic on local and NFSv3+ file
systems). A second job gets :class:`RunLockError` naming the holder. A lock left by a process that
no longer exists on this host (kill -9, power loss) is taken over with a warning; a lock from
another host is never taken over (its PID cannot be checked from here). The lock is removed when
released, only if it is still ours.

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
from typing import Any, Dict, Optional, Union

LOCK_FILE = "run.lock"
logger = logging.getLogger(__name__)


class RunLockError(RuntimeError):
    """Another live job holds the experiment directory."""


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
        """Takes the lock; raises :class:`RunLockError` when a live job holds it."""
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # lost races with another job taking over the same stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({**self._me, "since": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
            self.held = True
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
        if same_host and not _alive(holder["pid"]):
            logger.warning(f"taking over the stale lock of {self.exp_dir}: process {holder['pid']} on "
                           f"{holder['host']} (since {holder.get('since', '?')}) no longer runs")
            self.path.unlink(missing_ok=True)
            return
        raise RunLockError(
            f"{self.exp_dir} is in use by process {holder['pid']} on {holder.get('host', '?')} "
            f"(since {holder.get('since', '?')}): wait for it, stop it, or choose another --exp-name"
            + ("" if same_host else f"; if that job is gone, delete {self.path}")
        )

    def release(self) -> None:
        """Removes the lock file if it is still ours."""
        if self.held:
            self.held = False
            holder = read_holder(self.path)
            if holder is not None and holder.get("pid") == self._me["pid"] and holder.get("host") == self._me["host"]:
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> "ExperimentLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
