"""Validation of the shared zoo command line, and the one line each way a run can end badly.

:func:`validate_args` rejects what argparse lets through: zero or negative budgets and thread
counts, a task named twice, an empty ``--exp-name`` or one that is an existing file. :func:`exit_for`
turns an error raised by a run into ``SystemExit``: a one-line message (a file-system error names the
path and the cause) and the usual exit status (1, or 130 / 143 / 129 for SIGINT / SIGTERM / SIGHUP).
Under torchrun only rank 0 prints the line, so a mistake shared by all ranks (too many ranks) is
reported once; every rank still exits non-zero.
"""
import argparse
import os
import sys

from lzero_ext.entry.run_signals import RunInterrupted
from lzero_ext.fs_errors import describe_os_error

POSITIVE_FLAGS = ("max_env_step", "max_train_iter", "threads")  # argparse dests; None means "not given"


def validate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``parser.error`` (one line, exit status 2) for values that would run but mean nothing."""
    for dest in POSITIVE_FLAGS:
        value = getattr(args, dest, None)
        if value is not None and value < 1:
            parser.error(f"--{dest.replace('_', '-')} must be a positive integer, got {value}")
    tasks = getattr(args, "tasks", None) or []
    seen = set()
    duplicates = [t for t in tasks if t.lower() in seen or seen.add(t.lower())]
    if duplicates:
        parser.error(f"task {duplicates[0]!r} is given twice: each task is trained once per run")
    exp_name = getattr(args, "exp_name", None)
    if exp_name is not None and not exp_name.strip():
        parser.error("--exp-name is empty: give the experiment directory a name (or leave the flag out)")
    if exp_name and os.path.exists(exp_name) and not os.path.isdir(exp_name):  # os.path: no OSError on long names
        parser.error(f"--exp-name {exp_name} is an existing file, not a directory: choose another --exp-name")
    if getattr(args, "resume", False) and getattr(args, "overwrite", False):
        parser.error("--resume and --overwrite exclude each other: continue the run or start it over")


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def exit_for(error: BaseException) -> SystemExit:
    """The ``SystemExit`` for an error a run raised (print it, then raise the result)."""
    if isinstance(error, RunInterrupted):
        line, code = str(error), error.exit_code
    elif isinstance(error, KeyboardInterrupt):
        line, code = "interrupted: nothing was saved since the last checkpoint", 130
    elif isinstance(error, OSError):  # a file-system failure: the path and the cause (ENOSPC, EROFS, ...)
        line, code = f"error: {describe_os_error(error)}", 1
    else:
        line, code = f"error: {error}", 1
    if _is_rank0() or getattr(error, "every_rank", False):  # a rank's own problem: each rank names it
        print(line if _is_rank0() else f"rank {os.environ.get('RANK')}: {line}", file=sys.stderr, flush=True)
    return SystemExit(code)

