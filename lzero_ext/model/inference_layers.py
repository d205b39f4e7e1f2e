"""A world model's inference layers as plain functions over its current weights, looked up once per call.

A one-token transformer pass on a CPU costs mostly Python, not arithmetic: module calls, attribute lookups
and the checks that keep the cached weight copies current (the fused query/key/value matrix, the MoE's
stacked experts, the per-task heads stacked into batched matmuls). A 16-simulation search makes about a
hundred such passes. :meth:`InferenceLayers.of` does the lookups and checks once, at the start of an initial
inference or of a search, and returns every layer as a function of its input; the search's token passes
then call those directly (``lzero_ext.model.cached_inference``).

The functions hold the tensors they were built from, so a snapshot must not outlive a weight update: take
one per inference call or per search (nothing inside a search changes a weight). A layer that must run as a
module (a DPS adapter in train mode, a hooked linear, an unknown layer type) stays a module call, so the
results are those of the modules themselves.

Example:
    >>> from lzero_ext.model.scalezero_model import ScaleZeroModel
    >>> cfg = dict(num_tasks=2, obs_type='vector', embed_dim=16, num_heads=2, num_layers=1, env_num=2,
    ...            max_blocks=4, max_tokens=8, context_length=8)
    >>> wm = ScaleZeroModel(observation_shape=3, action_space_size=2, world_model_cfg=cfg).world_model.eval()
    >>> layers = InferenceLayers.of(wm)
    >>> len(layers.blocks), layers.head('value', torch.zeros(3, 1, 16), TaskRows.from_task_ids([0, 1, 1])).shape
    (1, torch.Size([3, 101]))
"""
import functools
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lzero_ext.model.moe import inference_weight
from lzero_ext.model.sequence_forward import route
from lzero_ext.model.task_routing import TaskRows, TaskSwitch

Fn = Callable[[Tensor], Tensor]
Layer = Callable[[Tensor, Optional[Tensor]], Tensor]  # (h (T, R, in), task index (T,) or None: all) -> (T, R, out)
HEADS = ('policy', 'value', 'rewards', 'observations')


# ---------------------------------------------------------------------------------------------- single layers
def linear_fn(module: nn.Module) -> Fn:
    """A linear layer as ``F.linear`` over its (merged) weight, or the module itself when it must be called."""
    weight = inference_weight(module) if isinstance(module, nn.Linear) else None
    if weight is None:
        return module
    bias = module.bias
    return lambda x: F.linear(x, weight, bias)


def layer_norm_fn(module: nn.Module) -> Fn:
    if type(module) is not nn.LayerNorm:
        return module
    shape, weight, bias, eps = module.normalized_shape, module.weight, module.bias, module.eps
    return lambda x: F.layer_norm(x, shape, weight, bias, eps)


def sequential_fn(module: nn.Module) -> Fn:
    """An ``nn.Sequential`` of linears, norms, GELUs and (inactive) dropouts as one function; any other module as is."""
    if type(module) is not nn.Sequential:
        return module
    fns: List[Fn] = []
    for layer in module:
        if isinstance(layer, nn.Linear):
            fns.append(linear_fn(layer))
        elif type(layer) is nn.LayerNorm:
            fns.append(layer_norm_fn(layer))
        elif type(layer) is nn.GELU:
            fns.append(functools.partial(F.gelu, approximate=layer.approximate))
        elif type(layer) is nn.Dropout and (layer.p == 0 or not layer.training):
            continue  # the identity in eval mode
        else:
            fns.append(layer)

    def run(x: Tensor) -> Tensor:
        for fn in fns:
            x = fn(x)
        return x
    return run


def fused_qkv(attn: nn.Module) -> Optional[Tuple[Tensor, Tensor]]:
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


def qkv_fn(attn: nn.Module) -> Fn:
    """``(B, 1, D) -> (B, 1, 3D)``: queries, keys and values side by side (one matmul when none is wrapped)."""
    fused = fused_qkv(attn)
    if fused is not None:
        weight, bias = fused
        return lambda x: F.linear(x, weight, bias)
    query, key, value = linear_fn(attn.query), linear_fn(attn.key), linear_fn(attn.value)
    return lambda x: torch.cat([query(x), key(x), value(x)], dim=-1)


