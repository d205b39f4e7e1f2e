"""bf16 autocast and torch.compile options (lzero_ext/amp.py), on the CPU."""
import logging
import math

import numpy as np
import pytest
import torch

import lzero_ext  # noqa: F401
from lzero_ext import amp
from lzero_ext.amp import autocast, compile_world_model, validate_amp
from lzero_ext.bench.common import create_policy_for
from lzero_ext.bench.learner import sample_task_batches
from lzero_ext.model.scalezero_model import ScaleZeroModel
from zoo.atari.config.scalezero_multitask_config import build_configs


def tiny_model() -> ScaleZeroModel:
    cfg = dict(num_tasks=2, obs_type='image', embed_dim=32, num_heads=2, num_layers=2, env_num=2, max_blocks=4,
               max_tokens=8, context_length=4, encoder='vit',
               vit=dict(patch_size=8, width=24, depth=1, num_heads=2, mlp_dim=48), moe=dict(enabled=True, num_experts=2))
    return ScaleZeroModel(observation_shape=(3, 64, 64), action_space_size=18, world_model_cfg=cfg).eval()


def initial(model: ScaleZeroModel, obs: torch.Tensor):
    with torch.no_grad():
        return model.initial_inference(torch.zeros_like(obs), [-1] * len(obs), obs, np.zeros(len(obs), dtype=int),
                                       task_id=1)


def loss_batch(B: int = 2, T: int = 4, support: int = 101, actions: int = 18):
    """A UniZeroPolicy-style ``batch_for_gpt`` of one image task with random content."""
    g = torch.Generator().manual_seed(0)
    one_hot = torch.zeros(B, T, support)
    one_hot[..., support // 2] = 1.0
    return dict(observations=torch.rand(B, T, 3, 64, 64, generator=g),
                actions=torch.randint(0, actions, (B, T), generator=g), timestep=torch.arange(T).repeat(B, 1),
                rewards=one_hot.clone(), mask_padding=torch.ones(B, T, dtype=torch.bool),
                ends=torch.zeros(B, T, dtype=torch.long), target_value=one_hot.clone(),
                target_policy=torch.softmax(torch.randn(B, T, actions, generator=g), dim=-1))


def test_bf16_world_model_loss_and_gradients_are_finite_and_close_to_fp32():
    model = tiny_model().train()
    target = tiny_model()
    target.load_state_dict(model.state_dict())
    results = {}
    for mode in ('off', 'bf16'):
        model.zero_grad()
        with autocast(mode, 'cpu'):
            losses = model.world_model.compute_loss(loss_batch(), target.world_model.tokenizer, None, task_id=1)
        losses.loss_total.backward()  # outside the region, as the policy does
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results[mode] = (losses.loss_total.detach().float(), grad)
    (fp32, fp32_grad), (bf16, bf16_grad) = results['off'], results['bf16']
    assert torch.isfinite(bf16) and torch.isfinite(bf16_grad).all() and bf16_grad.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, rtol=0.02, atol=0.02)
    assert bf16 != fp32  # bf16 really ran
    cosine = torch.nn.functional.cosine_similarity(bf16_grad, fp32_grad, dim=0)  # the whole model's gradient
    assert cosine > 0.95, float(cosine)


