"""Run-level logging of the multi-task entry: the run's console (:func:`run_console`: the project's
lines and the bar only, unless ``--verbose``), and the learn step's ``diag/`` diagnostics
(TensorBoard + a history summarised into ``summary.json``)."""
import contextlib
import copy
import logging
import os
import re
import sys
import warnings
from typing import IO, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from torch.utils.tensorboard import SummaryWriter

from lzero_ext.diagnostics import DEFAULT_PREFIX, summarize_diagnostics
from lzero_ext.domain_diagnostics import accumulate, new_accumulator

_NOISY_SOURCES = (f"{os.sep}lzero{os.sep}worker{os.sep}", f"{os.sep}ding{os.sep}envs{os.sep}env_manager{os.sep}")
_PER_TASK_KEY = re.compile(r"^(?P<name>.+)/task(?P<task>\d+)$")


class WorkerChatterFilter(logging.Filter):
    """Drops INFO records of lightzero's collectors/evaluators and ding's env managers ("env 1
    collected 2 segments now!", env-space dumps). They log through the root logger on every
    round; the progress bar and the trainer's eval lines say the same. Warnings pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not any(src in record.pathname for src in _NOISY_SOURCES)


def quiet_worker_chatter() -> None:
    """Installs :class:`WorkerChatterFilter` on the root logger and its handlers (idempotent). Handlers
    matter: records of the workers' own named loggers (the evaluator's result tables) reach the root
    handlers by propagation, which skips the root logger's filters. Call again after building workers:
    ding may add a root handler then."""
    root = logging.getLogger()
    for target in (root, *root.handlers):
        if not any(isinstance(f, WorkerChatterFilter) for f in target.filters):
            target.addFilter(WorkerChatterFilter())


# Top-level module names whose log records and prints a quiet run shows ("__main__": a script's own prints).
PROJECT_MODULES = frozenset({"lzero_ext", "policies", "zoo", "__main__"})


def _is_project(module_name: str) -> bool:
    return module_name.split(".", 1)[0] in PROJECT_MODULES


class ProjectOnlyStream:
    """A text stream that passes on what the project's own modules write (``print`` from
    ``lzero_ext``, ``policies``, ``zoo``) and drops the rest (into ``dropped`` if given): lightzero's worker
    prints, warnings, third-party log handlers. The writer is read from the calling frame's module."""

    def __init__(self, stream: IO[str], dropped: Optional[IO[str]] = None) -> None:
        self.stream, self.dropped = stream, dropped

    def write(self, text: str) -> int:
        if _is_project(sys._getframe(1).f_globals.get("__name__", "")):
            return self.stream.write(text)
        if self.dropped is not None:
            self.dropped.write(text)
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, ...
        return getattr(self.stream, name)


class ProjectLogHandler(logging.Handler):
    """Writes log records above the progress bar (``tqdm.write``): the project's (and anyone's errors), or
    with ``everything`` all records."""

    def __init__(self, stream: IO[str], *, everything: bool = False) -> None:
        super().__init__(logging.INFO)
        self.stream, self.everything = stream, everything
        self.setFormatter(logging.Formatter("%(message)s" if not everything else "%(levelname)s %(name)s: %(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        return self.everything or record.levelno >= logging.ERROR or _is_project(record.name)

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # a logging handler never raises
            self.handleError(record)


@contextlib.contextmanager
def _restored_environ(name: str) -> Iterator[None]:
    saved = os.environ.get(name)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


# The run consoles entered and not yet left, innermost last: (verbose, the bar's stream).
_OPEN_CONSOLES: List[Tuple[bool, IO[str]]] = []


@contextlib.contextmanager
def run_console(*, verbose: Optional[bool] = None, log_path: Optional[str] = None) -> Iterator[IO[str]]:
    """The console of one run; yields the stream the progress bar writes to (the real stderr).

    Quiet (default): the project's log lines (INFO and up) and prints, errors from anyone, nothing
    else: third-party warnings (also in forked env workers and, through ``PYTHONWARNINGS``, spawned
    ones), INFO lines and prints of lightzero / ding / gym are dropped. ``verbose``: everything,
    including what gym / ding / lightzero printed when first imported. ``verbose=None``: as the
    enclosing run console, quiet if there is none. ``log_path``: a file (appended to) that gets every
    log record at INFO and up and, when quiet, every print the console drops (lightzero's prints and
    result tables); a run console inside another adds its file to the enclosing one's console. Sets
    ``MUJOCO_GL`` for dm_control if unset. Everything (root logger level, handlers and filters,
    project logger levels, warning filters, ``sys.stdout`` / ``sys.stderr``, environment) is restored
    on exit.

    Example::

        with run_console(verbose=args.verbose) as bar_stream:
            import lzero_ext  # noqa: F401  (import-time banners are captured, see lzero_ext.import_scope)
            train_scalezero(configs, ...)
    """
    from lzero_ext.envs.dmc_env import default_mujoco_gl
    from lzero_ext.import_scope import replay_import_noise

    nested = bool(_OPEN_CONSOLES)
    verbose = (_OPEN_CONSOLES[-1][0] if nested else False) if verbose is None else verbose
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers), list(root.filters))
    project_loggers = [logging.getLogger(name) for name in sorted(PROJECT_MODULES - {"__main__"})]
    saved_levels = [logger.level for logger in project_loggers]
    saved_streams = (sys.stdout, sys.stderr)
    bar_stream = _OPEN_CONSOLES[-1][1] if nested else sys.stderr
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        for name in ("MUJOCO_GL", "PYTHONWARNINGS"):
            stack.enter_context(_restored_environ(name))
        os.environ.setdefault("MUJOCO_GL", default_mujoco_gl())
        log_file, entry = None, (verbose, bar_stream)
        if log_path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
            log_file = stack.enter_context(open(log_path, "a", buffering=1, encoding="utf-8"))
        try:
            if verbose:
                if not nested:
                    replay_import_noise(bar_stream)
                    root.addHandler(ProjectLogHandler(bar_stream, everything=True))  # ding's try_init_root adds none
                root.setLevel(logging.INFO)
            else:
                warnings.simplefilter("ignore")
                os.environ["PYTHONWARNINGS"] = "ignore"
                root.setLevel(logging.ERROR if log_file is None else logging.INFO)
                root.handlers, root.filters = [ProjectLogHandler(bar_stream)], []
                for logger in project_loggers:
                    logger.setLevel(logging.INFO)
                sys.stdout, sys.stderr = ProjectOnlyStream(sys.stdout, log_file), ProjectOnlyStream(sys.stderr, log_file)
            if log_file is not None:
                file_handler = logging.StreamHandler(log_file)
                file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
                root.addHandler(file_handler)
            _OPEN_CONSOLES.append(entry)
            yield bar_stream
        finally:
            if _OPEN_CONSOLES and _OPEN_CONSOLES[-1] is entry:
                _OPEN_CONSOLES.pop()
            sys.stdout, sys.stderr = saved_streams
            root.setLevel(saved_root[0])
            root.handlers, root.filters = saved_root[1], saved_root[2]
            for logger, level in zip(project_loggers, saved_levels):
                logger.setLevel(level)


