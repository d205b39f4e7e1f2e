"""Routing of a batch to per-task modules: one bound task, or a mixed batch of many tasks' rows.

A multi-task model has shared parts (encoder, transformer) and per-task parts (heads, per-task
vector encoders, per-task action embeddings). ``TaskAware`` modules act either for one **bound
task** (``active_task``, lightzero's single-task code paths) or, in **row mode**, for a mixed
batch whose rows belong to several tasks (``active_rows``, a :class:`TaskRows`), so that one
forward serves every task: the shared parts run once on all rows and each per-task part runs on
its own rows only.
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Segment = Tuple[int, int, int]  # (task_id, start_row, stop_row)


@dataclass(frozen=True)
class TaskRows:
    """Which task each row of a mixed batch belongs to, as contiguous segments in row order.

    Rows of one task are contiguous (a mixed batch is the concatenation of per-task batches), so
    per-task modules take slices, not gathers. A tensor whose leading dim is ``k * num_rows``
    (e.g. ``(B * T, ...)`` after flattening time) maps row ``i`` to rows ``i*k .. i*k+k-1``.

    Example:
        >>> rows = TaskRows.from_sizes([(0, 2), (2, 3)])
        >>> rows.num_rows, rows.tasks, rows.task_ids().tolist()
        (5, [0, 2], [0, 0, 2, 2, 2])
        >>> rows.scaled(2).segments
        ((0, 0, 4), (2, 4, 10))
    """

    segments: Tuple[Segment, ...]

    @classmethod
    def from_sizes(cls, sizes: Sequence[Tuple[int, int]]) -> "TaskRows":
        """From ``[(task_id, num_rows), ...]`` in row order."""
        segments, start = [], 0
        for task_id, size in sizes:
            if size <= 0:
                raise ValueError(f"task {task_id} has {size} rows; every segment needs at least one")
            segments.append((int(task_id), start, start + int(size)))
            start += int(size)
        if len({t for t, _, _ in segments}) != len(segments):
            raise ValueError(f"each task may appear once in a mixed batch, got tasks {[t for t, _, _ in segments]}")
        return cls(tuple(segments))

    @classmethod
    def from_task_ids(cls, task_ids: Sequence[int]) -> "TaskRows":
        """From one task id per row; rows of one task must be contiguous."""
        ids = [int(t) for t in (task_ids.tolist() if isinstance(task_ids, Tensor) else task_ids)]
        sizes: List[List[int]] = []
        for t in ids:
            if sizes and sizes[-1][0] == t:
                sizes[-1][1] += 1
            else:
                sizes.append([t, 1])
        return cls.from_sizes([(t, n) for t, n in sizes])

    @property
    def num_rows(self) -> int:
        return self.segments[-1][2] if self.segments else 0

    @property
    def tasks(self) -> List[int]:
        return [t for t, _, _ in self.segments]

    def scaled(self, factor: int) -> "TaskRows":
        """The same tasks for a tensor with ``factor`` consecutive rows per original row."""
        return TaskRows(tuple((t, s * factor, e * factor) for t, s, e in self.segments))

    def task_ids(self, device: Any = None) -> Tensor:
        """``(num_rows,)`` int64 task id of every row."""
        return torch.cat([torch.full((e - s,), t, dtype=torch.long, device=device) for t, s, e in self.segments])

    def factor_for(self, leading_dim: int) -> Optional[int]:
        """Rows per original row of a tensor with ``leading_dim`` rows; None if it is not a multiple."""
        if leading_dim == 0 or leading_dim % self.num_rows:
            return None
        return leading_dim // self.num_rows


class TaskAware(nn.Module):
    """Base of modules that act for one bound task (``active_task``) or for a mixed batch (``active_rows``)."""

    def __init__(self) -> None:
        super().__init__()
        self.active_task = 0
        self.active_rows: Optional[TaskRows] = None


def cat_rows(outputs: Sequence[Tensor]) -> Tensor:
    """Concatenate per-task outputs along rows, zero-padding the last dim to the widest (per-task action dims)."""
    width = max(out.shape[-1] for out in outputs)
    return torch.cat([out if out.shape[-1] == width else F.pad(out, (0, width - out.shape[-1])) for out in outputs])


class TaskSwitch(TaskAware):
    """One copy of a module per task, or a single shared copy.

    Bound to a task, ``forward`` runs that task's copy. In row mode each copy runs on its task's rows
    and the outputs are concatenated in row order (padded to the widest output). ``input_widths`` (one
    per copy) lets per-task copies read a zero-padded input: copy t sees ``x[..., :input_widths[t]]``.

    Example:
        >>> switch = TaskSwitch([nn.Linear(3, 2), nn.Linear(5, 2)], input_widths=[3, 5])
        >>> _ = bind_task_modules(switch, 1)
        >>> switch(torch.randn(4, 5)).shape
        torch.Size([4, 2])
        >>> with rows_bound(switch, TaskRows.from_sizes([(0, 1), (1, 3)])):
        ...     switch(torch.randn(4, 5)).shape      # row 0 through copy 0 (first 3 columns), rows 1-3 through copy 1
        torch.Size([4, 2])
    """

    def __init__(self, copies: Sequence[nn.Module], *, input_widths: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        self.per_task = nn.ModuleList(copies)
        if input_widths is not None and len(input_widths) != len(copies):
            raise ValueError(f"input_widths needs one entry per copy ({len(copies)}), got {len(input_widths)}")
        self.input_widths = None if input_widths is None else [int(w) for w in input_widths]

    @property
    def shared(self) -> bool:
        return len(self.per_task) == 1

    @property
    def current(self) -> nn.Module:
        return self.per_task[0 if self.shared else self.active_task]

    def _run(self, task_id: int, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        index = 0 if self.shared else task_id
        if self.input_widths is not None:
            x = x[..., :self.input_widths[index]]
        return self.per_task[index](x, *args, **kwargs)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        rows = self.active_rows
        if rows is None:
            return self._run(self.active_task, x, *args, **kwargs)
        if self.shared and self.input_widths is None:
            return self.per_task[0](x, *args, **kwargs)
        factor = rows.factor_for(x.shape[0])
        if factor is None:
            # lightzero's inference runs one-env forwards for KV-cache misses and discards their head outputs;
            # they cannot be routed (the env is unknown here), so they go through the first segment's copy.
            return self._run(rows.segments[0][0], x, *args, **kwargs)
        return cat_rows([self._run(t, x[s:e], *args, **kwargs) for t, s, e in rows.scaled(factor).segments])


def bind_task_modules(module: nn.Module, task_id: int) -> Optional[int]:
    """Set ``active_task`` of every ``TaskAware`` module in ``module``; return the previous task (None if none)."""
    previous = None
    for m in module.modules():
        if isinstance(m, TaskAware):
            previous, m.active_task = m.active_task, task_id
    return previous


@contextmanager
def task_bound(module: Optional[nn.Module], task_id: int) -> Iterator[Optional[nn.Module]]:
    """Bind ``task_id`` on ``module``'s ``TaskAware`` modules (e.g. a target tokenizer) inside the context."""
    previous = None if module is None else bind_task_modules(module, task_id)
    try:
        yield module
    finally:
        if previous is not None:
            bind_task_modules(module, previous)


@contextmanager
def rows_bound(module: Optional[nn.Module], rows: Optional[TaskRows]) -> Iterator[Optional[nn.Module]]:
    """Put ``module``'s ``TaskAware`` modules in row mode for ``rows`` inside the context (None: bound-task mode)."""
    aware = [] if module is None else [m for m in module.modules() if isinstance(m, TaskAware)]
    previous = [m.active_rows for m in aware]
    for m in aware:
        m.active_rows = rows
    try:
        yield module
    finally:
        for m, prev in zip(aware, previous):
            m.active_rows = prev