@pytest.mark.slow  # one real collection round per game (MCTS under bf16), then the policy's learn step: ~1-2 min
def test_bf16_learn_step_is_finite_and_close_to_fp32(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    configs = build_configs('smoke', exp_name=str(tmp_path / 'exp'), cuda=False)
    for main, create in configs:
        main.policy.amp = 'bf16'  # the collection below runs lightzero's MCTS on bf16 inference
        create.env_manager.type = 'base'
    batches = sample_task_batches(configs, seed=0)
    logs = {}
    for mode in ('off', 'bf16'):
        for main, _ in configs:
            main.policy.amp = mode
        policy, _ = create_policy_for(configs[0], seed=0)
        policy.set_task_configs({t: create_policy_for(c, task_id=t, enable_field=())[1].policy
                                 for t, c in enumerate(configs)})
        logs[mode] = policy.learn_mode.forward(batches)
    for task_id in (0, 1):
        fp32, bf16 = logs['off'][f'task{task_id}/loss_total'], logs['bf16'][f'task{task_id}/loss_total']
        assert math.isfinite(bf16) and bf16 == pytest.approx(fp32, rel=0.05, abs=0.05)
        assert bf16 != fp32  # bf16 really ran
    assert math.isfinite(logs['bf16']['total_grad_norm_before_clip_wm'])


def test_bf16_inference_returns_float32_close_to_fp32():
    model = tiny_model()
    obs = torch.rand(2, 3, 64, 64)
    fp32 = initial(model, obs)
    model.world_model.clear_caches()
    with autocast('bf16', 'cpu', model):
        bf16 = initial(model, obs)
        assert model.world_model.transformer.blocks[0].attn.query(torch.randn(1, 32)).dtype == torch.bfloat16
    for name in ('latent_state', 'policy_logits', 'value'):
        value = getattr(bf16, name)
        assert value.dtype == torch.float32, name  # lightzero turns these into numpy arrays
        torch.testing.assert_close(value, getattr(fp32, name), atol=0.1, rtol=0.05)
    assert not any(m._forward_hooks for m in model.modules())  # the casts last only inside the region
    with pytest.raises(ValueError, match='amp must be one of'):
        validate_amp('fp16')


def test_compile_runs_the_same_model_and_falls_back_with_a_message(monkeypatch, caplog):
    model = tiny_model()
    obs = torch.rand(2, 3, 64, 64)
    eager = initial(model, obs)
    model.world_model.clear_caches()
    assert compile_world_model(model, device='cpu', backend='eager')  # TorchDynamo for real, no C++ build
    assert all(block._compiled_call_impl is not None for block in model.world_model.transformer.blocks)
    compiled = initial(model, obs)
    torch.testing.assert_close(compiled.policy_logits, eager.policy_logits)
    torch.testing.assert_close(compiled.latent_state, eager.latent_state)
    assert not compile_world_model(model, device='cpu', enabled=False)

    monkeypatch.setattr(amp, 'compile_unavailable_reason', lambda device: 'no C++ compiler (g++) on PATH')
    with caplog.at_level(logging.WARNING, logger='lzero_ext.amp'):
        assert not compile_world_model(tiny_model(), device='cpu')
    assert 'torch.compile is unavailable here (no C++ compiler' in caplog.text

    def broken_backend(graph, example_inputs):
        raise RuntimeError('backend cannot compile this graph')

    monkeypatch.undo()
    fresh = tiny_model()
    fresh.load_state_dict(model.state_dict())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='lzero_ext.amp'):
        assert compile_world_model(fresh, device='cpu', backend=broken_backend)
        fallback = initial(fresh, obs)
    assert 'torch.compile failed for' in caplog.text and 'running it eagerly' in caplog.text
    torch.testing.assert_close(fallback.policy_logits, eager.policy_logits)
    assert fresh.world_model.transformer.blocks[0]._compiled_call_impl is None


def _search_like_steps(model: ScaleZeroModel, steps: int, start: int = 0):
    """Initial then recurrent inference per step, as one MCTS step calls the model; returns the outputs."""
    g = torch.Generator().manual_seed(start)
    outputs = []
    for t in range(start, start + steps):
        obs = torch.rand(2, 3, 64, 64, generator=g)
        with torch.no_grad():
            out = model.initial_inference(torch.zeros_like(obs), [-1, -1], obs, np.full(2, t), task_id=1)
            actions = torch.randint(0, 18, (2,), generator=g)
            rec = model.recurrent_inference([(out.latent_state.numpy(), actions)], 0, [0, 0], np.full(2, t), task_id=1)
        outputs.append((out.policy_logits, out.latent_state, rec.policy_logits, rec.latent_state))
    return outputs


def _learn_step(model: ScaleZeroModel, target: ScaleZeroModel) -> None:
    model.train()
    model.world_model.compute_loss(loss_batch(), target.world_model.tokenizer, None, task_id=1).loss_total.backward()
    model.eval()


def _collect_and_learn(model: ScaleZeroModel, target: ScaleZeroModel, graphs_after_warm_up: list):
    """Inference steps with learn steps between them (as training alternates collection and learning), the KV
    caches cleared once; records the graphs compiled after the warm-up (first inference and learn calls)."""
    outputs = _search_like_steps(model, 1)              # warm-up: empty caches
    _learn_step(model, target)                          # warm-up: the learn step's own graphs
    outputs += _search_like_steps(model, 1, start=1)    # warm-up: filled caches
    graphs = amp.compiled_graph_count()
    outputs += _search_like_steps(model, 1, start=2)
    _learn_step(model, target)
    model.world_model.clear_caches()
    outputs += _search_like_steps(model, 2, start=3)
    graphs_after_warm_up.append(amp.compiled_graph_count() - graphs)
    return outputs


@pytest.mark.parametrize('backend', ['aot_eager', pytest.param('inductor', marks=pytest.mark.slow)])
def test_compiled_inference_matches_eager_and_nothing_recompiles_after_warm_up(backend):
    """Inference and learn-step forwards are compiled apart; once each has run, alternating them (as collection
    and learning do) and new KV-cache lengths compile no new graph, and inference gives the eager outputs."""
    eager_model, target = tiny_model(), tiny_model()
    compiled_model = tiny_model()
    compiled_model.load_state_dict(eager_model.state_dict())
    eager = _collect_and_learn(eager_model, target, [])
    assert compile_world_model(compiled_model, device='cpu', backend=backend)
    recompiled = []
    compiled = _collect_and_learn(compiled_model, target, recompiled)
    assert recompiled == [0], f'{recompiled[0]} graphs compiled after warm-up'
    for step, (ours, reference) in enumerate(zip(compiled, eager)):
        for name, a, b in zip(('initial logits', 'initial latent', 'recurrent logits', 'recurrent latent'), ours,
                              reference):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f'step {step}: {name}')
