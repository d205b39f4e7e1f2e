"""Runs several tasks' lightzero workers (collectors or evaluators) together, their forwards in lockstep.

Each task's worker call (``collector.collect(...)`` or ``evaluator.eval(...)``) runs as a coroutine of the
policy's lockstep loop (``policies.lockstep.LockstepInference``): the policy's task-bound ``forward`` pauses
it, and one batched forward serves every task that is still running. One thread does all of it.
"""
from typing import Any, Callable, Dict


def run_in_lockstep(policy: Any, mode: str, jobs: Dict[int, Callable[[], Any]]) -> Dict[int, Any]:
    """``{task_id: job()}`` with the jobs' ``mode`` forwards batched per step (one job too: its steps take the
    same batched path)."""
    return policy.lockstep(mode).run(jobs) if jobs else {}
