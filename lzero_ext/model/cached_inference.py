"""Batched initial and recurrent inference of a ``MultiTaskWorldModel`` with an explicit KV cache.

Every call takes the rows' task ids and an :class:`InferenceCache` as arguments; nothing is bound
onto the model. One call serves every task's environments (initial inference) or every task's search
leaves (recurrent inference) with one transformer pass per token.

The results equal lightzero's ``WorldModel.forward_initial_inference`` / ``forward_recurrent_inference``
run task by task, including their context rules (``lzero/model/unizero_world_models/world_model.py``):

* a root's context is the KV cache stored for its env slot at the previous step; a slot without one
  (first call, caches cleared, e.g. after a learn round) restarts from its last observation alone;
* contexts of one task are right-aligned to the task's longest one and the zeros before a shorter
  context take part in attention, as lightzero's ``trim_and_pad_kv_cache`` pads them (another task's
  longer contexts are masked out, so tasks never change each other's outputs);
* a context that reaches ``context_length - 1`` tokens drops its first step (two tokens), keeps the
  next ``context_length - 3`` and shifts their keys and values by lightzero's positional correction
  (``pos_emb_diff_k`` / ``pos_emb_diff_v``);
* positions are absolute embeddings: at the root the action token sits at the task's longest context
  length, in the search each leaf's tokens follow its own context.

Where lightzero hashes latent states to find a cache, the search here addresses nodes by their index in
the tree (what lightzero's C++ tree reports as ``latent_state_index_in_search_path``), so no latent is
copied to the host. Sizes are host integers (a child has its parent's tokens plus two), so the only host
transfers are the outputs the C++ tree needs.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lzero_ext.model.action_kinds import discrete_rows
from lzero_ext.model.inference_layers import InferenceLayers
from lzero_ext.model.kv_store import KVStore
from lzero_ext.model.sequence_forward import action_embeddings, encode
from lzero_ext.model.task_routing import TaskRows


@dataclass
class InferenceOutput:
    """One call's outputs, rows in the call's order. ``reward`` is None for an initial inference."""

    latent: Tensor                 # (B, 1, D) latent state of the root / the leaf
    policy_logits: Tensor          # (B, A) discrete logits, or (B, 2 * a_max) [mu, sigma] (padded per task)
    value: Tensor                  # (B, support) value logits
    reward: Optional[Tensor] = None  # (B, support) reward logits (recurrent inference)


class InferenceCache:
    """The KV caches of one stream of inference calls (collection or evaluation), keyed by (task, env).

    ``env_counts`` maps each task id to its number of envs; slot ``slot(task, env)`` holds that env's root
    context between steps. ``search`` holds the nodes of the current search: node ``(simulation, row)`` is
    entry ``simulation * batch + row`` (simulation 0: the roots).

    Example:
        >>> from lzero_ext.model.scalezero_model import ScaleZeroModel
        >>> cfg = dict(num_tasks=2, obs_type='vector', embed_dim=16, num_heads=2, num_layers=1, env_num=2,
        ...            max_blocks=4, max_tokens=8, context_length=8, num_simulations=2)
        >>> wm = ScaleZeroModel(observation_shape=3, action_space_size=2, world_model_cfg=cfg).world_model.eval()
        >>> cache = InferenceCache(wm, {0: 2, 1: 1}, num_simulations=2)
        >>> cache.slots([0, 0, 1], [0, 1, 0]).tolist(), cache.root.num_entries
        ([0, 1, 2], 3)
    """

    def __init__(self, world_model: torch.nn.Module, env_counts: Dict[int, int], *, num_simulations: int) -> None:
        if world_model.context_length < 4:
            raise ValueError(f"context_length must be >= 4 for cached inference, got {world_model.context_length}")
        self._geometry = dict(num_layers=world_model.config.num_layers, num_heads=world_model.num_heads,
                              context_length=world_model.context_length,
                              head_dim=world_model.embed_dim // world_model.num_heads, device=world_model.device)
        self._offsets: Dict[int, int] = {}
        total = 0
        for task_id in sorted(env_counts):
            self._offsets[task_id], total = total, total + int(env_counts[task_id])
        self.env_counts = {int(t): int(n) for t, n in env_counts.items()}
        self.root = KVStore(num_entries=total, **self._geometry)
        self.root_valid = np.zeros(total, dtype=bool)
        self.num_simulations = int(num_simulations)
        self.search: Optional[KVStore] = None

    def slots(self, task_ids: Sequence[int], env_ids: Sequence[int]) -> np.ndarray:
        """Slot index of each (task, env) pair."""
        out = []
        for task_id, env_id in zip(task_ids, env_ids):
            task_id, env_id = int(task_id), int(env_id)
            if task_id not in self._offsets or not 0 <= env_id < self.env_counts[task_id]:
                raise KeyError(f"no cache slot for task {task_id} env {env_id} (envs: {self.env_counts})")
            out.append(self._offsets[task_id] + env_id)
        return np.asarray(out, dtype=np.int64)

    def invalidate(self, task_id: Optional[int] = None) -> None:
        """Forget the root contexts of ``task_id``'s envs (None: every task): their next step restarts from
        the last observation alone, as after lightzero's ``clear_caches``."""
        if task_id is None:
            self.root_valid[:] = False
        else:
            start = self._offsets[int(task_id)]
            self.root_valid[start:start + self.env_counts[int(task_id)]] = False

    def begin_search(self, batch: int) -> KVStore:
        """The node store of a search over ``batch`` roots (reused between searches, grown when needed)."""
        needed = (self.num_simulations + 1) * batch
        if self.search is None or self.search.num_entries < needed:
            self.search = KVStore(num_entries=needed, **self._geometry)
        return self.search


