"""Observations of several modalities in one model: images, state vectors and text token ids side by side.

A model serving tasks of different domains (``world_model_cfg.obs_type_list``, e.g. Atari frames, DMC state
vectors and Jericho token ids) cannot stack their observations as they are. In a mixed batch every task's
observation is flattened and zero-padded to the widest task's ``prod(shape)``, the way vector tasks of different
sizes are padded already; each task's encoder body takes its own first ``prod(shape)`` values back into its own
shape (:class:`FlatObservation`). One latent width comes out of every modality:

* image tasks of one shape share one encoder body (the paper's shared image encoder; 64x64 RGB frames and
  10x10 MinAtar grids get one each);
* every vector task has its own MLP (state sizes differ per task);
* text tasks share the pretrained text encoder (token ids travel as floats and go back to int64 inside it).

Example:
    >>> layout = ObservationLayout(shapes=((2, 3, 3), (5,)), obs_types=('image', 'vector'))
    >>> layout.mixed, layout.width
    (True, 18)
    >>> batch = layout.cat([torch.ones(4, 2, 3, 3), torch.ones(3, 5)], [0, 1])
    >>> batch.shape
    torch.Size([7, 18])
"""
from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from lzero_ext.model.task_routing import cat_rows


def shape_tuple(shape: Union[int, Sequence[int]]) -> Tuple[int, ...]:
    """A config's observation shape (a vector's size, or a sequence) as a tuple of ints."""
    return (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)


@dataclass(frozen=True)
class ObservationLayout:
    """Per-task observation shapes and types; ``mixed`` when they need flattening to share one batch."""

    shapes: Tuple[Tuple[int, ...], ...]
    obs_types: Tuple[str, ...]

    @property
    def mixed(self) -> bool:
        return len(set(self.obs_types)) > 1

    def numel(self, task_id: int) -> int:
        return int(np.prod(self.shapes[task_id]))

    @property
    def width(self) -> int:
        """The flat width of a mixed batch: the largest task's number of values."""
        return max(self.numel(t) for t in range(len(self.shapes)))

    def flatten(self, x: Tensor, task_id: int) -> Tensor:
        """``(..., *shape_t) -> (..., prod(shape_t))``, keeping the leading (batch / time) dims."""
        shape = self.shapes[task_id]
        return x.reshape(*x.shape[:x.dim() - len(shape)], self.numel(task_id))

    def cat(self, per_task: Sequence[Tensor], task_ids: Sequence[int]) -> Tensor:
        """Per-task observations ``(B_t, [T,] *shape_t)``, in row order, as one ``(B, [T,] width)`` batch when mixed
        (as floats: token ids are exact in float32), else concatenated as they are (vectors zero-padded)."""
        if not self.mixed:
            return cat_rows(per_task)
        return cat_rows([self.flatten(x, int(t)).float() for x, t in zip(per_task, task_ids)])


class FlatObservation(nn.Module):
    """A task's encoder body fed from a flat, zero-padded mixed batch: ``(N, >= prod(shape))`` back to
    ``(N, *shape)``; observations already in ``shape`` (one task's own batch) pass through unchanged."""

    def __init__(self, body: nn.Module, shape: Sequence[int]) -> None:
        super().__init__()
        self.body, self.shape = body, tuple(int(s) for s in shape)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.shape:
            x = x[:, :int(np.prod(self.shape))].reshape(x.shape[0], *self.shape)
        return self.body(x)


def cat_observations(world_model: nn.Module, per_task: Sequence[Tensor], task_ids: Sequence[int]) -> Tensor:
    """Per-task observation tensors (row order) as one mixed batch for ``world_model``: flattened when its tasks'
    modalities differ (``world_model.observation_layout``), else concatenated with vectors zero-padded."""
    layout = getattr(world_model, 'observation_layout', None)
    return cat_rows(per_task) if layout is None else layout.cat(per_task, task_ids)