class DiagnosticsRecorder:
    """Collects ``diag/...`` entries of learn logs. Per-task entries (``.../task{t}``) go to that
    task's TensorBoard writer, the rest (over this rank's tasks) to ``<log_dir>/diagnostics/rank{r}``.
    The diagnostics steps' arrays are kept as the latest (``latest_arrays``, pictures) and summed over the
    run (``accumulated``, :func:`lzero_ext.domain_diagnostics.domain_summary`)."""

    def __init__(self, log_dir: str, rank: int, task_writers: Mapping[int, Any]) -> None:
        self.writer = SummaryWriter(os.path.join(log_dir, "diagnostics", f"rank{rank}"))
        self.task_writers = dict(task_writers)
        self.history: List[Dict[str, float]] = []
        self.latest_arrays: Dict[str, Any] = {}  # the latest diagnostics step's full arrays (lzero_ext.pictures)
        self.accumulated = new_accumulator()     # every diagnostics step's arrays, summed (JSON-able)

    def record(self, train_iter: int, learn_log: Mapping[str, Any], arrays: Optional[Mapping[str, Any]] = None) -> None:
        """``arrays``: the policy's ``diagnostic_arrays`` (kept when this step ran the diagnostics)."""
        entries = {k: float(v) for k, v in learn_log.items() if k.startswith(DEFAULT_PREFIX)}
        if not entries:
            return
        if arrays:
            self.latest_arrays = dict(arrays, train_iter=train_iter)
            accumulate(self.accumulated, arrays)
        self.history.append(dict(entries, train_iter=train_iter))
        for key, value in entries.items():
            match = _PER_TASK_KEY.match(key)
            if match and int(match["task"]) in self.task_writers:
                self.task_writers[int(match["task"])].add_scalar(match["name"], value, train_iter)
            else:
                self.writer.add_scalar(key, value, train_iter)

    def add_scalars(self, values: Mapping[str, float], step: int) -> None:
        """Run-level scalars (e.g. the DPS stage) into this rank's run writer."""
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def summary(self, histories: Sequence[List[Dict[str, float]]]) -> Dict[str, Any]:
        """``summary.json``'s block: one summary per rank (gradient conflict is over each rank's tasks)."""
        if len(histories) == 1:
            return summarize_diagnostics(histories[0])
        return {f"rank{r}": summarize_diagnostics(h) for r, h in enumerate(histories)}

    def state_dict(self) -> Dict[str, Any]:
        return {"history": list(self.history), "latest_arrays": dict(self.latest_arrays),
                "accumulated": copy.deepcopy(self.accumulated)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.history = list(state.get("history", []))
        self.latest_arrays = dict(state.get("latest_arrays", {}))
        self.accumulated = copy.deepcopy(state.get("accumulated", new_accumulator()))  # absent in older checkpoints

    def close(self) -> None:
        self.writer.close()
