"""Staged LoRA for Dynamic Parameter Scaling (DPS, docs/dps.md), loralib style.

A wrapped linear at stage ``s`` computes ``y = x W_eff^T + b`` with

    W_eff = W0                                                        (s = 0: the plain base layer)
    W_eff = a_0 W0 + sum_{j=1..s} a_j * (lora_alpha / r) * B_j A_j    (s >= 1)

where ``a_j = clamp(lora_scales[j], 0.8, 1.2)`` are learnable scalars initialised to 1. ``a_0``
(the formula's alpha_0) is learnable too, but only from stage 1 on: at stage 0 the base weight is
trained directly and a gain on it would be redundant. The bias is never scaled. ``A_j ~ N(0, 0.01^2)``
and ``B_j = 0``, so entering a stage changes no output.

Stage rules (``set_dps_stage``): stage 0 trains the whole model, adapters frozen and unused.
Stage ``s >= 1`` freezes the whole transformer (base weights, norms, router gates, shared experts,
earlier adapters) except adapter ``s`` and the active scales ``a_0..a_s``; the modules outside the
transformer (encoder, embeddings, heads) are not touched and keep training.

Every adapter is created up front by ``apply_staged_lora``, so an optimizer built afterwards over
``model.parameters()`` holds them all (docs/architecture.md, "Pitfalls of the authors' code avoided").
Frozen parameters get ``grad=None`` (with ``zero_grad(set_to_none=True)``) and AdamW skips them, weight decay included.
All adapter parameters carry the ``lora_`` prefix: ``lora_A.{j-1}``, ``lora_B.{j-1}`` (adapter j),
``lora_scales.{j}`` (a_j, 0-dim, so ``p.dim() < 2`` rules keep them out of weight decay).
"""
from typing import Dict, FrozenSet, Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lzero.model.unizero_world_models.transformer import Transformer

from lzero_ext.model.moe import MoEFeedForward

LORA_PREFIX = 'lora_'
SCALE_MIN, SCALE_MAX = 0.8, 1.2  # "kept near 1 (init 1, range +-0.2)"
# 'attn': attention query/key/value/proj. 'ffn': routed-expert linears of MoE blocks, or the two
# linears of a dense block's MLP. Router gates and shared experts are never wrapped.
LORA_TARGETS: FrozenSet[str] = frozenset({'attn', 'ffn'})
_ATTN_LINEARS = ('query', 'key', 'value', 'proj')


