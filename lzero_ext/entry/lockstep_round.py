"""Runs several tasks' lightzero workers (collectors or evaluators) together, their forwards in lockstep.

Each task's worker call (``collector.collect(...)`` or ``evaluator.eval(...)``) runs in its own thread; the
policy's task-bound ``forward`` sends each step to the policy's lockstep barrier
(``policies.lockstep.LockstepInference``), where one batched forward, run in the calling (main) thread,
serves every task that is still running.
A task whose round ends early leaves the barrier, so the others go on without it.
"""
import threading
from typing import Any, Callable, Dict

JOIN_POLL_S = 0.2  # the main thread serves and joins in slices, so Ctrl-C still reaches it


def run_in_lockstep(policy: Any, mode: str, jobs: Dict[int, Callable[[], Any]]) -> Dict[int, Any]:
    """``{task_id: job()}`` with every job in its own thread and their ``mode`` forwards batched per step.

    A single job runs inline. The first job error (in task order) is raised after every thread has ended."""
    if len(jobs) <= 1:
        return {task_id: job() for task_id, job in jobs.items()}
    lockstep = policy.lockstep(mode)
    results: Dict[int, Any] = {}
    errors: Dict[int, BaseException] = {}

    def work(task_id: int, job: Callable[[], Any]) -> None:
        try:
            results[task_id] = job()
        except BaseException as error:  # re-raised in the calling thread
            errors[task_id] = error
        finally:
            lockstep.leave(task_id)

    with lockstep.round(list(jobs)):
        threads = [threading.Thread(target=work, args=item, name=f"scalezero-{mode}-task{item[0]}", daemon=True)
                   for item in jobs.items()]
        for thread in threads:
            thread.start()
        lockstep.serve(JOIN_POLL_S)  # the batched forwards run here, in the main thread (see policies.lockstep)
        for thread in threads:
            while thread.is_alive():
                thread.join(JOIN_POLL_S)
    if errors:
        raise errors[min(errors)]
    return results
