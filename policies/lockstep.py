"""Lockstep inference: every task's collector (or evaluator) steps together, one policy forward per step.

lightzero's ``MuZeroSegmentCollector`` and ``MuZeroEvaluator`` are kept as they are, one per task (own env
manager, game segments, replay buffer, episode returns, logs). Each runs in its own thread; their
``policy.forward`` calls meet in a :class:`LockstepInference` barrier. Once every task has arrived, **one**
lightzero collect/eval forward runs over all waiting tasks' observations: one initial inference and one
C++ MCTS search over every task's roots, the model in row mode (``ScaleZeroModel.acting_for``). Each task
then gets its own slice of the output, and its own ``last_batch_obs`` / ``last_batch_action`` state.

The batched forward runs in the thread that :meth:`LockstepInference.serve` s (the trainer's main thread),
not in whichever worker arrived last: torch's OpenMP pool belongs to the thread that calls it, so forwards
hopping between worker threads left idle pools spin-waiting against the busy one on a small CPU.

Tasks are split into separate forwards only where one batch cannot serve them (:func:`forward_groups`):
tasks at the first step of their episodes (lightzero starts those from an empty context), tasks whose ready
envs are a subset of their envs, and tasks of another action dim (continuous control).
"""
import threading
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from lzero_ext.model.task_routing import TaskRows, cat_rows

Request = Tuple[tuple, dict]  # (args, kwargs) of one task's policy.forward call


class LockstepInference:
    """A barrier for the ``forward`` calls of several tasks' workers running in threads.

    ``run_batch({task_id: request})`` (one call for every step) returns ``{task_id: output}``.

    Example::

        lockstep = LockstepInference(lambda requests: policy.lockstep_forward("collect", requests))
        with lockstep.round([0, 1, 2]):
            ...  # start three collector threads; each calls lockstep.forward(task_id, *args, **kwargs), then leave(task_id)
            lockstep.serve()  # this thread runs the batched forwards until every task has left
    """

    def __init__(self, run_batch: Callable[[Dict[int, Request]], Dict[int, Any]]) -> None:
        self._run_batch = run_batch
        self._cond = threading.Condition()
        self._members: set = set()
        self._pending: Dict[int, Request] = {}
        self._ready: Optional[Dict[int, Request]] = None  # a complete step waiting for the serving thread
        self._results: Dict[int, Any] = {}
        self._error: BaseException = None

    def is_member(self, task_id: int) -> bool:
        return task_id in self._members

    @contextmanager
    def round(self, task_ids: Sequence[int]) -> Iterator["LockstepInference"]:
        """The tasks whose workers take part in one lockstep round (a collection or an evaluation); the caller
        must :meth:`serve` inside it, or the workers wait forever."""
        with self._cond:
            self._members, self._pending, self._results, self._error = set(task_ids), {}, {}, None
            self._ready = None
        try:
            yield self
        finally:
            with self._cond:
                self._members.clear()

    def leave(self, task_id: int) -> None:
        """A task's worker is done: the others no longer wait for it."""
        with self._cond:
            self._members.discard(task_id)
            self._flush_if_complete()
            self._cond.notify_all()

    def forward(self, task_id: int, *args: Any, **kwargs: Any) -> Any:
        """Waits until every member task has called; one batched forward then serves them all."""
        with self._cond:
            if self._error is not None:
                raise RuntimeError("another task's lockstep forward failed") from self._error
            self._pending[task_id] = (args, kwargs)
            self._flush_if_complete()
            while task_id not in self._results and self._error is None:
                self._cond.wait()
            if task_id not in self._results:
                raise RuntimeError("another task's lockstep forward failed") from self._error
            return self._results.pop(task_id)

    def serve(self, poll_s: float = 0.2) -> None:
        """Runs every batched forward of the round in the calling thread, until all member tasks have left.
        Waits in ``poll_s`` slices, so a Ctrl-C still reaches a serving main thread."""
        with self._cond:
            while self._members or self._ready is not None:
                if self._ready is not None:
                    requests, self._ready = self._ready, None
                    self._execute(requests)
                else:
                    self._cond.wait(poll_s)

    def _flush_if_complete(self) -> None:
        if not self._pending or not self._members <= set(self._pending):
            return
        self._ready, self._pending = self._pending, {}
        self._cond.notify_all()

    def _execute(self, requests: Dict[int, Request]) -> None:
        try:
            self._results.update(self._run_batch(requests))
        except BaseException as error:  # every waiting worker re-raises it
            self._error = error
        self._cond.notify_all()