@dataclass(frozen=True)
class BlockLayers:
    """One transformer block's inference layers (lightzero's ``Block`` without GRU gating; dropout off)."""

    ln1: Fn
    qkv: Fn     # (B, 1, D) -> (B, 1, 3D)
    proj: Fn
    ln2: Fn
    ffn: Fn     # the dense MLP or the MoE layer (``MoEFeedForward.inference_fn``)

    @classmethod
    def of(cls, block: nn.Module) -> 'BlockLayers':
        ffn = block.mlp.inference_fn() if getattr(block, 'is_moe', False) else sequential_fn(block.mlp)
        return cls(ln1=layer_norm_fn(block.ln1), qkv=qkv_fn(block.attn), proj=linear_fn(block.attn.proj),
                   ln2=layer_norm_fn(block.ln2), ffn=ffn)


# ---------------------------------------------------------------------------------------------- per-task heads
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


def stacked_head(switch: TaskSwitch) -> Optional[List[Layer]]:
    """Per-task heads of the form Linear -> GELU -> Linear [-> LayerNorm] as layers over stacked per-task weights
    (``(T, in, out)`` matrices, ``(T, 1, out)`` biases and gains), cached until a weight changes or a layer is
    replaced; None for any other head."""
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


def batched_head(layers: List[Layer], x: Tensor, rows: TaskRows, num_tasks: int) -> Tensor:
    """Every task's head on its rows at once, one batched matmul per layer: ``(B, 1, D) -> (B, out)``."""
    slots, tasks, count, longest = _task_layout(rows, num_tasks, x.device)
    h = x.new_zeros(count * longest, x.shape[-1]).index_copy_(0, slots, x[:, 0]).view(count, longest, -1)
    for layer in layers:
        h = layer(h, tasks)                                                           # (T, R, out)
    return h.reshape(count * longest, -1).index_select(0, slots)                      # (B, out)


def _head_output(out: object) -> Tensor:
    """A head module's output on ``(n, 1, D)`` -> ``(n, out)``; lightzero's ``ReparameterizationHead`` gives
    ``{'mu', 'sigma'}``, which lightzero concatenates."""
    if isinstance(out, dict):
        out = torch.cat([out['mu'], out['sigma']], dim=-1)
    return out[:, 0]


class HeadLayers:
    """A ``TaskSwitch`` of lightzero heads for one-token inference: ``(B, 1, D)`` rows of any tasks -> ``(B, out)``
    (per-task outputs zero-padded to the widest)."""

    def __init__(self, switch: TaskSwitch) -> None:
        self.switch = switch
        self.stacked = stacked_head(switch)
        self.per_task = [sequential_fn(head.head_module) for head in switch.per_task]

    def __call__(self, x: Tensor, rows: TaskRows) -> Tensor:
        switch = self.switch
        if len(rows.segments) > 1 and self.stacked is not None:
            return batched_head(self.stacked, x, rows, len(self.per_task))
        if switch.input_widths is None and (switch.shared or len(rows.segments) == 1):
            return _head_output(self.per_task[0 if switch.shared else rows.segments[0][0]](x))
        index = {id(head): i for i, head in enumerate(switch.per_task)}
        return route(switch, x, rows, lambda head, x_t: _head_output(self.per_task[index[id(head)]](x_t)))


# ---------------------------------------------------------------------------------------------- the snapshot
@dataclass(frozen=True)
class InferenceLayers:
    """Everything a one-token pass and the heads read, looked up once (see the module docstring)."""

    blocks: Tuple[BlockLayers, ...]
    ln_f: Fn
    pos_emb: Tensor                   # (max_tokens, D) absolute position embeddings
    task_embedding: Optional[Tensor]  # (num_tasks, D) added to every token ('add' option), or None
    heads: Dict[str, HeadLayers]

    @classmethod
    def of(cls, world_model: nn.Module) -> 'InferenceLayers':
        transformer = world_model.transformer
        add_task = world_model.task_embed_option == 'add'
        return cls(blocks=tuple(BlockLayers.of(block) for block in transformer.blocks),
                   ln_f=layer_norm_fn(transformer.ln_f), pos_emb=world_model.pos_emb.weight,
                   task_embedding=world_model.task_embedding.weight if add_task else None,
                   heads={name: HeadLayers(getattr(world_model, f'head_{name}')) for name in HEADS})

    def head(self, name: str, x: Tensor, rows: TaskRows) -> Tensor:
        """Head ``name`` (one of ``HEADS``) on one token per row: ``(B, 1, D) -> (B, out)``."""
        return self.heads[name](x, rows)

    def positions(self, positions: Tensor) -> Tensor:
        """``(B,)`` absolute positions -> ``(B, 1, D)`` embeddings."""
        return F.embedding(positions, self.pos_emb)[:, None]
