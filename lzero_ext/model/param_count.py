"""Parameter counts of a ScaleZero model by part: stored (``total``) and ``active`` per token.

Parts: ``encoder`` (tokenizer), ``embeddings`` (action, position, task), ``backbone`` (attention,
norms, dense FFN, MoE gates and shared experts), ``experts`` (routed MoE experts), ``heads``.

Active per token: a routed expert counts ``top_k / E`` of its parameters (a token runs top_k of
E equal experts); a module with one copy per task (``TaskSwitch``) counts ``1 / copies`` (a
token runs its own task's copy; for copies of different sizes, e.g. vector encoders, this is the
average over tasks). Everything else counts fully, embedding tables included.
"""
from typing import Dict, Iterator, Optional, Set, Tuple

from torch import nn

from lzero_ext.model.moe import MoEFeedForward
from lzero_ext.model.world_model import TaskSwitch

PARTS = ('encoder', 'embeddings', 'backbone', 'experts', 'heads')


def _walk(module: nn.Module, prefix: str = '', fraction: float = 1.0, routed: bool = False,
          seen: Optional[Set[int]] = None) -> Iterator[Tuple[str, int, float, bool]]:
    """Yield ``(name, numel, active fraction, is routed expert)`` once per parameter."""
    seen = set() if seen is None else seen
    for name, param in module.named_parameters(recurse=False):
        if id(param) not in seen:
            seen.add(id(param))
            yield prefix + name, param.numel(), fraction, routed
    for child_name, child in module.named_children():
        child_fraction, child_routed = fraction, routed
        if isinstance(module, TaskSwitch):
            child_fraction = fraction / len(module.per_task)
        if isinstance(module, MoEFeedForward) and child_name == 'experts':
            child_fraction, child_routed = fraction * module.top_k / module.num_experts, True
        yield from _walk(child, f'{prefix}{child_name}.', child_fraction, child_routed, seen)


def _part(name: str, routed: bool) -> str:
    if routed:
        return 'experts'
    if name.startswith('tokenizer.'):
        return 'encoder'
    if name.startswith('transformer.'):
        return 'backbone'
    if name.startswith('head_'):
        return 'heads'
    return 'embeddings'


def count_parameters(model: nn.Module) -> Dict[str, Dict[str, float]]:
    """``{part: {'total': int, 'active': float}}`` for each of ``PARTS`` and ``'all'``.

    ``model`` is a ``ScaleZeroModel`` or a ``MultiTaskWorldModel``.

    Example:
        >>> from lzero_ext.model.scalezero_model import ScaleZeroModel
        >>> cfg = dict(num_tasks=2, obs_type='vector', embed_dim=32, num_heads=2, num_layers=2, env_num=1,
        ...            max_blocks=4, max_tokens=8, context_length=4, moe=dict(enabled=True, num_experts=4))
        >>> counts = count_parameters(ScaleZeroModel(observation_shape=5, action_space_size=3, world_model_cfg=cfg))
        >>> counts['experts']['active'] == counts['experts']['total'] / 4
        True
    """
    world_model = getattr(model, 'world_model', model)
    counts = {part: {'total': 0, 'active': 0.0} for part in PARTS}
    for name, numel, fraction, routed in _walk(world_model):
        entry = counts[_part(name, routed)]
        entry['total'] += numel
        entry['active'] += numel * fraction
    counts['all'] = {key: sum(counts[part][key] for part in PARTS) for key in ('total', 'active')}
    return counts


def format_parameter_table(counts: Dict[str, Dict[str, float]]) -> str:
    """Fixed-width table of ``count_parameters`` output (millions of parameters)."""
    lines = [f"{'part':<12}{'total (M)':>12}{'active/token (M)':>18}"]
    for part in (*PARTS, 'all'):
        lines.append(f"{part:<12}{counts[part]['total'] / 1e6:>12.3f}{counts[part]['active'] / 1e6:>18.3f}")
    return '\n'.join(lines)


def print_parameter_table(model: nn.Module) -> Dict[str, Dict[str, float]]:
    """Print the parameter table of ``model`` and return the counts."""
    counts = count_parameters(model)
    print(format_parameter_table(counts))
    return counts
