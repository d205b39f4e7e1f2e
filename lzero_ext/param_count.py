"""Parameter counts of a ScaleZero model by part: ``stored`` and ``active`` per token.

``python -m lzero_ext.param_count --preset atari8`` prints the table of a zoo preset
(``--suite atari|dmc|jericho|minatar``, ``--dense``, ``--dps-stage S``); the model is built on the CPU.

Parts (``PARTS``): ``encoder`` (observation encoder and its latent norm), ``embeddings`` (action,
position, task), the transformer's ``attention`` (Q/K/V/output projections), ``norms`` (its
LayerNorms), ``ffn`` (dense FFN), ``router`` (MoE gates), ``routed_experts``, ``shared_experts``,
``heads`` and, with DPS, ``adapters`` (every ``lora_`` parameter).

Active per token:

* a routed expert counts ``top_k / E`` of its parameters (a token runs top_k of E equal experts);
* a module with one copy per task (``TaskSwitch``) counts ``1 / copies`` (a token runs its own
  task's copy; for copies of different sizes, e.g. vector encoders, this is the average over tasks);
* a DPS adapter counts when its stage is on: at stage ``s`` the adapters ``1..s`` and the scales
  ``a_0..a_s``; later adapters count 0 (they exist, in the optimizer, but do not run);
* everything else counts fully, embedding tables included.
"""
import argparse
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

from torch import nn

from lzero_ext.entry.suite import ZOO_MODULES, zoo_module
from lzero_ext.model.moe import MoEFeedForward
from lzero_ext.model.task_routing import TaskSwitch

PARTS = ('encoder', 'embeddings', 'attention', 'norms', 'ffn', 'router', 'routed_experts', 'shared_experts', 'heads',
         'adapters')
TRANSFORMER_PARTS = ('attention', 'norms', 'ffn', 'router', 'routed_experts', 'shared_experts')
SUITES = frozenset(ZOO_MODULES)


def _adapter_fraction(layer: nn.Module, name: str) -> float:
    """1 if the parameter ``name`` (``lora_A.{j-1}``, ``lora_B.{j-1}`` of adapter j, or ``lora_scales.{j}``) of
    a staged LoRA layer runs at the layer's stage, else 0."""
    stage = int(layer.stage)
    kind, index = name.rsplit('.', 1)
    if kind == 'lora_scales':
        return float(1 <= stage and int(index) <= stage)
    return float(int(index) < stage)


def _walk(module: nn.Module, prefix: str = '', fraction: float = 1.0, role: Optional[str] = None,
          seen: Optional[Set[int]] = None) -> Iterator[Tuple[str, int, float, Optional[str]]]:
    """Yield ``(name, numel, active fraction, role)`` once per parameter; ``role`` marks MoE sub-modules."""
    seen = set() if seen is None else seen
    for name, param in module.named_parameters(recurse=False):
        if id(param) not in seen:
            seen.add(id(param))
            yield prefix + name, param.numel(), fraction, role
    for name, child in module.named_children():
        child_fraction, child_role = fraction, role
        if isinstance(module, TaskSwitch):
            child_fraction = fraction / len(module.per_task)
        if isinstance(module, MoEFeedForward):
            child_role = {'experts': 'routed_experts', 'shared_experts': 'shared_experts', 'gate': 'router'}[name]
            if name == 'experts':
                child_fraction = fraction * module.top_k / module.num_experts
        if name.startswith('lora_'):  # a staged LoRA layer's ParameterList: counted by stage
            for index, param in child.named_parameters():
                if id(param) not in seen:
                    seen.add(id(param))
                    full = f'{name}.{index}'
                    yield prefix + full, param.numel(), child_fraction * _adapter_fraction(module, full), child_role
            continue
        yield from _walk(child, f'{prefix}{name}.', child_fraction, child_role, seen)


def _part(name: str, role: Optional[str]) -> str:
    if '.lora_' in name or name.startswith('lora_'):
        return 'adapters'
    if role is not None:
        return role
    if name.startswith('tokenizer.'):
        return 'encoder'
    if name.startswith('transformer.'):
        if '.attn.' in name:
            return 'attention'
        if '.mlp.' in name:
            return 'ffn'
        return 'norms'  # ln1, ln2 of every block, ln_f
    if name.startswith('head_'):
        return 'heads'
    return 'embeddings'


