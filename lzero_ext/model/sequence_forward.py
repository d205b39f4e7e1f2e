"""Whole-sequence forwards of a ``MultiTaskWorldModel`` over a mixed batch of tasks, task ids as arguments.

lightzero's ``WorldModel.forward`` with ``'obs_embeddings_and_act_tokens'`` runs a training sequence
(observation and action tokens interleaved, absolute positions, causal attention, no KV cache). These
functions run it for rows of several tasks at once: the shared encoder and transformer once over every
row, each per-task part (vector encoders, continuous action embeddings, heads) on its own rows, selected by
a ``TaskRows`` argument. Nothing is bound onto the model.

* :func:`encode` - observations of any leading shape to ``(N, 1, D)`` latents (lightzero's tokenizer rules);
* :func:`forward_sequences` - the training forward (the learn step's one forward for every task);
* :func:`target_inference` - the replay buffer's bootstrap-value inference (lightzero's ``initial_inference``
  without a current observation), for every task's sampled rows at once.
"""
from typing import Any, Callable

import torch
from lzero.model.common import MZNetworkOutput
from lzero.model.unizero_world_models.utils import WorldModelOutput
from torch import Tensor, nn

from lzero_ext.model.action_kinds import DiscreteActionEmbedding
from lzero_ext.model.task_routing import TaskRows, TaskSwitch, cat_rows


def route(switch: TaskSwitch, x: Tensor, rows: TaskRows, fn: Callable[[nn.Module, Tensor], Tensor]) -> Tensor:
    """``fn(copy_t, x_t)`` for each task's copy of a ``TaskSwitch`` on that task's rows (a shared copy runs once on
    every row), concatenated in row order and zero-padded to the widest output. ``rows`` may describe a tensor with
    a multiple of its rows (``TaskRows.factor_for``)."""
    if switch.shared and switch.input_widths is None:
        return fn(switch.per_task[0], x)
    factor = rows.factor_for(x.shape[0])
    if factor is None:
        raise ValueError(f"{x.shape[0]} rows do not split over the {rows.num_rows}-row mixed batch")
    outs = []
    for task_id, start, stop in rows.scaled(factor).segments:
        index = 0 if switch.shared else task_id
        x_t = x[start:stop]
        if switch.input_widths is not None:
            x_t = x_t[..., :switch.input_widths[index]]
        outs.append(fn(switch.per_task[index], x_t))
    return cat_rows(outs)


def encode(encoder: nn.Module, obs: Tensor, rows: TaskRows) -> Tensor:
    """A model's ``ObservationEncoder`` on a mixed batch: ``(B, *obs)`` or ``(B, T, *obs)`` -> ``(N, 1, D)``, N = B or
    B*T, with lightzero's tokenizer rules for the leading dims (``Tokenizer.encode_to_obs_embeddings``)."""
    if obs.dim() in (3, 5):  # (B, T, L) token ids / vectors, (B, T, C, H, W) images
        obs = obs.contiguous().view(-1, *obs.shape[2:])
    body = encoder.body
    if isinstance(body, TaskSwitch):
        z = route(body, obs, rows, lambda module, x: module(x))
    elif encoder.max_batch and obs.shape[0] > encoder.max_batch:  # in chunks: same result, cache-friendly on CPUs
        z = torch.cat([body(chunk) for chunk in obs.split(encoder.max_batch)])
    else:
        z = body(obs)
    z = encoder.norm(z)                                                               # (N, D_latent)
    if encoder.task_embedding is not None:
        factor = rows.factor_for(z.shape[0])
        task_ids = rows.task_ids(z.device).repeat_interleave(factor)                  # (N,)
        z = torch.cat([z, encoder.task_embedding(task_ids)], dim=-1)                  # (N, D)
    return z[:, None]                                                                 # (N, 1, D)


