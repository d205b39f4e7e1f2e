"""Test-only faults the trainer honours when asked through environment variables.

``python -m lzero_ext.bench faults`` and the tests use them to check that a fault is caught where
it starts; nothing happens unless a variable is set.

- ``SCALEZERO_FAULT_NAN_AT_ITER=<n>``: the value targets of the batches of learner iteration ``n``
  are NaN (as a diverging target model would produce them).
"""
import os
from typing import Any

import numpy as np

NAN_AT_ITER = "SCALEZERO_FAULT_NAN_AT_ITER"


def _with_nan_targets(batch: Any) -> Any:
    task_id, current_batch, target_batch = batch
    target_reward, target_value, target_policy = target_batch
    return task_id, current_batch, [target_reward, np.full_like(np.asarray(target_value, dtype=np.float32), np.nan),
                                    target_policy]


def install(trainer: Any) -> None:
    """Wraps the trainer's tasks' ``sample`` when a fault variable is set; otherwise changes nothing."""
    at_iter = os.environ.get(NAN_AT_ITER)
    if not at_iter:
        return
    nan_iter = int(at_iter)
    for task in trainer.tasks:
        def sample(policy: Any, _sample: Any = task.sample) -> Any:
            batch = _sample(policy)
            return _with_nan_targets(batch) if trainer.train_iter + 1 == nan_iter else batch
        task.sample = sample