def count_parameters(model: nn.Module) -> Dict[str, Dict[str, float]]:
    """``{part: {'total': int, 'active': float}}`` for each of ``PARTS``, ``'transformer'`` and ``'all'``.

    ``model`` is a ``ScaleZeroModel`` or a ``MultiTaskWorldModel``.

    Example:
        >>> from lzero_ext.model.scalezero_model import ScaleZeroModel
        >>> cfg = dict(num_tasks=2, obs_type='vector', embed_dim=32, num_heads=2, num_layers=2, env_num=1,
        ...            max_blocks=4, max_tokens=8, context_length=4, moe=dict(enabled=True, num_experts=4))
        >>> counts = count_parameters(ScaleZeroModel(observation_shape=5, action_space_size=3, world_model_cfg=cfg))
        >>> counts['routed_experts']['active'] == counts['routed_experts']['total'] / 4
        True
    """
    world_model = getattr(model, 'world_model', model)
    counts = {part: {'total': 0, 'active': 0.0} for part in PARTS}
    for name, numel, fraction, role in _walk(world_model):
        entry = counts[_part(name, role)]
        entry['total'] += numel
        entry['active'] += numel * fraction
    for group, parts in (('transformer', TRANSFORMER_PARTS), ('all', PARTS)):
        counts[group] = {key: sum(counts[part][key] for part in parts) for key in ('total', 'active')}
    return counts


def format_parameter_table(counts: Dict[str, Dict[str, float]]) -> str:
    """Fixed-width table of ``count_parameters`` output (millions of parameters)."""
    lines = [f"{'part':<18}{'stored (M)':>12}{'active/token (M)':>18}"]
    for part in (*PARTS[:2], 'transformer', *TRANSFORMER_PARTS, *PARTS[-2:], 'all'):
        indent = '  ' if part in TRANSFORMER_PARTS else ''
        lines.append(f"{indent + part:<18}{counts[part]['total'] / 1e6:>12.3f}{counts[part]['active'] / 1e6:>18.3f}")
    return '\n'.join(lines)


def print_parameter_table(model: nn.Module) -> Dict[str, Dict[str, float]]:
    """Print the parameter table of ``model`` and return the counts."""
    counts = count_parameters(model)
    print(format_parameter_table(counts))
    return counts


def preset_model(suite: str, preset: str, *, dense: bool = False, dps_stage: Optional[int] = None) -> nn.Module:
    """The model a zoo preset builds (CPU), with DPS adapters at ``dps_stage`` when given."""
    from lzero_ext.entry.configs import compile_task_configs
    from lzero_ext.model.scalezero_model import SampledScaleZeroModel, ScaleZeroModel

    if suite not in SUITES:
        raise ValueError(f"suite must be one of {sorted(SUITES)}, got {suite!r}")
    configs = zoo_module(suite).build_configs(preset, dense=dense, cuda=False, exp_name='/tmp/scalezero_param_count')
    cfg = compile_task_configs(configs[:1], seed=0, exp_name=configs[0][0].exp_name, save_cfg=False)[0].policy
    model_cls = {'scalezero': ScaleZeroModel, 'sampled_scalezero': SampledScaleZeroModel}[cfg.type]
    model = model_cls(**{k: v for k, v in cfg.model.items() if k not in ('type', 'import_names')})
    if dps_stage is not None:
        from lzero_ext.dps import LORA_KEYS, apply_staged_lora, resolve_dps_config, set_dps_stage

        dps = resolve_dps_config(dict(cfg.dps, enabled=True))
        apply_staged_lora(model, **{key: dps[key] for key in LORA_KEYS})
        set_dps_stage(model, dps_stage)
    return model


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--suite', choices=sorted(SUITES), default='atari')
    parser.add_argument('--preset', default='atari8', help="a preset of the suite's zoo config (e.g. atari8, dmc18)")
    parser.add_argument('--dense', action='store_true', help='dense FFN instead of MoE')
    parser.add_argument('--dps-stage', type=int, help='add the DPS adapters and count them at this stage')
    args = parser.parse_args(argv)
    presets: List[str] = sorted(zoo_module(args.suite).PRESETS)
    if args.preset not in presets:
        parser.error(f"unknown {args.suite} preset {args.preset!r}; choose from {presets}")
    model = preset_model(args.suite, args.preset, dense=args.dense, dps_stage=args.dps_stage)
    print(f"{args.suite} preset {args.preset}{' (dense)' if args.dense else ''}"
          f"{'' if args.dps_stage is None else f', DPS stage {args.dps_stage}'}:")
    print_parameter_table(model)


if __name__ == '__main__':
    main()