# ---------------------------------------------------------------------------------------------- helpers
def task_rows(task_ids: Union[Sequence[int], TaskRows]) -> TaskRows:
    """The ``TaskRows`` of one task id per row (a task's rows must be contiguous); a ``TaskRows`` passes through."""
    return task_ids if isinstance(task_ids, TaskRows) else TaskRows.from_task_ids([int(t) for t in task_ids])


def _per_task_max(values: np.ndarray, rows: TaskRows) -> np.ndarray:
    """Each row gets the largest value among its task's rows (lightzero pads a task's contexts to its longest)."""
    out = np.empty_like(values)
    for _, start, stop in rows.segments:
        out[start:stop] = values[start:stop].max(initial=0)
    return out


def _action_tokens(world_model: torch.nn.Module, actions: Tensor, rows: TaskRows) -> Tensor:
    """``(B,)`` discrete or ``(B, a_max)`` continuous actions (both kinds: ``(B, a_max)``, a discrete task's id in
    column 0) -> ``(B, 1, D)`` action tokens."""
    if world_model.mixed_actions:
        return action_embeddings(world_model, actions.float().view(actions.shape[0], -1), rows)[:, None]
    return action_embeddings(world_model, actions if world_model.continuous_action_space else actions.long(), rows)[:, None]


