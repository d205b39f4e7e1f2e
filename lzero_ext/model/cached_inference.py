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
import functools
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lzero_ext.model.action_kinds import discrete_rows
from lzero_ext.model.kv_store import KVStore
from lzero_ext.model.sequence_forward import action_embeddings, encode, route
from lzero_ext.model.task_routing import TaskRows, TaskSwitch


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


Layer = Callable[[Tensor, Optional[Tensor]], Tensor]  # (h (T, R, in), task index (T,) or None: all) -> (T, R, out)


def _pick(stacked: Tensor, tasks: Optional[Tensor]) -> Tensor:
    """The rows of per-task ``stacked`` weights for ``tasks`` (None: every task in order, no copy)."""
    return stacked if tasks is None else stacked.index_select(0, tasks)


def _head_layout(switch: TaskSwitch) -> Tuple[int, ...]:
    """Identities of the per-task heads' layers: changes when a layer is replaced (e.g. wrapped by DPS)."""
    return tuple(id(layer) for head in switch.per_task._modules.values()
                 for layer in getattr(head.head_module, '_modules', {}).values())


def _stackable_layers(switch: TaskSwitch) -> Optional[Tuple[List[type], List[nn.Sequential], List[Tensor]]]:
    """The layer kinds, per-task sequences and parameters of heads of the form Linear -> GELU -> Linear
    [-> LayerNorm]; None for any other head (shared, continuous, wrapped by DPS adapters)."""
    if switch.shared or switch.input_widths is not None:
        return None
    sequences = [head.head_module for head in switch.per_task]
    if any(type(seq) is not nn.Sequential for seq in sequences):
        return None
    kinds = [type(layer) for layer in sequences[0]]
    if kinds[:3] != [nn.Linear, nn.GELU, nn.Linear] or kinds[3:] not in ([], [nn.LayerNorm]) or \
            any([type(layer) for layer in seq] != kinds for seq in sequences):
        return None
    return kinds, sequences, [p for seq in sequences for p in seq.parameters()]


def _stacked_head(switch: TaskSwitch) -> Optional[List[Layer]]:
    """Per-task heads of the form Linear -> GELU -> Linear [-> LayerNorm] as layers over stacked per-task weights
    (``(T, in, out)`` matrices, ``(T, 1, out)`` biases and gains), cached until a weight changes or a layer is
    replaced; None for any other head. A call costs a few attribute reads: it runs twice per simulation."""
    layout = _head_layout(switch)
    cached = switch.__dict__.get('_stacked_head')
    if cached is None or cached['layout'] != layout:
        cached = switch.__dict__['_stacked_head'] = dict(layout=layout, stackable=_stackable_layers(switch),
                                                         stamp=None, layers=None)
    if cached['stackable'] is None:
        return None
    kinds, sequences, params = cached['stackable']
    stamp = [(p.data_ptr(), p._version) for p in params]
    if cached['stamp'] != stamp:
        layers: List[Layer] = []
        with torch.no_grad():
            for index, kind in enumerate(kinds):
                modules = [seq[index] for seq in sequences]
                if kind is nn.GELU:
                    layers.append(lambda h, tasks, approximate=modules[0].approximate: F.gelu(h, approximate=approximate))
                    continue
                weight = torch.stack([m.weight.T if kind is nn.Linear else m.weight[None] for m in modules])
                bias = torch.stack([m.bias[None] for m in modules])                 # (T, 1, out)
                if kind is nn.Linear:                                               # weight (T, in, out)
                    layers.append(lambda h, tasks, w=weight, b=bias: torch.baddbmm(_pick(b, tasks), h, _pick(w, tasks)))
                else:                                                               # LayerNorm gain (T, 1, D)
                    layers.append(lambda h, tasks, w=weight, b=bias, eps=modules[0].eps:
                                  torch.addcmul(_pick(b, tasks), F.layer_norm(h, h.shape[-1:], eps=eps), _pick(w, tasks)))
        cached.update(stamp=stamp, layers=layers)
    return cached['layers']


@functools.lru_cache(maxsize=256)
def _task_layout(rows: TaskRows, num_tasks: int, device: torch.device) -> Tuple[Tensor, Optional[Tensor], int, int]:
    """Where each row of a mixed batch sits in a ``(T, R)`` layout (every task padded to the most rows), the
    tasks' ids (None when they are all ``num_tasks`` in order: the stacked weights need no selection), T and R."""
    longest = max(stop - start for _, start, stop in rows.segments)
    slots = torch.cat([torch.arange(start, stop) - start + i * longest for i, (_, start, stop) in enumerate(rows.segments)])
    every_task = list(rows.tasks) == list(range(num_tasks))
    tasks = None if every_task else torch.as_tensor(rows.tasks, device=device)
    return slots.to(device), tasks, len(rows.tasks), longest


