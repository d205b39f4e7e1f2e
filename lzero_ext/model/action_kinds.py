"""Discrete and continuous tasks in one model: their actions in one batch, and one action-embedding call.

A model over domains of both kinds (``world_model_cfg.action_type_list``, e.g. Atari and DMC) gives each task its
own action embedding: discrete tasks share one ``nn.Embedding`` of the common action space (wrapped by
:class:`DiscreteActionEmbedding`), continuous tasks have their own ``Linear(a_t -> D)``. In a mixed batch every
task's actions are floats zero-padded to the widest continuous task's dim, a discrete task's action id in column 0
(:func:`cat_actions`); ``sequence_forward.action_embeddings`` gives ``(..., D)`` for every row whatever its kind.

Example:
    >>> kinds = ['discrete', 'continuous']
    >>> batch = cat_actions(kinds, [torch.tensor([[2, 0]]), torch.rand(1, 2, 3)], [0, 1])
    >>> batch.shape, batch[0, :, 0].tolist()
    (torch.Size([2, 2, 3]), [2.0, 0.0])
"""
from typing import Sequence

import torch
from torch import Tensor, nn

from lzero_ext.model.task_routing import TaskRows, cat_rows

ACTION_TYPES = frozenset({'discrete', 'continuous'})


class DiscreteActionEmbedding(nn.Module):
    """The discrete tasks' shared ``nn.Embedding`` read from an action tensor of any dtype: ids as floats (a mixed
    batch) or integers (lightzero's own calls, ``(..., 1)``), with the output shape ``nn.Embedding`` gives."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        self.embedding = embedding

    def forward(self, actions: Tensor) -> Tensor:
        return self.embedding(actions.long())


def cat_actions(action_kinds: Sequence[str], per_task: Sequence[Tensor], task_ids: Sequence[int]) -> Tensor:
    """Per-task actions in row order as one batch: discrete ``(B_t, ...)`` ids become ``(B_t, ..., 1)`` floats,
    continuous ``(B_t, ..., a_t)`` stay; all zero-padded to the widest. Without a mix, lightzero's forms as they are."""
    if len(set(action_kinds)) == 1:
        return cat_rows(per_task)
    return cat_rows([x.unsqueeze(-1).float() if action_kinds[int(t)] == 'discrete' else x.float()
                     for x, t in zip(per_task, task_ids)])


def discrete_rows(action_kinds: Sequence[str], rows: TaskRows, device: torch.device) -> Tensor:
    """``(B,)`` bool: which rows of a mixed batch belong to discrete tasks."""
    flags = torch.tensor([action_kinds[t] == 'discrete' for t in range(len(action_kinds))], device=device)
    return flags[rows.task_ids(device)]
