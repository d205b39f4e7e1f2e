"""Faults for tests and the fault bench, handed to the trainer as a parameter (never read from the environment).

:func:`~lzero_ext.entry.train_scalezero.train_scalezero` takes ``batch_transform``: a function
``(learner iteration, batch) -> batch`` applied to every sampled batch; production runs pass None.
``python -m lzero_ext.bench.fault_job --fault-nan-at-iter N`` and the tests pass :class:`NanTargetsAt`.

Example::

    train_scalezero(configs, max_train_iter=8, batch_transform=NanTargetsAt(5))  # DivergenceError at iteration 5
"""
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class NanTargetsAt:
    """NaN value targets in every batch of learner iteration ``iteration`` (as a diverging target model would
    produce them); other iterations' batches pass unchanged."""

    iteration: int

    def __call__(self, iteration: int, batch: Any) -> Any:
        if iteration != self.iteration:
            return batch
        task_id, current_batch, (target_reward, target_value, target_policy) = batch
        nan_value = np.full_like(np.asarray(target_value, dtype=np.float32), np.nan)
        return task_id, current_batch, [target_reward, nan_value, target_policy]
