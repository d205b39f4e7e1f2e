"""SIGINT / SIGTERM / SIGHUP scoped to one training run: raise :class:`RunInterrupted`, never mid-update.

While a :class:`RunSignals` scope is active (in the main thread):

- SIGINT, SIGTERM and SIGHUP (a closed terminal or SSH session; treated like SIGTERM) raise
  :class:`RunInterrupted` in the main thread, except inside
  :meth:`RunSignals.deferred` blocks (a learner step, a checkpoint write), where the signal is held
  and raised when the block ends, so a final checkpoint never holds a half-applied update;
- env worker processes forked meanwhile (ding's subprocess env managers use ``fork``) ignore
  SIGINT and SIGHUP: a terminal's Ctrl-C or hang-up reaches the whole process group, and the workers
  must wait for the trainer to close them instead of each printing a ``KeyboardInterrupt`` traceback;
- after the first signal, further ones are ignored until the scope ends (the shutdown finishes).

The previous handlers are restored when the scope exits. Example::

    with RunSignals() as signals:
        try:
            while True:
                with signals.deferred():
                    step()
        except RunInterrupted as stop:
            print(stop.signal_name, stop.exit_code)   # SIGTERM 143
"""
import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_FORK_STATE = {"active": False, "registered": False}  # read in forked children


class RunInterrupted(BaseException):
    """The run was stopped by SIGINT, SIGTERM or SIGHUP. A ``BaseException`` (like ``KeyboardInterrupt``),
    so ``except Exception`` blocks in lightzero / ding code do not swallow it.

    ``message`` is filled in by the trainer's run guard with what was saved."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.message: Optional[str] = None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP (the shell's convention)."""
        return 128 + self.signum

    def __str__(self) -> str:
        return self.message or f"interrupted by {self.signal_name} before training started: nothing was saved"


def _reset_in_child() -> None:
    if _FORK_STATE["active"]:  # a worker forked by this run: the trainer decides when it ends
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


class RunSignals:
    """The signal scope of one run (a no-op outside the main thread, where handlers cannot be set)."""

    def __init__(self) -> None:
        self._previous: Dict[int, Any] = {}
        self._depth = 0  # nesting of deferred() blocks
        self._pending: Optional[int] = None
        self.received: Optional[int] = None  # the first signal received

    def __enter__(self) -> "RunSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        if not _FORK_STATE["registered"] and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_reset_in_child)  # checks the flag: inert outside a run
            _FORK_STATE["registered"] = True
        self._previous = {signum: signal.signal(signum, self._handle) for signum in HANDLED}
        _FORK_STATE["active"] = True
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}
        _FORK_STATE["active"] = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            return  # already shutting down
        self.received = signum
        if self._depth:
            self._pending = signum
            return
        raise RunInterrupted(signum)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A block a signal does not interrupt; a signal received inside is raised when it ends."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0 and self._pending is not None:
            signum, self._pending = self._pending, None
            raise RunInterrupted(signum)