def action_embeddings(world_model: nn.Module, actions: Tensor, rows: TaskRows) -> Tensor:
    """Discrete ``(B, L, 1)`` ids or continuous ``(B, L, a_max)`` actions -> ``(B, L, 1, D)`` / ``(B, L, D)``; a model
    of both kinds takes ``(B, L, a_max)`` (``lzero_ext.model.action_kinds``) and gives ``(B, L, D)``."""
    table = world_model.act_embedding_table
    if world_model.mixed_actions:  # each task's module on its rows; a discrete one loses nn.Embedding's id axis
        def run(module: nn.Module, x: Tensor) -> Tensor:
            out = module(x)
            return out.squeeze(-2) if isinstance(module, DiscreteActionEmbedding) else out
        return route(table, actions.float(), rows, run)
    if isinstance(table, TaskSwitch):
        return route(table, actions.float(), rows, lambda module, x: module(x))
    return table(actions)


def forward_sequences(world_model: nn.Module, obs_embeddings: Tensor, actions: Tensor, rows: TaskRows) -> WorldModelOutput:
    """lightzero's training forward (``'obs_embeddings_and_act_tokens'``) for a mixed batch: ``obs_embeddings``
    ``(B, L, D)`` (or ``(B*L, 1, D)``), ``actions`` ``(B, L')`` discrete (L' >= L; the first L are read) or
    ``(B, L', a_max)`` continuous. Returns lightzero's ``WorldModelOutput`` with logits of shape (B, L, ...)."""
    wm = world_model
    B = actions.shape[0]
    obs = obs_embeddings.contiguous().view(B, -1, wm.embed_dim)                       # (B, L, D)
    L = obs.shape[1]
    if wm.continuous_action_space or wm.mixed_actions:
        act_tokens = (actions if actions.dim() == 3 else actions.unsqueeze(-1)).float()  # (B, L', a)
    else:
        act_tokens = actions.long().unsqueeze(-1)                                     # (B, L', 1)
    act = action_embeddings(wm, act_tokens, rows)
    act = act[:, :L, 0] if act.dim() == 4 else act[:, :L]                             # (B, L, D)
    sequences = torch.stack([obs, act], dim=2).reshape(B, 2 * L, wm.embed_dim)       # (B, 2L, D): o_0 a_0 o_1 ...
    sequences = sequences + wm.pos_emb(torch.arange(2 * L, device=sequences.device))
    if wm.task_embed_option == 'add':
        sequences = sequences + wm.task_embedding(rows.task_ids(sequences.device))[:, None]
    x = wm.transformer(sequences, None)                                               # (B, 2L, D)

    def head(switch: TaskSwitch) -> Tensor:
        return route(switch, x, rows, lambda module, x_t: module(x_t, num_steps=2 * L, prev_steps=0))

    return WorldModelOutput(x, head(wm.head_observations), head(wm.head_rewards), None, head(wm.head_policy),
                            head(wm.head_value))


@torch.no_grad()
def target_inference(world_model: nn.Module, obs: Tensor, actions: Any, rows: TaskRows) -> MZNetworkOutput:
    """The replay buffer's bootstrap inference for a mixed batch (lightzero's ``initial_inference(obs, actions)``
    without a current observation): the sequence of every sampled position but the last observation, the last
    action repeated; values and policies of every position (the last one duplicated), rows ``(B * L, ...)``."""
    wm = world_model
    actions = torch.as_tensor(actions, device=obs.device)                             # (B, L) or (B, L, a)
    B = actions.shape[0]
    latents = encode(wm.tokenizer.encoder, obs, rows.scaled(obs.shape[0] // B))      # (B*L_obs, 1, D)
    sequence_obs = latents.view(B, -1, wm.embed_dim)[:, :-1]                          # (B, L_obs - 1, D)
    actions = torch.cat([actions, actions[:, -1:]], dim=1)
    out = forward_sequences(wm, sequence_obs, actions, rows)

    def with_last_step(logits: Tensor) -> Tensor:                                     # (B, L, e) -> (B*(L+1), e)
        return torch.cat([logits, logits[:, -1:]], dim=1).reshape(-1, logits.shape[-1])

    return MZNetworkOutput(value=with_last_step(out.logits_value), reward=[0.] * latents.shape[0],
                           policy_logits=with_last_step(out.logits_policy), latent_state=latents)
