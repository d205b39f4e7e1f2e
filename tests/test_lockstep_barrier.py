"""LockstepInference: every task's worker is a coroutine; each step is one batched forward over the tasks
still running, all in the calling thread."""
import threading

import pytest

from policies.lockstep import LockstepInference


def test_each_step_is_one_batch_over_the_tasks_still_running():
    batches, threads = [], set()

    def run_batch(requests):
        batches.append(sorted(requests))
        threads.add(threading.current_thread().name)
        return {task: (task, args[0]) for task, (args, _kwargs) in requests.items()}

    lockstep = LockstepInference(run_batch)
    steps = {0: 3, 1: 1, 2: 2}
    jobs = {task: (lambda task=task: [lockstep.forward(task, step) for step in range(steps[task])]) for task in steps}
    outputs = lockstep.run(jobs)
    # tasks whose episodes end early leave; the others keep stepping together
    assert batches == [[0, 1, 2], [0, 2], [0]]
    assert outputs == {0: [(0, 0), (0, 1), (0, 2)], 1: [(1, 0)], 2: [(2, 0), (2, 1)]}
    assert threads == {threading.current_thread().name}  # no worker threads: one thread runs everything


def test_a_failing_batch_ends_the_round_and_unwinds_every_worker():
    unwound = []

    def run_batch(requests):
        raise RuntimeError("model exploded")

    lockstep = LockstepInference(run_batch)

    def job(task):
        try:
            lockstep.forward(task, 0)
        finally:
            unwound.append(task)

    with pytest.raises(RuntimeError, match="model exploded"):
        lockstep.run({0: lambda: job(0), 1: lambda: job(1)})
    assert sorted(unwound) == [0, 1]  # their finally blocks ran: nothing is left suspended
    assert lockstep.run({0: lambda: 5}) == {0: 5}  # the loop is usable again


def test_an_interrupt_during_a_batch_reaches_the_caller_and_leaves_no_worker_behind():
    def run_batch(requests):
        raise KeyboardInterrupt

    lockstep = LockstepInference(run_batch)
    unwound = []

    def job(task):
        try:
            lockstep.forward(task, 0)
        finally:
            unwound.append(task)

    with pytest.raises(KeyboardInterrupt):
        lockstep.run({0: lambda: job(0), 1: lambda: job(1)})
    assert sorted(unwound) == [0, 1]


def test_a_failing_worker_ends_the_round_with_its_error():
    lockstep = LockstepInference(lambda requests: {t: None for t in requests})

    def bad():
        lockstep.forward(1, 0)
        raise ValueError("env crashed")

    with pytest.raises(ValueError, match="env crashed"):
        lockstep.run({0: lambda: [lockstep.forward(0, i) for i in range(5)], 1: bad})


def test_grad_mode_belongs_to_each_coroutine_not_to_the_thread():
    """A task paused inside ``torch.no_grad()`` (lightzero's buffer samples that way) must not leave gradients off
    for the other tasks or for the caller once the round is over."""
    import torch

    seen = {}
    lockstep = LockstepInference(lambda requests: {t: torch.is_grad_enabled() for t in requests})

    def job(task):
        with torch.no_grad():
            lockstep.forward(task, 0)
        seen[task] = torch.is_grad_enabled()

    assert torch.is_grad_enabled()
    lockstep.run({0: lambda: job(0), 1: lambda: job(1)})
    assert seen == {0: True, 1: True}
    assert torch.is_grad_enabled()