def _token_pass(layers: InferenceLayers, x: Tensor, kv_buf: Tensor, column: int, key_valid: Tensor,
                rows: TaskRows) -> Tensor:
    """One token per row through the transformer: its keys and values are written at ``column`` of the
    ``(2, L, B, H, W, d)`` buffer and it attends to the columns ``< column + 1`` that ``key_valid`` (B, W) allows.
    lightzero's ``SelfAttention`` with a KV cache, in eval mode (dropout is the identity). Returns ``(B, 1, D)``."""
    if layers.task_embedding is not None:
        x = x + layers.task_embedding.index_select(0, rows.task_ids(x.device))[:, None]
    B, _, D = x.shape
    H = kv_buf.shape[3]
    allowed = key_valid[:, None, None, :column + 1]                                   # (B, 1, 1, column + 1)
    for layer, block in enumerate(layers.blocks):
        q, k, v = block.qkv(block.ln1(x)).view(B, 3, H, D // H).unbind(1)             # 3 x (B, H, d)
        kv_buf[0, layer, :, :, column] = k
        kv_buf[1, layer, :, :, column] = v
        keys, values = kv_buf[0, layer, :, :, :column + 1], kv_buf[1, layer, :, :, :column + 1]  # (B, H, c + 1, d)
        y = F.scaled_dot_product_attention(q[:, :, None], keys, values, attn_mask=allowed)  # (B, H, 1, d)
        x = x + block.proj(y.reshape(B, 1, D))
        x = x + block.ffn(block.ln2(x))
    return layers.ln_f(x)


def _position_correction(world_model: torch.nn.Module) -> Tensor:
    """lightzero's precomputed key/value shift of a trimmed context as one ``(2, L, H, C - 3, d)`` tensor (rebuilt
    when lightzero recomputes its ``pos_emb_diff_k`` / ``pos_emb_diff_v`` after a learn round)."""
    source = (world_model.pos_emb_diff_k, world_model.pos_emb_diff_v)
    cached = world_model.__dict__.get('_kv_position_correction')
    if cached is None or cached[0][0] is not source[0] or cached[0][1] is not source[1]:
        key = (2, world_model.context_length - 1)
        layers = range(world_model.config.num_layers)
        correction = torch.stack([torch.stack([diffs[layer][key][0] for layer in layers]) for diffs in source])
        cached = world_model.__dict__['_kv_position_correction'] = (source, correction)
    return cached[1]


def _window(size_before: np.ndarray, own_start: np.ndarray, context_length: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where a new entry starts in the working buffer, its size and whether it was trimmed, for an entry of
    ``size_before`` tokens starting at column ``own_start`` (lightzero keeps columns [2, C - 1) of a context
    that reached C - 1 tokens)."""
    trimmed = size_before >= context_length - 1
    offsets = own_start + np.where(trimmed, 2, 0)
    sizes = np.where(trimmed, context_length - 3, size_before)
    return offsets, sizes, trimmed


# ---------------------------------------------------------------------------------------------- inference
@torch.no_grad()
def _fill_missing_roots(world_model: torch.nn.Module, layers: InferenceLayers, cache: InferenceCache,
                        slots: np.ndarray, last_obs: Tensor, task_ids: np.ndarray) -> None:
    """Slots without a stored context restart from their last observation alone (lightzero's cache miss):
    one token at position 0, stored with size 1."""
    rows = task_rows(task_ids)
    latent = encode(world_model.tokenizer.encoder, last_obs, rows)                         # (n, 1, D)
    n, L = latent.shape[0], world_model.config.num_layers
    H = world_model.num_heads
    kv_buf = latent.new_zeros(2, L, n, H, 1, world_model.embed_dim // H)
    x = latent + layers.pos_emb[0]
    _token_pass(layers, x, kv_buf, 0, torch.ones(n, 1, dtype=torch.bool, device=x.device), rows)
    cache.root.store(slots, kv_buf, offsets=np.zeros(n, dtype=np.int64), sizes=np.ones(n, dtype=np.int64))
    cache.root_valid[slots] = True


@torch.no_grad()
def initial_inference(world_model: torch.nn.Module, obs: Tensor, task_ids: Sequence[int], cache: InferenceCache,
                      slots: np.ndarray, *, last_obs: Optional[Tensor] = None, last_actions: Optional[Tensor] = None,
                      first_step: Optional[np.ndarray] = None, layers: Optional[InferenceLayers] = None
                      ) -> InferenceOutput:
    """Root inference for a mixed batch of env slots; stores each slot's new context in ``cache.root``.

    ``obs``: (B, *obs) current observations (vector observations zero-padded to the widest task's);
    ``task_ids``: (B,) task of each row, contiguous per task; ``slots``: (B,) ``cache.slots(...)`` of the rows;
    ``last_obs`` / ``last_actions``: the previous step's observations and actions ((B,) discrete, (B, a_max)
    continuous), read for rows that are not ``first_step`` (True: the episode starts, no context; lightzero
    decides this per task: every last action -1); ``layers``: the model's ``InferenceLayers`` (None: taken now).
    Returns the roots' latents, policy and value logits.
    """
    layers = InferenceLayers.of(world_model) if layers is None else layers
    task_ids = np.asarray(task_ids, dtype=np.int64)
    slots = np.asarray(slots, dtype=np.int64)
    B = len(task_ids)
    first_step = np.zeros(B, dtype=bool) if first_step is None else np.asarray(first_step, dtype=bool)
    rows = task_rows(task_ids)
    for _, start, stop in rows.segments:
        if first_step[start:stop].any() and not first_step[start:stop].all():
            raise ValueError("first_step must be the same for every row of a task (lightzero restarts all its envs)")
    C = world_model.context_length
    W = C - 2  # the longest stored context: a context of C - 1 tokens or more is trimmed to C - 3
    device = obs.device
    continuing = ~first_step
    missing = continuing & ~cache.root_valid[slots]
    if missing.any():
        if last_obs is None:
            raise ValueError("last_obs is needed for rows whose env slot has no stored context")
        index = torch.from_numpy(np.flatnonzero(missing)).to(device)
        _fill_missing_roots(world_model, layers, cache, slots[missing], last_obs.index_select(0, index), task_ids[missing])

    sizes = np.where(continuing, cache.root.size[slots], 0)                           # (B,) context tokens
    longest = _per_task_max(sizes, rows)                                              # (B,) lightzero's padded length
    kv_buf, _ = cache.root.gather_right_aligned(slots, W, sizes=sizes, free_columns=2)  # (2, L, B, H, W + 2, d)
    columns = np.arange(W + 2)[None, :]
    valid = (columns >= (W - longest)[:, None]) & continuing[:, None]                 # context and action token
    valid[:, W + 1] = True                                                            # the observation token
    key_valid = torch.from_numpy(valid).to(device)
    # a first-step row's (unused) action token sees itself only, so its softmax has a finite entry
    act_valid = torch.from_numpy(valid | (columns == W)).to(device)

    latent = encode(world_model.tokenizer.encoder, obs, rows)                             # (B, 1, D)
    if continuing.any():
        if last_actions is None:
            raise ValueError("last_actions is needed for rows that continue an episode")
        actions = torch.as_tensor(last_actions, device=device)
        if world_model.mixed_actions:  # a discrete row's id (column 0) may be -1 at a first step
            actions = actions.float().view(B, -1)
            ids = torch.where(discrete_rows(world_model.action_kinds, rows, device), actions[:, 0].clamp(min=0),
                              actions[:, 0])
            actions = torch.cat([ids[:, None], actions[:, 1:]], dim=1)
        elif not world_model.continuous_action_space:
            actions = actions.clamp(min=0)  # first-step rows carry -1; their action token is masked out
        positions = torch.from_numpy(longest).to(device)
        x = _action_tokens(world_model, actions, rows) + layers.positions(positions)
        _token_pass(layers, x, kv_buf, W, act_valid, rows)
    obs_positions = torch.from_numpy(np.where(continuing, longest + 1, 0)).to(device)
    out = _token_pass(layers, latent + layers.positions(obs_positions), kv_buf, W + 1,
                      key_valid, rows)

    total = np.where(continuing, longest + 2, 1)                                      # tokens after this step
    offsets, new_sizes, trimmed = _window(total, np.where(continuing, W - longest, W + 1), C)
    cache.root.store(slots, kv_buf, offsets=offsets, sizes=new_sizes,
                     correction=_position_correction(world_model), corrected=trimmed)
    cache.root_valid[slots] = True
    return InferenceOutput(latent=latent, policy_logits=layers.head('policy', out, rows),
                           value=layers.head('value', out, rows))


@torch.no_grad()
def recurrent_inference(world_model: torch.nn.Module, store: KVStore, parents: np.ndarray, children: np.ndarray,
                        actions: Tensor, task_ids: Union[Sequence[int], TaskRows],
                        layers: Optional[InferenceLayers] = None) -> InferenceOutput:
    """One search step for every leaf: the action token and the predicted next latent appended to each parent's
    context (entries ``parents`` of ``store``); the new contexts are stored at ``children``.

    ``actions``: (B,) discrete or (B, a_max) continuous (zero-padded per task); ``layers``: the model's
    ``InferenceLayers`` (None: taken now; a search takes them once for all its simulations). Returns the next
    latents, rewards, policy and value logits."""
    layers = InferenceLayers.of(world_model) if layers is None else layers
    parents, children = np.asarray(parents, dtype=np.int64), np.asarray(children, dtype=np.int64)
    rows = task_rows(task_ids)
    C = world_model.context_length
    W = C - 2
    device = store.device
    sizes = store.size[parents]                                                       # (B,)
    longest = _per_task_max(sizes, rows)
    kv_buf, _ = store.gather_right_aligned(parents, W, sizes=sizes, free_columns=2)   # (2, L, B, H, W + 2, d)
    valid = np.arange(W + 2)[None, :] >= (W - longest)[:, None]
    key_valid = torch.from_numpy(valid).to(device)
    positions = torch.from_numpy(sizes).to(device)

    x = _action_tokens(world_model, torch.as_tensor(actions, device=device), rows) \
        + layers.positions(positions)
    act_out = _token_pass(layers, x, kv_buf, W, key_valid, rows)
    reward = layers.head('rewards', act_out, rows)
    latent = layers.head('observations', act_out, rows)[:, None]                      # (B, 1, D)
    obs_out = _token_pass(layers, latent + layers.positions(positions + 1), kv_buf, W + 1,
                          key_valid, rows)

    offsets, new_sizes, trimmed = _window(sizes + 2, W - sizes, C)
    store.store(children, kv_buf, offsets=offsets, sizes=new_sizes,
                correction=_position_correction(world_model), corrected=trimmed)
    return InferenceOutput(latent=latent, policy_logits=layers.head('policy', obs_out, rows),
                           value=layers.head('value', obs_out, rows), reward=reward)
