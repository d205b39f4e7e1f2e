"""Run-level logging of the multi-task entry: quiet lightzero worker chatter, and record the
learn step's ``diag/`` diagnostics (TensorBoard + a history summarised into ``summary.json``)."""
import logging
import os
import re
from typing import Any, Dict, List, Mapping, Sequence

from torch.utils.tensorboard import SummaryWriter

from lzero_ext.diagnostics import DEFAULT_PREFIX, summarize_diagnostics

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


class DiagnosticsRecorder:
    """Collects ``diag/...`` entries of learn logs. Per-task entries (``.../task{t}``) go to that
    task's TensorBoard writer, the rest (over this rank's tasks) to ``<log_dir>/diagnostics/rank{r}``."""

    def __init__(self, log_dir: str, rank: int, task_writers: Mapping[int, Any]) -> None:
        self.writer = SummaryWriter(os.path.join(log_dir, "diagnostics", f"rank{rank}"))
        self.task_writers = dict(task_writers)
        self.history: List[Dict[str, float]] = []

    def record(self, train_iter: int, learn_log: Mapping[str, Any]) -> None:
        entries = {k: float(v) for k, v in learn_log.items() if k.startswith(DEFAULT_PREFIX)}
        if not entries:
            return
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
        return {"history": list(self.history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.history = list(state.get("history", []))

    def close(self) -> None:
        self.writer.close()
