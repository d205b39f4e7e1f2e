"""Routing of a batch to per-task modules: a mixed batch of many tasks' rows, or one bound task.

A multi-task model has shared parts (encoder, transformer) and per-task parts (heads, per-task
vector encoders, per-task action embeddings). A mixed batch is described by a :class:`TaskRows`
passed as an argument to the batched forwards (``lzero_ext.model.sequence_forward``,
``lzero_ext.model.cached_inference``): the shared parts run once on all rows and each per-task part
runs on its own rows only. lightzero's single-task code calls the model without a task, so
``TaskAware`` modules also follow one **bound task** (``active_task``), set by ``bind_task``.
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
    """Base of modules that act for one bound task (``active_task``) when called by lightzero's single-task code."""

    def __init__(self) -> None:
        super().__init__()
        self.active_task = 0


def cat_rows(outputs: Sequence[Tensor]) -> Tensor:
    """Concatenate per-task outputs along rows, zero-padding the last dim to the widest (per-task action dims);
    one-dimensional outputs (one value per row) are concatenated as they are."""
    if outputs[0].dim() == 1:
        return torch.cat(list(outputs))
    width = max(out.shape[-1] for out in outputs)
    return torch.cat([out if out.shape[-1] == width else F.pad(out, (0, width - out.shape[-1])) for out in outputs])


class TaskSwitch(TaskAware):
    """One copy of a module per task, or a single shared copy.

    Called, it runs the bound task's copy; mixed batches route rows to copies with
    ``lzero_ext.model.sequence_forward.route``. ``input_widths`` (one per copy) lets per-task copies read a
    zero-padded input: copy t sees ``x[..., :input_widths[t]]``.

    Example:
        >>> switch = TaskSwitch([nn.Linear(3, 2), nn.Linear(5, 2)], input_widths=[3, 5])
        >>> _ = bind_task_modules(switch, 1)
        >>> switch(torch.randn(4, 5)).shape
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

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        index = 0 if self.shared else self.active_task
        if self.input_widths is not None:
            x = x[..., :self.input_widths[index]]
        return self.per_task[index](x, *args, **kwargs)


def bind_task_modules(module: nn.Module, task_id: int) -> Optional[int]:
    """Set ``active_task`` of every ``TaskAware`` module in ``module``; return the previous task (None if none).
    The ``TaskAware`` modules are found once per ``module`` (a walk over every module costs ~1 ms on big models)."""
    aware = module.__dict__.get('_task_aware_modules')
    if aware is None:
        aware = module.__dict__['_task_aware_modules'] = [m for m in module.modules() if isinstance(m, TaskAware)]
    previous = None
    for m in aware:
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