def _batched_head(layers: List[Layer], x: Tensor, rows: TaskRows, num_tasks: int) -> Tensor:
    """Every task's head on its rows at once, one batched matmul per layer: ``(B, 1, D) -> (B, out)``."""
    slots, tasks, count, longest = _task_layout(rows, num_tasks, x.device)
    h = x.new_zeros(count * longest, x.shape[-1]).index_copy_(0, slots, x[:, 0]).view(count, longest, -1)
    for layer in layers:
        h = layer(h, tasks)                                                           # (T, R, out)
    return h.reshape(count * longest, -1).index_select(0, slots)                      # (B, out)


def _head(switch: TaskSwitch, x: Tensor, rows: TaskRows) -> Tensor:
    """A lightzero head (``Head`` or continuous ``PolicyHeadCont``) on one token per row: ``(B, 1, D) -> (B, out)``."""
    stacked = _stacked_head(switch) if len(rows.segments) > 1 else None
    if stacked is not None:
        return _batched_head(stacked, x, rows, len(switch.per_task))

    def run(head, x_t):
        out = _sequential(head.head_module, x_t)
        if isinstance(out, dict):  # ReparameterizationHead: lightzero concatenates [mu, sigma]
            out = torch.cat([out['mu'], out['sigma']], dim=-1)
        return out[:, 0]
    return route(switch, x, rows, run)


def _sequential(module: nn.Module, x: Tensor) -> Any:
    """A head's ``nn.Sequential`` with the fast paths of :func:`_linear` / :func:`_layer_norm`."""
    if type(module) is not nn.Sequential:
        return module(x)
    for layer in module:
        if type(layer) is nn.Linear:
            x = F.linear(x, layer.weight, layer.bias)
        elif type(layer) is nn.LayerNorm:
            x = _layer_norm(layer, x)
        elif type(layer) is nn.GELU:
            x = F.gelu(x, approximate=layer.approximate)
        else:
            x = layer(x)
    return x


def _action_tokens(world_model: torch.nn.Module, actions: Tensor, rows: TaskRows) -> Tensor:
    """``(B,)`` discrete or ``(B, a_max)`` continuous actions (both kinds: ``(B, a_max)``, a discrete task's id in
    column 0) -> ``(B, 1, D)`` action tokens."""
    if world_model.mixed_actions:
        return action_embeddings(world_model, actions.float().view(actions.shape[0], -1), rows)[:, None]
    return action_embeddings(world_model, actions if world_model.continuous_action_space else actions.long(), rows)[:, None]


