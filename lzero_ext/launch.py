"""``torchrun`` with ScaleZero's exit conventions: ``python -m lzero_ext.launch [torchrun args] -m MODULE ...``.

It takes exactly torchrun's arguments and runs ``torch.distributed.run``. What it changes is how the launcher
ends, so a multi-rank job ends like a one-process one (see docs/runs.md):

- SIGINT / SIGTERM / SIGHUP to the launcher: torchrun forwards the signal to the ranks (each saves a final
  checkpoint and prints its line); the launcher then exits 130 / 143 / 129 with one line, not torchrun's
  ``SignalException`` traceback and exit 1.
- Ranks that stopped on a signal (their exit 130 / 143 / 129): the launcher exits with that code, without
  torchrun's ``ChildFailedError`` report.
- A rank that failed otherwise: one line naming the rank and its exit code, then exit 1 (the rank's own
  one-line error is above it).
- A signal while the launcher shuts down after the ranks finished is ignored: the run had already saved, and
  Python's default action during finalisation would kill the launcher without a line (exit -1 / -15).
"""
import signal
import sys
import threading
from typing import List, Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SIGNAL_EXIT_CODES = tuple(128 + s for s in STOP_SIGNALS)


def _ignore_stop_signals() -> None:
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


def rank_exit_code(exit_codes: List[int]) -> int:
    """The launcher's exit code for failed ranks: a signal exit shared by the ranks that failed, else 1."""
    codes = set(exit_codes)
    return codes.pop() if len(codes) == 1 and codes <= set(SIGNAL_EXIT_CODES) else 1


def _signal_in(error: BaseException, signal_exception: type) -> Optional[signal.Signals]:
    """The signal behind ``error``: torchrun's ``SignalException``, or one in its context. A signal that lands inside
    torch's metrics wrapper before it has started its timer turns into an ``UnboundLocalError`` raised while the
    ``SignalException`` is handled, and the agent then stops the ranks with SIGTERM."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, signal_exception):
            return signal.Signals(error.sigval)
        error = error.__cause__ or error.__context__
    return None


def main(argv: Optional[List[str]] = None) -> int:
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    try:
        torchrun.run(torchrun.parse_args(argv))
        return 0
    except ChildFailedError as error:
        _ignore_stop_signals()
        failures = sorted(error.failures.items())
        code = rank_exit_code([failure.exitcode for _, failure in failures])
        if code == 1:
            # the root cause: a rank that failed by itself, not one torchrun stopped after it
            rank, failure = min(failures, key=lambda item: (item[1].exitcode in (*SIGNAL_EXIT_CODES, -signal.SIGTERM),
                                                            item[1].timestamp))
            sys.stderr.write(f"error: rank {rank} exited with code {failure.exitcode} "
                             f"({len(failures)} of the ranks failed; each rank's own message is above)\n")
        return code
    except Exception as error:  # noqa: BLE001 (a signal may surface as another error: see _signal_in)
        received = _signal_in(error, SignalException)
        if received is None:
            raise
        _ignore_stop_signals()
        sys.stderr.write(f"interrupted by {received.name} (launcher): every rank was stopped and saves its final "
                         f"checkpoint\n")
        return 128 + int(received)
    finally:
        _ignore_stop_signals()


if __name__ == "__main__":
    sys.exit(main())