class StagedLoRALinear(nn.Linear):
    """``nn.Linear`` with ``num_stages - 1`` LoRA adapters switched on one stage at a time.

    The base keeps the names ``weight``/``bias``; stage ``s`` uses the base plus adapters
    ``1..s``. The layer owns its stage: ``set_stage`` sets ``requires_grad`` of its own parameters
    (stage 0: base only; stage s: adapter s and scales a_0..a_s). ``merge()`` caches ``W_eff`` for
    fast eval-mode inference without touching ``weight`` (so ``unmerge()`` is exact and a
    ``state_dict`` never holds merged weights); ``train(True)``, ``set_stage`` and loading a
    state dict drop the cache.

    Example:
        >>> base = nn.Linear(8, 4)
        >>> layer = StagedLoRALinear.from_linear(base, num_stages=3, rank=2, lora_alpha=4.0)
        >>> x = torch.randn(5, 8)
        >>> layer.set_stage(1)
        >>> torch.allclose(layer(x), base(x), atol=1e-6)  # B_1 = 0: the new adapter changes nothing
        True
        >>> [n for n, p in layer.named_parameters() if p.requires_grad]
        ['lora_A.0', 'lora_B.0', 'lora_scales.0', 'lora_scales.1']
        >>> _ = layer.eval(); layer.merge(); layer.is_merged
        True
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, num_stages: int, rank: int,
                 lora_alpha: float, lora_dropout: float = 0.0, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if num_stages < 1:
            raise ValueError(f"num_stages must be >= 1, got {num_stages}")
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if not 0.0 <= lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {lora_dropout}")
        self.num_stages, self.rank, self.lora_alpha = num_stages, rank, float(lora_alpha)
        self.scaling = self.lora_alpha / rank
        factory = dict(device=self.weight.device, dtype=self.weight.dtype)
        self.lora_A = nn.ParameterList(
            nn.Parameter(torch.empty(rank, in_features, **factory)) for _ in range(num_stages - 1))
        self.lora_B = nn.ParameterList(
            nn.Parameter(torch.empty(out_features, rank, **factory)) for _ in range(num_stages - 1))
        self.lora_scales = nn.ParameterList(nn.Parameter(torch.empty((), **factory)) for _ in range(num_stages))
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        self.register_buffer('_merged_weight', None, persistent=False)
        self._merged_from: List[Tuple[Tensor, int]] = []  # (parameter, its _version) at merge() time
        self.stage = 0
        self.reset_lora_parameters()
        self.set_stage(0)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **lora_kwargs) -> 'StagedLoRALinear':
        """Wrap ``linear``: the new layer *shares* its ``weight``/``bias`` Parameter objects (no
        copy, so optimizer state keyed by them stays valid) and takes its device, dtype and mode."""
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype, **lora_kwargs)
        layer.weight, layer.bias = linear.weight, linear.bias
        layer.set_stage(0)
        return layer.train(linear.training)

    @torch.no_grad()
    def reset_lora_parameters(self) -> None:
        """A_j ~ N(0, 0.01^2), B_j = 0, a_j = 1."""
        for a in self.lora_A:
            nn.init.normal_(a, mean=0.0, std=0.01)
        for b in self.lora_B:
            nn.init.zeros_(b)
        for scale in self.lora_scales:
            scale.fill_(1.0)

    # ------------------------------------------------------------------ stage
    def set_stage(self, stage: int) -> None:
        """Activate adapters ``1..stage`` and set ``requires_grad`` of this layer's parameters."""
        if not 0 <= stage < self.num_stages:
            raise ValueError(f"stage must lie in [0, {self.num_stages - 1}] (num_stages={self.num_stages}), "
                             f"got {stage}")
        self.unmerge()
        self.stage = int(stage)
        for p in (self.weight, self.bias):
            if p is not None:
                p.requires_grad_(stage == 0)
        for j, (a, b) in enumerate(zip(self.lora_A, self.lora_B), start=1):
            a.requires_grad_(j == stage)
            b.requires_grad_(j == stage)
        for j, scale in enumerate(self.lora_scales):
            scale.requires_grad_(1 <= stage and j <= stage)

    def effective_scales(self) -> Tensor:
        """``(num_stages,)`` clamped scales a_0..a_{S-1} (a_j for j > stage are unused)."""
        return torch.stack(list(self.lora_scales)).clamp(SCALE_MIN, SCALE_MAX)

    def _adapter_factors(self, scales: Tensor) -> Tuple[Tensor, Tensor]:
        """Active adapters stacked: A ``(s*r, in)`` and scaled B ``(out, s*r)``, so delta W = B @ A."""
        a = torch.cat([self.lora_A[j] for j in range(self.stage)], dim=0)                 # (s*r, in)
        b = torch.cat([self.lora_B[j] * (scales[j + 1] * self.scaling)
                       for j in range(self.stage)], dim=1)                                 # (out, s*r)
        return a, b

    # ------------------------------------------------------------------ forward / merge
    def forward(self, x: Tensor) -> Tensor:
        if self.stage == 0:
            return F.linear(x, self.weight, self.bias)                                     # exactly nn.Linear
        merged = self.inference_weight()
        if merged is not None:
            return F.linear(x, merged, self.bias)
        scales = self.effective_scales()                                                   # (S,)
        out = F.linear(x, self.weight) * scales[0]                                         # (..., out)
        if self.bias is not None:
            out = out + self.bias
        a, b = self._adapter_factors(scales)
        return out + F.linear(F.linear(self.lora_dropout(x), a), b)                        # (..., s*r) -> (..., out)

    @property
    def is_merged(self) -> bool:
        return self._merged_weight is not None

    @property
    def merge_is_current(self) -> bool:
        """Merged, and no parameter changed in place since (checked by autograd version counters), so a
        cache can never serve stale weights, e.g. after an optimizer step taken in eval mode."""
        return self._merged_weight is not None and all(p._version == v for p, v in self._merged_from)

    def inference_weight(self) -> Optional[Tensor]:
        """A weight ``W`` with ``F.linear(x, W, self.bias) == self(x)``, or None (train mode, or eval mode
        with autograd and no current merge). Stage 0: ``weight``. Eval mode without autograd (MCTS
        collection and evaluation): the merged weight, (re)built here whenever a parameter changed, so
        inference takes one matmul per layer and the MoE layer's lean path can skip module calls."""
        if self.stage == 0:
            return self.weight
        if self.training:
            return None
        if not self.merge_is_current:
            if torch.is_grad_enabled():  # a merge is built without autograd: it would cut the adapters' gradient
                return None
            self.merge()
        return self._merged_weight

    @torch.no_grad()
    def merge(self) -> None:
        """Cache ``W_eff`` so eval-mode forwards take one matmul (eval forwards without autograd merge by
        themselves). A no-op at stage 0. Eval mode only: ``train(True)`` drops the cache."""
        if self.training:
            raise RuntimeError("merge() needs eval mode (call .eval() first); train(True) unmerges")
        if self.stage > 0:
            scales = self.effective_scales()
            a, b = self._adapter_factors(scales)
            self._merged_weight = self.weight * scales[0] + b @ a                          # (out, in)
            self._merged_from = [(p, p._version) for p in self.parameters()]

    def unmerge(self) -> None:
        """Drop the merged cache; ``weight`` was never modified, so this is exact."""
        self._merged_weight = None
        self._merged_from = []

    def train(self, mode: bool = True) -> 'StagedLoRALinear':
        if mode:
            self.unmerge()
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self.unmerge()
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, num_stages={self.num_stages}, rank={self.rank}, "
                f"lora_alpha={self.lora_alpha}, stage={self.stage}")


