"""Lockstep inference: every task's collector (or evaluator) steps together, one policy forward per step.

lightzero's ``MuZeroSegmentCollector`` and ``MuZeroEvaluator`` are kept as they are, one per task (own env
manager, game segments, replay buffer, episode returns, logs). Each task's ``collect()`` / ``eval()`` runs
as a coroutine (a ``greenlet``) in the calling thread: when it calls ``policy.forward`` it pauses and hands
its request to :meth:`LockstepInference.run`. Once every running task has asked, **one** forward serves
them all (one initial inference and one C++ search over every task's roots, ``policies.batched_act``), and
each task resumes with its own slice of the output.

There are no threads: one thread steps every task's envs and runs every forward, so torch's thread pool,
signals (Ctrl-C reaches the loop directly) and exceptions behave as in a plain loop. A task whose round ends
early stops asking; the others go on without it.
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

import greenlet
import numpy as np
import torch

Request = Tuple[tuple, dict]  # (args, kwargs) of one task's policy.forward call


@dataclass
class _Forward:
    """What a paused task hands to the loop: its ``policy.forward`` call."""

    task_id: int
    request: Request


@dataclass
class _Done:
    """What a finished task hands to the loop: its job's return value."""

    result: Any


class LockstepInference:
    """Runs several tasks' worker calls as coroutines whose ``forward`` calls are served in batches.

    ``run_batch({task_id: request})`` (one call per step) returns ``{task_id: output}``.

    Example:
        >>> lockstep = LockstepInference(lambda requests: {t: args[0] * 10 for t, (args, _) in requests.items()})
        >>> jobs = {t: (lambda t=t: [lockstep.forward(t, step) for step in range(t + 1)]) for t in (0, 1)}
        >>> lockstep.run(jobs)
        {0: [0], 1: [0, 10]}
    """

    def __init__(self, run_batch: Callable[[Dict[int, Request]], Dict[int, Any]]) -> None:
        self._run_batch = run_batch
        self._loop: Any = None  # the greenlet running :meth:`run`, while it runs

    def is_member(self, task_id: int) -> bool:
        """Whether ``task_id``'s forward is called from a coroutine of a running round."""
        current = greenlet.getcurrent()
        return self._loop is not None and current is not self._loop and getattr(current, "task_id", None) == task_id

    def forward(self, task_id: int, *args: Any, **kwargs: Any) -> Any:
        """Pauses the calling task until one batched forward has served every task that asked this step."""
        return self._loop.switch(_Forward(task_id, (args, kwargs)))

    def run(self, jobs: Dict[int, Callable[[], Any]]) -> Dict[int, Any]:
        """``{task_id: job()}``, every job a coroutine whose forwards are batched per step. The first error (a
        job's or a batch's) ends the round: the other jobs are unwound and the error is raised here."""
        if self._loop is not None:
            raise RuntimeError("a lockstep round is already running")
        self._loop = greenlet.getcurrent()
        workers: Dict[int, Any] = {}
        for task_id, job in jobs.items():
            worker = greenlet.greenlet(lambda _start, job=job: _Done(job()), parent=self._loop)
            worker.task_id = task_id
            workers[task_id] = worker
        results: Dict[int, Any] = {}
        resume: Dict[int, Any] = {task_id: None for task_id in workers}  # what each paused task gets back
        # torch's grad mode is per thread, not per coroutine: a task paused inside ``torch.no_grad()`` must not leave
        # it switched off for the loop or the other tasks, so each coroutine keeps its own
        loop_grad = torch.is_grad_enabled()
        grad_mode = {task_id: loop_grad for task_id in workers}
        try:
            while resume:
                requests: Dict[int, Request] = {}
                for task_id, value in resume.items():  # each task runs until it asks for a forward or ends
                    torch.set_grad_enabled(grad_mode[task_id])
                    try:
                        message = workers[task_id].switch(value)  # the first switch starts the job
                    finally:
                        grad_mode[task_id] = torch.is_grad_enabled()
                        torch.set_grad_enabled(loop_grad)
                    if isinstance(message, _Forward):
                        requests[task_id] = message.request
                    else:
                        results[task_id] = message.result
                resume = dict(self._run_batch(requests)) if requests else {}
            return results
        finally:
            self._loop = None
            for task_id, worker in workers.items():
                if not worker.dead:  # an error ended the round: unwind the others' finally blocks
                    torch.set_grad_enabled(grad_mode[task_id])
                    worker.throw(greenlet.GreenletExit)
            torch.set_grad_enabled(loop_grad)


def is_first_step(last_actions: Any, continuous: bool) -> bool:
    """lightzero's test for "no previous action": every last action is -1 (discrete) or no action array."""
    if continuous:
        return not isinstance(last_actions[0], np.ndarray)
    return max(last_actions) == -1