def is_first_step(last_actions: List[Any], continuous: bool) -> bool:
    """lightzero's test for "no previous action": every last action is -1 (discrete) or no action array."""
    if continuous:
        return not isinstance(last_actions[0], np.ndarray)
    return max(last_actions) == -1


def forward_groups(requests: Dict[int, Request], states: Dict[int, Dict[str, Any]], action_dims: Sequence[int],
                   continuous: bool) -> List[List[int]]:
    """Task groups that one lightzero forward can serve together (see the module docstring)."""
    groups: Dict[Any, List[int]] = {}
    for task_id, (args, kwargs) in requests.items():
        data, last_obs = args[0], states[task_id]["last_batch_obs"]
        if data.shape[0] != last_obs.shape[0]:  # a subset of envs is ready: lightzero aligns rows by position
            key: Any = ("alone", task_id)
        else:
            key = (is_first_step(states[task_id]["last_batch_action"], continuous), action_dims[task_id])
        groups.setdefault(key, []).append(task_id)
    return list(groups.values())


def combine_requests(requests: Dict[int, Request], tasks: Sequence[int], mode: str) -> Tuple[tuple, dict, List[int]]:
    """One forward's ``(args, kwargs)`` from several tasks' calls; global env id = task offset + local id.
    Also returns each task's row offset."""
    names = ("data", "action_mask", "temperature", "to_play", "epsilon") if mode == "collect" \
        else ("data", "action_mask", "to_play")  # lightzero's _forward_collect / _forward_eval positional arguments
    offsets, rows = [], 0
    datas, masks, to_plays, ready_ids, timesteps = [], [], [], [], []
    for task_id in tasks:
        args, kwargs = requests[task_id]
        call = dict(zip(names, args), **kwargs)
        n = call["data"].shape[0]
        offsets.append(rows)
        datas.append(call["data"])
        masks.extend(list(call["action_mask"]))
        to_plays.extend(list(call.get("to_play", [-1] * n)))
        ids = call.get("ready_env_id")
        ready_ids.extend(int(i) + rows for i in (range(n) if ids is None else ids))
        timesteps.extend(list(call.get("timestep", [0] * n)))
        rows += n
    first = dict(zip(names, requests[tasks[0]][0]), **requests[tasks[0]][1])  # same temperature/epsilon for all
    # Vector observations of different sizes are zero-padded to the widest; each task's encoder reads its own width.
    data = cat_rows(datas) if isinstance(datas[0], torch.Tensor) else np.concatenate(datas)
    if mode == "collect":
        args = (data, masks, first.get("temperature", 1), to_plays, first.get("epsilon", 0.0))
    else:
        args = (data, masks, to_plays)
    return args, dict(ready_env_id=np.asarray(ready_ids), timestep=np.asarray(timesteps)), offsets


def split_output(output: Dict[int, Any], tasks: Sequence[int], offsets: Sequence[int],
                 requests: Dict[int, Request]) -> Dict[int, Dict[int, Any]]:
    """Each task's ``{local env id: output}`` from one forward's ``{global env id: output}``."""
    result = {}
    for task_id, offset in zip(tasks, offsets):
        args, kwargs = requests[task_id]
        n = args[0].shape[0]
        ids = kwargs.get("ready_env_id")
        local = range(n) if ids is None else [int(i) for i in ids]
        result[task_id] = {env_id: output[offset + env_id] for env_id in local}
    return result


def task_rows_of(tasks: Sequence[int], requests: Dict[int, Request]) -> TaskRows:
    return TaskRows.from_sizes([(t, requests[t][0][0].shape[0]) for t in tasks])
