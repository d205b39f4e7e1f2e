"""Divergence caught where it starts: non-finite targets, losses, gradients or parameters.

A diverging run otherwise crashes later and far away (NaN value targets reach lightzero's
categorical value transform as index ``-2**63``). These checks are cheap (one ``isfinite`` per
tensor) and raise :class:`DivergenceError`, which the trainer completes with the iteration and the
CLI prints as one line, keeping the last good checkpoint.

Example::

    check_finite_targets(task_id, target_batch)        # before the targets are transformed
    check_finite_losses(task_id, {"loss_value": 0.3, "loss_policy": float("nan")})  # raises
"""
import math
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch

TARGET_NAMES = ("target_reward", "target_value", "target_policy")  # order of lightzero's target batch


class DivergenceError(FloatingPointError):
    """Training produced a non-finite value; ``name`` says which (a loss, a target, the gradient)."""

    def __init__(self, name: str, *, task_id: Optional[int] = None) -> None:
        super().__init__(name)
        self.name = name
        self.task_id = task_id
        self.task_name: Optional[str] = None  # filled in by the trainer's run guard
        self.iteration: Optional[int] = None  # the learner iteration that failed
        self.last_checkpoint: Optional[str] = None  # the last good checkpoint, or None when none was written

    def __str__(self) -> str:
        where = "" if self.task_id is None else f" of task {self.task_id}" + (f" ({self.task_name})" if self.task_name else "")
        when = "" if self.iteration is None else f" at iteration {self.iteration}"
        kept = ("no checkpoint was written yet" if self.last_checkpoint is None
                else f"the last good checkpoint {self.last_checkpoint} is kept")
        return f"training diverged: non-finite {self.name}{where}{when}; {kept} (try a lower learning rate)"


def _finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all())
    if isinstance(value, np.ndarray):
        return bool(np.isfinite(value).all()) if value.dtype.kind in "fc" else True
    return math.isfinite(float(value))


def check_finite_targets(task_id: int, target_batch: Sequence[Any]) -> None:
    """Raises :class:`DivergenceError` for a non-finite reward, value or policy target of ``task_id``."""
    for name, value in zip(TARGET_NAMES, target_batch):
        if not _finite(np.asarray(value, dtype=np.float64) if isinstance(value, list) else value):
            raise DivergenceError(name, task_id=task_id)


def check_finite_losses(task_id: int, losses: Mapping[str, Any]) -> None:
    """Raises :class:`DivergenceError` naming the first non-finite scalar loss of ``task_id``.

    The parts (``loss_value``, ``loss_policy``, ...) are checked before ``loss_total``, so the
    message names the term where the NaN entered."""
    names = sorted((k for k in losses if "loss" in k and k != "loss_total"), key=str) + ["loss_total"]
    for name in names:
        value = losses.get(name)
        if isinstance(value, (int, float, torch.Tensor, np.floating)) and not _finite(value):
            raise DivergenceError(name, task_id=task_id)


def check_finite_gradient(grad_norm: Any) -> None:
    """Raises :class:`DivergenceError` when the total gradient norm (before clipping) is not finite."""
    if not _finite(grad_norm):
        raise DivergenceError("gradient norm")


def check_finite_parameters(parameters: Iterable[torch.Tensor]) -> None:
    """Raises :class:`DivergenceError` when any parameter holds a NaN or inf (checked before saving)."""
    for param in parameters:
        if not bool(torch.isfinite(param.detach()).all()):
            raise DivergenceError("parameters")