# ---------------------------------------------------------------------- model-level functions
def is_lora_name(name: str) -> bool:
    """True for parameter / state-dict names of adapter parameters (any ``lora_`` component)."""
    return any(part.startswith(LORA_PREFIX) for part in name.split('.'))


def find_transformer(model: nn.Module) -> Tuple[str, Transformer]:
    """``(name in model, transformer)`` of the single lightzero ``Transformer`` (ScaleZeroTransformer)
    in a ScaleZeroModel, a MultiTaskWorldModel or the transformer itself (name ``''``)."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, Transformer)]
    if len(found) != 1:
        raise ValueError(f"expected exactly one transformer in {type(model).__name__}, found {len(found)}")
    return found[0]


def _ffn_linears(mlp: nn.Module) -> Iterable[Tuple[str, nn.Linear]]:
    """(name relative to the block's ``mlp``, linear) of the FFN linears LoRA may wrap."""
    if isinstance(mlp, MoEFeedForward):  # routed experts only: never ``gate``, never ``shared_experts``
        for e, expert in enumerate(mlp.experts):
            for name, m in expert.named_modules():
                if isinstance(m, nn.Linear):
                    yield f'experts.{e}.{name}', m
    elif isinstance(mlp, nn.Sequential):  # lightzero's dense MLP: Linear, GELU, Linear, Dropout
        for name, m in mlp.named_children():
            if isinstance(m, nn.Linear):
                yield name, m
    else:
        raise TypeError(f"unsupported FFN type {type(mlp).__name__}")


def apply_staged_lora(model: nn.Module, *, num_stages: int, rank: int, alpha: float, dropout: float = 0.0,
                      targets: Iterable[str] = ('attn', 'ffn'), include_encoder: bool = False) -> List[str]:
    """Replace, in place, the transformer's target linears by ``StagedLoRALinear`` (stage 0).

    ``model``: a ScaleZeroModel, MultiTaskWorldModel or ScaleZeroTransformer. ``targets``: subset
    of ``LORA_TARGETS``. Returns the wrapped module names (as in ``model.named_modules()``). Call
    it before building the optimizer, and on the target model too (its ``state_dict`` keys must match).

    Example:
        >>> from easydict import EasyDict
        >>> from lzero_ext.model.transformer import ScaleZeroTransformer
        >>> cfg = EasyDict(embed_dim=16, num_heads=2, num_layers=1, gru_gating=False, embed_pdrop=0.,
        ...                attn_pdrop=0., resid_pdrop=0., max_tokens=4, rotary_emb=False)
        >>> net = ScaleZeroTransformer(cfg, moe=dict(enabled=True, num_experts=2, top_k=1, num_shared_experts=1,
        ...                                        expert_type='swiglu', shared_expert_type='gelu', hidden_dim=None))
        >>> names = apply_staged_lora(net, num_stages=3, rank=4, alpha=8.0)
        >>> len(names), names[0], names[-1]
        (10, 'blocks.0.attn.query', 'blocks.0.mlp.experts.1.w2')
        >>> set_dps_stage(net, 1)  # adapter 1 (A and B) + scales a_0, a_1 of the 10 layers
        2452
    """
    unknown = set(targets) - LORA_TARGETS
    if unknown or not set(targets):
        raise ValueError(f"targets must be a non-empty subset of {sorted(LORA_TARGETS)}, got {sorted(targets)}")
    if include_encoder:
        raise NotImplementedError("encoder LoRA is not implemented (optional and off in the paper); "
                                  "the encoder keeps training in every stage")
    prefix, transformer = find_transformer(model)
    if any(isinstance(m, StagedLoRALinear) for m in transformer.modules()):
        raise ValueError("apply_staged_lora was already applied to this model")
    lora_kwargs = dict(num_stages=num_stages, rank=rank, lora_alpha=alpha, lora_dropout=dropout)
    wrapped: List[str] = []
    for i, block in enumerate(transformer.blocks):
        chosen: List[Tuple[str, nn.Linear]] = []
        if 'attn' in targets:
            chosen += [(f'attn.{name}', getattr(block.attn, name)) for name in _ATTN_LINEARS]
        if 'ffn' in targets:
            chosen += [(f'mlp.{name}', m) for name, m in _ffn_linears(block.mlp)]
        for name, linear in chosen:
            parent_name, _, child = name.rpartition('.')
            setattr(block.get_submodule(parent_name), child, StagedLoRALinear.from_linear(linear, **lora_kwargs))
            wrapped.append(f"{prefix + '.' if prefix else ''}blocks.{i}.{name}")
    return wrapped


def staged_lora_layers(model: nn.Module) -> Dict[str, StagedLoRALinear]:
    """Every ``StagedLoRALinear`` of ``model`` by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, StagedLoRALinear)}


def _layers_or_raise(model: nn.Module) -> List[StagedLoRALinear]:
    layers = list(staged_lora_layers(model).values())
    if not layers:
        raise ValueError("model has no StagedLoRALinear layers: call apply_staged_lora first")
    return layers


def set_dps_stage(model: nn.Module, stage: int) -> int:
    """Enter DPS ``stage`` (see the module docstring); returns the trainable parameter count of ``model``.

    Stateless: the result depends on ``stage`` only, so resuming at stage 3 is ``set_dps_stage(m, 3)``.
    Modules outside the transformer keep their ``requires_grad``.
    """
    _, transformer = find_transformer(model)
    layers = _layers_or_raise(transformer)
    num_stages = layers[0].num_stages
    if not 0 <= stage < num_stages:
        raise ValueError(f"DPS stage must lie in [0, {num_stages - 1}] (num_stages={num_stages}), got {stage}")
    for name, p in transformer.named_parameters():
        if not is_lora_name(name):
            p.requires_grad_(stage == 0)
    for layer in layers:
        layer.set_stage(stage)
    return trainable_parameter_count(model)


def get_dps_stage(model: nn.Module) -> int:
    """The stage of ``model``'s staged LoRA layers (they must agree)."""
    stages = {layer.stage for layer in _layers_or_raise(model)}
    if len(stages) != 1:
        raise RuntimeError(f"staged LoRA layers disagree on the stage: {sorted(stages)}")
    return stages.pop()


def lora_parameters(model: nn.Module) -> List[nn.Parameter]:
    """All adapter parameters (``lora_`` names): A, B and scales, active or not."""
    return [p for name, p in model.named_parameters() if is_lora_name(name)]


def lora_state_dict(model: nn.Module) -> Dict[str, Tensor]:
    """The adapter entries of ``model.state_dict()`` ("save adapters only")."""
    return {name: t for name, t in model.state_dict().items() if is_lora_name(name)}


def trainable_parameter_count(model: nn.Module) -> int:
    """Number of parameter elements with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def adapter_scales(model: nn.Module, *, per_layer: bool = False) -> Dict[str, float]:
    """Effective (clamped) scales for logging. Default: ``alpha{j}_mean/min/max`` over layers for
    every j in 0..S-1 (same keys at every stage, as rank-synchronised logging needs);
    ``per_layer=True``: ``{'<layer name>.alpha{j}': value}``."""
    layers = staged_lora_layers(model)
    if not layers:
        raise ValueError("model has no StagedLoRALinear layers: call apply_staged_lora first")
    scales = {name: layer.effective_scales().float().cpu() for name, layer in layers.items()}
    if per_layer:
        return {f'{name}.alpha{j}': float(v) for name, s in scales.items() for j, v in enumerate(s)}
    table = torch.stack(list(scales.values()))                                             # (layers, S)
    out: Dict[str, float] = {}
    for j in range(table.shape[1]):
        out.update({f'alpha{j}_mean': float(table[:, j].mean()), f'alpha{j}_min': float(table[:, j].min()),
                    f'alpha{j}_max': float(table[:, j].max())})
    return out


@torch.no_grad()
def clamp_adapter_scales_(model: nn.Module) -> None:
    """Project the raw scales into [0.8, 1.2] in place. The forward clamp has zero gradient outside
    the range, so a scale an optimizer step pushed past it would stay stuck; call after ``step()``."""
    for layer in staged_lora_layers(model).values():
        for scale in layer.lora_scales:
            scale.clamp_(SCALE_MIN, SCALE_MAX)


def merge_lora(model: nn.Module) -> None:
    """``merge()`` every staged LoRA layer (model must be in eval mode; ``model.train()`` unmerges)."""
    for layer in staged_lora_layers(model).values():
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    for layer in staged_lora_layers(model).values():
        layer.unmerge()