def _linear(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)``, through ``F.linear`` for a plain ``nn.Linear`` (saves the module-call overhead, which on a
    CPU is most of the cost of a one-token layer); wrapped linears (DPS adapters) keep their own forward."""
    if type(module) is nn.Linear:
        return F.linear(x, module.weight, module.bias)
    return module(x)


def _layer_norm(module: nn.Module, x: Tensor) -> Tensor:
    if type(module) is nn.LayerNorm:
        return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)
    return module(x)


def _fused_qkv(attn: nn.Module) -> Optional[Tuple[Tensor, Tensor]]:
    """One ``(3D, D)`` weight and ``(3D,)`` bias for lightzero's query, key and value linears, rebuilt only when
    a weight changed (the optimizer bumps the tensors' versions); None when one of them is wrapped (DPS)."""
    linears = (attn.query, attn.key, attn.value)
    if any(type(m) is not nn.Linear or m.bias is None for m in linears):
        return None
    stamp = tuple((m.weight.data_ptr(), m.weight._version, m.bias._version) for m in linears)
    cached = attn.__dict__.get('_fused_qkv')
    if cached is None or cached[0] != stamp:
        with torch.no_grad():
            weight = torch.cat([m.weight for m in linears])                            # (3D, D)
            bias = torch.cat([m.bias for m in linears])                                # (3D,)
        cached = attn.__dict__['_fused_qkv'] = (stamp, weight, bias)
    return cached[1], cached[2]


def _token_pass(world_model: torch.nn.Module, x: Tensor, kv_buf: Tensor, column: int, key_valid: Tensor,
                rows: TaskRows) -> Tensor:
    """One token per row through the transformer: its keys and values are written at ``column`` of the
    ``(2, L, B, H, W, d)`` buffer and it attends to the columns ``< column + 1`` that ``key_valid`` (B, W) allows.
    lightzero's ``SelfAttention`` with a KV cache, in eval mode (dropout is the identity). Returns ``(B, 1, D)``."""
    if world_model.task_embed_option == 'add':
        x = x + world_model.task_embedding(rows.task_ids(x.device))[:, None]
    transformer = world_model.transformer
    B, _, D = x.shape
    H = world_model.num_heads
    allowed = key_valid[:, None, None, :column + 1]                                   # (B, 1, 1, column + 1)
    for layer, block in enumerate(transformer.blocks):
        attn = block.attn
        h = _layer_norm(block.ln1, x)                                                 # (B, 1, D)
        fused = _fused_qkv(attn)
        if fused is not None:
            q, k, v = F.linear(h, *fused).view(B, 3, H, D // H).unbind(1)             # 3 x (B, H, d)
        else:
            q, k, v = (_linear(m, h).view(B, H, D // H) for m in (attn.query, attn.key, attn.value))
        kv_buf[0, layer, :, :, column] = k
        kv_buf[1, layer, :, :, column] = v
        keys, values = kv_buf[0, layer, :, :, :column + 1], kv_buf[1, layer, :, :, :column + 1]  # (B, H, c + 1, d)
        y = F.scaled_dot_product_attention(q[:, :, None], keys, values, attn_mask=allowed)  # (B, H, 1, d)
        x = x + _linear(attn.proj, y.reshape(B, 1, D))
        x = x + block._feed_forward(_layer_norm(block.ln2, x))
    return _layer_norm(transformer.ln_f, x)


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
def _fill_missing_roots(world_model: torch.nn.Module, cache: InferenceCache, slots: np.ndarray, last_obs: Tensor,
                        task_ids: np.ndarray) -> None:
    """Slots without a stored context restart from their last observation alone (lightzero's cache miss):
    one token at position 0, stored with size 1."""
    rows = task_rows(task_ids)
    latent = encode(world_model.tokenizer.encoder, last_obs, rows)                         # (n, 1, D)
    n, L = latent.shape[0], world_model.config.num_layers
    H = world_model.num_heads
    kv_buf = latent.new_zeros(2, L, n, H, 1, world_model.embed_dim // H)
    x = latent + world_model.pos_emb.weight[0]
    _token_pass(world_model, x, kv_buf, 0, torch.ones(n, 1, dtype=torch.bool, device=x.device), rows)
    cache.root.store(slots, kv_buf, offsets=np.zeros(n, dtype=np.int64), sizes=np.ones(n, dtype=np.int64))
    cache.root_valid[slots] = True


@torch.no_grad()
def initial_inference(world_model: torch.nn.Module, obs: Tensor, task_ids: Sequence[int], cache: InferenceCache,
                      slots: np.ndarray, *, last_obs: Optional[Tensor] = None, last_actions: Optional[Tensor] = None,
                      first_step: Optional[np.ndarray] = None) -> InferenceOutput:
    """Root inference for a mixed batch of env slots; stores each slot's new context in ``cache.root``.

    ``obs``: (B, *obs) current observations (vector observations zero-padded to the widest task's);
    ``task_ids``: (B,) task of each row, contiguous per task; ``slots``: (B,) ``cache.slots(...)`` of the rows;
    ``last_obs`` / ``last_actions``: the previous step's observations and actions ((B,) discrete, (B, a_max)
    continuous), read for rows that are not ``first_step`` (True: the episode starts, no context; lightzero
    decides this per task: every last action -1). Returns the roots' latents, policy and value logits.
    """
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
        _fill_missing_roots(world_model, cache, slots[missing], last_obs.index_select(0, index), task_ids[missing])

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
        x = _action_tokens(world_model, actions, rows) + world_model.pos_emb(positions)[:, None]
        _token_pass(world_model, x, kv_buf, W, act_valid, rows)
    obs_positions = torch.from_numpy(np.where(continuing, longest + 1, 0)).to(device)
    out = _token_pass(world_model, latent + world_model.pos_emb(obs_positions)[:, None], kv_buf, W + 1,
                      key_valid, rows)

    total = np.where(continuing, longest + 2, 1)                                      # tokens after this step
    offsets, new_sizes, trimmed = _window(total, np.where(continuing, W - longest, W + 1), C)
    cache.root.store(slots, kv_buf, offsets=offsets, sizes=new_sizes,
                     correction=_position_correction(world_model), corrected=trimmed)
    cache.root_valid[slots] = True
    return InferenceOutput(latent=latent, policy_logits=_head(world_model.head_policy, out, rows),
                           value=_head(world_model.head_value, out, rows))


@torch.no_grad()
def recurrent_inference(world_model: torch.nn.Module, store: KVStore, parents: np.ndarray, children: np.ndarray,
                        actions: Tensor, task_ids: Union[Sequence[int], TaskRows]) -> InferenceOutput:
    """One search step for every leaf: the action token and the predicted next latent appended to each parent's
    context (entries ``parents`` of ``store``); the new contexts are stored at ``children``.

    ``actions``: (B,) discrete or (B, a_max) continuous (zero-padded per task). Returns the next latents,
    rewards, policy and value logits."""
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
        + world_model.pos_emb(positions)[:, None]
    act_out = _token_pass(world_model, x, kv_buf, W, key_valid, rows)
    reward = _head(world_model.head_rewards, act_out, rows)
    latent = _head(world_model.head_observations, act_out, rows)[:, None]            # (B, 1, D)
    obs_out = _token_pass(world_model, latent + world_model.pos_emb(positions + 1)[:, None], kv_buf, W + 1,
                          key_valid, rows)

    offsets, new_sizes, trimmed = _window(sizes + 2, W - sizes, C)
    store.store(children, kv_buf, offsets=offsets, sizes=new_sizes,
                correction=_position_correction(world_model), corrected=trimmed)
    return InferenceOutput(latent=latent, policy_logits=_head(world_model.head_policy, obs_out, rows),
                           value=_head(world_model.head_value, obs_out, rows), reward=reward)
