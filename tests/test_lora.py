"""Tests of staged LoRA (DPS, docs/dps.md): the layer's identities, which linears are
wrapped, the per-stage trainable set, optimizer behaviour at a switch, merge and checkpoints."""
import copy
import doctest
from typing import Dict

import numpy as np
import pytest
import torch
from ding.utils import deep_merge_dicts
from torch import nn

import lzero_ext.dps.lora as lora_module
from lzero_ext.dps import (
    LORA_KEYS, StagedLoRALinear, adapter_scales, apply_staged_lora, clamp_adapter_scales_, dps_preset,
    get_dps_stage, is_lora_name, lora_parameters, lora_state_dict, merge_lora, set_dps_stage,
    staged_lora_layers, trainable_parameter_count, unmerge_lora,
)
from lzero_ext.model.moe import MoEFeedForward
from lzero_ext.model.scalezero_model import ScaleZeroModel

B, S, SUPPORT = 2, 4, 101
TRANSFORMER = 'world_model.transformer.'
VARIANTS = {  # moe config of the three FFN variants
    'moe_swiglu': dict(enabled=True, num_experts=4, top_k=1),
    'moe_gelu': dict(enabled=True, num_experts=2, top_k=1, expert_type='gelu'),
    'dense': dict(enabled=False),
}


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """Tiny tensors: one thread is faster (on a busy 2-core machine the MoE's ``index_add_`` took
    ~0.1 s per call with 2 OpenMP threads, 3e-5 s with 1)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def small_model(moe: Dict, seed: int = 0) -> ScaleZeroModel:
    """Tiny 2-task vector-obs model with random weights everywhere (lightzero zero-inits last head layers)."""
    cfg = dict(num_tasks=2, obs_type='vector', observation_shape_list=[4, 6], embed_dim=16, num_heads=2,
               num_layers=2, env_num=B, max_blocks=5, max_tokens=10, context_length=10, num_unroll_steps=4,
               num_simulations=4, embed_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0, moe=moe)
    model = ScaleZeroModel(observation_shape=4, action_space_size=3, world_model_cfg=deep_merge_dicts(cfg, {}))
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.2)
    model.world_model.precompute_pos_emb_diff_kv()
    return model


def wrapped_model(moe: Dict = VARIANTS['moe_swiglu'], seed: int = 0) -> ScaleZeroModel:
    model = small_model(moe, seed)
    apply_staged_lora(model, num_stages=S, rank=4, alpha=8.0, dropout=0.0)
    return model


def loss_batch(T: int = 4, seed: int = 0) -> Dict[str, torch.Tensor]:
    """A UniZeroPolicy-style ``batch_for_gpt`` of task 0 (obs dim 4, 3 actions)."""
    g = torch.Generator().manual_seed(seed)
    one_hot = torch.zeros(B, T, SUPPORT)
    one_hot[..., SUPPORT // 2] = 1.0
    return dict(observations=torch.randn(B, T, 4, generator=g), actions=torch.randint(0, 3, (B, T), generator=g),
                timestep=torch.arange(T).repeat(B, 1), rewards=one_hot.clone(),
                mask_padding=torch.ones(B, T, dtype=torch.bool), ends=torch.zeros(B, T, dtype=torch.long),
                target_value=one_hot.clone(), target_policy=torch.softmax(torch.randn(B, T, 3, generator=g), -1))


def loss(model: ScaleZeroModel, seed: int = 0) -> torch.Tensor:
    wm = model.world_model
    return wm.compute_loss(loss_batch(seed=seed), wm.tokenizer, None, task_id=0).loss_total  # target: no_grad use


def outputs(model: ScaleZeroModel) -> torch.Tensor:
    """Eval-mode transformer output and collect-style initial inference (encoder + transformer + heads)."""
    model.eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        seq = model.world_model.transformer(torch.randn(B, 6, 16, generator=g))
        obs = torch.randn(B, 4, generator=g)
        out = model.initial_inference(torch.zeros(B, 4), [-1] * B, obs, np.zeros(B, dtype=int), task_id=0)
    return torch.cat([seq.flatten(), out.value.flatten(), out.policy_logits.flatten()])


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    """Max-abs-difference check (``torch.testing.assert_close`` imports torch.distributed.tensor: ~3 s)."""
    assert actual.shape == expected.shape
    diff = float((actual - expected).abs().max())
    assert diff <= atol, f"max abs difference {diff} > {atol}"


def snapshot(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# ---------------------------------------------------------------- the layer
@pytest.mark.parametrize('bias', [True, False])
def test_stage0_is_the_plain_linear_and_new_adapters_change_nothing(bias):
    base = nn.Linear(8, 5, bias=bias)
    layer = StagedLoRALinear.from_linear(base, num_stages=S, rank=2, lora_alpha=4.0)
    assert layer.weight is base.weight and layer.bias is base.bias  # shared, not copied
    x = torch.randn(3, 7, 8)
    assert torch.equal(layer(x), base(x))
    for stage in range(1, S):
        layer.set_stage(stage)
        assert_close(layer(x), base(x), 1e-6)  # B_j = 0
    with torch.no_grad():
        layer.lora_B[1].normal_()
    assert not torch.allclose(layer(x), base(x), atol=1e-3)
    layer.set_stage(1)  # adapter 2 is inactive again
    assert_close(layer(x), base(x), 1e-6)


def test_layer_requires_grad_per_stage_and_clamped_scales():
    layer = StagedLoRALinear(6, 3, num_stages=S, rank=2, lora_alpha=2.0)
    assert layer.scaling == 1.0 and layer.lora_A[0].std() < 0.02 and layer.lora_B[0].abs().sum() == 0
    expected = {
        0: {'weight', 'bias'},
        1: {'lora_A.0', 'lora_B.0', 'lora_scales.0', 'lora_scales.1'},
        2: {'lora_A.1', 'lora_B.1', 'lora_scales.0', 'lora_scales.1', 'lora_scales.2'},
        3: {'lora_A.2', 'lora_B.2', 'lora_scales.0', 'lora_scales.1', 'lora_scales.2', 'lora_scales.3'},
    }
    for stage, names in expected.items():
        layer.set_stage(stage)
        assert {n for n, p in layer.named_parameters() if p.requires_grad} == names
    with torch.no_grad():
        layer.lora_scales[0].fill_(5.0)
        layer.lora_scales[1].fill_(-1.0)
    assert layer.effective_scales().tolist()[:2] == pytest.approx([1.2, 0.8])
    x = torch.randn(4, 6)
    expected_out = 1.2 * (x @ layer.weight.T) + layer.bias  # B = 0: only the scaled base remains
    assert_close(layer(x), expected_out, 1e-5)


def test_merge_then_unmerge_restores_weights_and_outputs():
    layer = StagedLoRALinear(8, 5, num_stages=S, rank=2, lora_alpha=4.0, lora_dropout=0.5)
    layer.set_stage(2)
    with torch.no_grad():
        for b in layer.lora_B:
            b.normal_()
        layer.lora_scales[2].fill_(1.1)
    weight = layer.weight.detach().clone()
    x = torch.randn(3, 8)
    with pytest.raises(RuntimeError, match='eval'):
        layer.merge()  # training mode
    layer.eval()
    unmerged = layer(x)
    layer.merge()
    assert layer.is_merged and '_merged_weight' not in layer.state_dict()
    assert_close(layer(x), unmerged, 1e-5)
    assert torch.equal(layer.weight, weight)  # the base weight is never modified
    layer.unmerge()
    assert not layer.is_merged and torch.equal(layer(x), unmerged)
    layer.merge()
    layer.train()
    assert not layer.is_merged  # training always runs the unmerged path
    layer.eval()
    layer.merge()
    layer.set_stage(3)
    assert not layer.is_merged


# ---------------------------------------------------------------- wrapping a real model
@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_apply_wraps_attention_and_routed_expert_linears_only(variant):
    model = small_model(VARIANTS[variant])
    keys_before = set(model.state_dict())
    names = apply_staged_lora(model, num_stages=S, rank=4, alpha=8.0, dropout=0.1)
    assert set(names) == set(staged_lora_layers(model))
    expected = set()
    for i, block in enumerate(model.world_model.transformer.blocks):
        prefix = f'{TRANSFORMER}blocks.{i}.'
        expected |= {f'{prefix}attn.{n}' for n in ('query', 'key', 'value', 'proj')}
        if isinstance(block.mlp, MoEFeedForward):
            linears = ('w1', 'w2', 'w3') if block.mlp.expert_type == 'swiglu' else ('fc1', 'fc2')
            expected |= {f'{prefix}mlp.experts.{e}.{n}' for e in range(block.mlp.num_experts) for n in linears}
            assert not isinstance(block.mlp.gate, StagedLoRALinear)
            assert not any(isinstance(m, StagedLoRALinear) for m in block.mlp.shared_experts.modules())
        else:
            expected |= {f'{prefix}mlp.0', f'{prefix}mlp.2'}
    assert set(names) == expected
    assert all(name.startswith(TRANSFORMER) for name in names)  # never encoder, embeddings, heads
    keys_after = set(model.state_dict())
    assert keys_before <= keys_after and all(is_lora_name(k) for k in keys_after - keys_before)
    assert set(lora_state_dict(model)) == keys_after - keys_before
    assert get_dps_stage(model) == 0


def test_apply_accepts_world_model_and_transformer_and_rejects_misuse():
    wm = small_model(VARIANTS['moe_swiglu']).world_model
    names = apply_staged_lora(wm, num_stages=S, rank=4, alpha=8.0)
    assert names[0] == 'transformer.blocks.0.attn.query'
    with pytest.raises(ValueError, match='already applied'):
        apply_staged_lora(wm, num_stages=S, rank=4, alpha=8.0)
    transformer = small_model(VARIANTS['dense']).world_model.transformer
    assert apply_staged_lora(transformer, num_stages=S, rank=4, alpha=8.0, targets=('attn',))[0] == \
        'blocks.0.attn.query'
    assert isinstance(transformer.blocks[0].mlp[0], nn.Linear) and \
        not isinstance(transformer.blocks[0].mlp[0], StagedLoRALinear)
    fresh = small_model(VARIANTS['dense'])
    with pytest.raises(ValueError, match='targets'):
        apply_staged_lora(fresh, num_stages=S, rank=4, alpha=8.0, targets=('attn', 'gate'))
    with pytest.raises(NotImplementedError, match='encoder'):
        apply_staged_lora(fresh, num_stages=S, rank=4, alpha=8.0, include_encoder=True)
    with pytest.raises(ValueError, match='apply_staged_lora first'):
        set_dps_stage(fresh, 1)


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_set_dps_stage_trains_only_adapter_s_and_scales_in_the_transformer(variant):
    model = wrapped_model(VARIANTS[variant])
    for stage in [0, 1, 2, 3, 0]:
        count = set_dps_stage(model, stage)
        assert count == trainable_parameter_count(model) and get_dps_stage(model) == stage
        for name, p in model.named_parameters():
            if not name.startswith(TRANSFORMER):
                expected = True  # encoder, embeddings, heads always train
            elif not is_lora_name(name):
                expected = stage == 0  # base weights, norms, gates, shared experts
            elif '.lora_scales.' in name:
                expected = 1 <= stage and int(name.rsplit('.', 1)[1]) <= stage
            else:
                expected = stage >= 1 and name.endswith((f'lora_A.{stage - 1}', f'lora_B.{stage - 1}'))
            assert p.requires_grad == expected, (stage, name)


def test_stage_past_the_last_is_an_error():
    model = wrapped_model()
    for bad in (S, S + 3, -1):
        with pytest.raises(ValueError, match=r'\[0, 3\]'):
            set_dps_stage(model, bad)
    with pytest.raises(ValueError, match='stage'):
        next(iter(staged_lora_layers(model).values())).set_stage(S)


# ---------------------------------------------------------------- switching stages while training
def test_switch_keeps_outputs_and_adamw_moves_only_the_trainable_parameters():
    """Optimizer built once over every parameter, weight decay on all: frozen weights, earlier
    adapters and later adapters never move; adapter s, the scales, encoder and heads do."""
    model = wrapped_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)

    def train_steps(n: int) -> None:
        model.train()
        for step in range(n):
            opt.zero_grad(set_to_none=True)
            loss(model, seed=step).backward()
            for name, p in model.named_parameters():
                assert p.requires_grad or p.grad is None, name
            opt.step()

    train_steps(2)  # stage 0: every base parameter gets AdamW state
    for stage in (1, 2):
        before_out = outputs(model)
        set_dps_stage(model, stage)
        assert_close(outputs(model), before_out, 1e-5)  # B_s = 0
        before = snapshot(model)
        train_steps(3)
        after = snapshot(model)
        changed = {name for name in before if not torch.equal(before[name], after[name])}
        for name in before:
            if name.startswith(TRANSFORMER) and not model.get_parameter(name).requires_grad:
                assert name not in changed, (stage, name)
        attn = f'{TRANSFORMER}blocks.0.attn.query.'
        for j in range(1, S):
            assert (f'{attn}lora_B.{j - 1}' in changed) == (j == stage)
        assert {f'{attn}lora_A.{stage - 1}', f'{attn}lora_scales.0', f'{attn}lora_scales.{stage}'} <= changed
        assert any(n.startswith(f'{TRANSFORMER}blocks.1.mlp.experts.') and 'lora_B' in n for n in changed)
        assert any(n.startswith('world_model.tokenizer.') for n in changed)  # encoder keeps training
        assert any(n.startswith('world_model.head_') for n in changed)  # heads keep training


def test_state_dict_round_trip_at_stage_2():
    model = wrapped_model(seed=0)
    set_dps_stage(model, 2)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.add_(0.05 * torch.randn_like(p))
    state = copy.deepcopy(model.state_dict())
    fresh = wrapped_model(seed=1)
    set_dps_stage(fresh, 2)  # the stage is not stored in the state dict: restore it from the controller
    assert not torch.allclose(outputs(fresh), outputs(model))
    fresh.load_state_dict(state, strict=True)
    assert_close(outputs(fresh), outputs(model), 0.0)
    model.eval()
    merge_lora(model)
    assert set(model.state_dict()) == set(state)  # merging adds nothing to checkpoints
    assert_close(outputs(model), outputs(fresh), 1e-5)
    unmerge_lora(model)


def test_adapter_scales_for_logging_and_clamp():
    model = wrapped_model()
    scales = adapter_scales(model)
    assert set(scales) == {f'alpha{j}_{s}' for j in range(S) for s in ('mean', 'min', 'max')}
    assert all(v == 1.0 for v in scales.values())
    layer = model.world_model.transformer.blocks[0].attn.proj
    with torch.no_grad():
        layer.lora_scales[1].fill_(3.0)
    assert adapter_scales(model)['alpha1_max'] == pytest.approx(1.2)
    per_layer = adapter_scales(model, per_layer=True)
    assert len(per_layer) == S * len(staged_lora_layers(model))
    assert per_layer[f'{TRANSFORMER}blocks.0.attn.proj.alpha1'] == pytest.approx(1.2)
    clamp_adapter_scales_(model)
    assert float(layer.lora_scales[1]) == pytest.approx(1.2)


def test_presets_plug_into_apply_staged_lora():
    model = small_model(VARIANTS['moe_swiglu'])
    preset = dps_preset('atari')
    names = apply_staged_lora(model, **{key: preset[key] for key in LORA_KEYS})
    layer = staged_lora_layers(model)[names[0]]
    assert (layer.num_stages, layer.rank, layer.scaling) == (5, 64, 0.5)
    assert isinstance(layer.lora_dropout, nn.Dropout) and layer.lora_dropout.p == 0.1


def test_docstring_examples():
    result = doctest.testmod(lora_module)
    assert result.attempted > 0 and result.failed == 0


def test_eval_forwards_without_autograd_merge_and_never_serve_a_stale_merge():
    layer = StagedLoRALinear(6, 4, num_stages=3, rank=2, lora_alpha=2.0)
    assert layer.inference_weight() is layer.weight  # stage 0: the plain linear
    layer.set_stage(1)
    with torch.no_grad():
        layer.lora_B[0].normal_()
    x = torch.randn(3, 6)

    def effective_weight():
        scales = layer.effective_scales()
        return layer.weight * scales[0] + layer.lora_B[0] * scales[1] * layer.scaling @ layer.lora_A[0]

    layer.eval()
    assert layer.inference_weight() is None and not layer.is_merged  # autograd on: the unmerged path
    out = layer(x)
    out.sum().backward()
    assert layer.lora_B[0].grad is not None  # the adapter still gets its gradient in eval mode
    with torch.no_grad():
        merged_out = layer(x)  # eval without autograd: merges by itself
    assert layer.is_merged and layer.merge_is_current
    torch.testing.assert_close(merged_out, torch.nn.functional.linear(x, effective_weight(), layer.bias))
    with torch.no_grad():
        layer.lora_B[0].add_(1.0)  # e.g. an optimizer step taken while in eval mode
    assert not layer.merge_is_current
    with torch.no_grad():
        torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, effective_weight(), layer.bias))
        assert layer.merge_is_current  # re-merged from the new parameters, not the stale cache
    layer.train()
    assert not layer.is_merged and layer.inference_weight() is None


def test_moe_lean_inference_path_uses_merged_adapters(monkeypatch):
    from lzero_ext.model.moe import MoEFeedForward

    moe = MoEFeedForward(8, num_experts=2, top_k=1, num_shared_experts=1)
    for expert in moe.experts:
        for name in ("w1", "w2", "w3"):
            layer = StagedLoRALinear.from_linear(getattr(expert, name), num_stages=2, rank=2, lora_alpha=2.0)
            layer.set_stage(1)
            with torch.no_grad():
                layer.lora_B[0].normal_()
            setattr(expert, name, layer)
    moe.eval()
    x = torch.randn(2, 8)
    reference = moe(x)[0].detach()  # autograd on: the sorted dispatch through the unmerged modules
    calls = []
    forward = StagedLoRALinear.forward
    monkeypatch.setattr(StagedLoRALinear, "forward", lambda self, inp: calls.append(1) or forward(self, inp))
    with torch.no_grad():
        lean = moe(x)[0]
    assert not calls  # F.linear on the merged weights, no module calls
    torch.testing.assert_close(lean, reference, rtol=1e-5, atol=1e-6)
