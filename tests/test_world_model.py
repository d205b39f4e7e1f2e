"""Tests of the ScaleZero multi-task world model, its registered models and parameter counts."""
import copy
from typing import Any, Dict, List

import numpy as np
import pytest
import torch
from ding.model import create_model
from ding.utils import MODEL_REGISTRY, deep_merge_dicts
from easydict import EasyDict
from torch import nn

from lzero.mcts import UniZeroMCTSCtree
from lzero.mcts.tree_search.mcts_ctree_sampled import SampledUniZeroMCTSCtree

from lzero_ext.model.moe import MoEFeedForward
from lzero_ext.param_count import count_parameters, format_parameter_table
from lzero_ext.model.scalezero_model import SampledScaleZeroModel, ScaleZeroModel
from lzero_ext.model.world_model import TaskSwitch

B = 2  # environments per call
SUPPORT = 101


def small_cfg(**overrides: Any) -> Dict[str, Any]:
    """Tiny 2-task world-model config (vector obs of sizes 4 and 6, discrete actions, MoE on)."""
    cfg = dict(num_tasks=2, obs_type='vector', observation_shape_list=[4, 6], embed_dim=32, num_heads=2,
               num_layers=2, env_num=B, max_blocks=5, max_tokens=10, context_length=10, num_unroll_steps=4,
               num_simulations=4, embed_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0,
               moe=dict(enabled=True, num_experts=4, top_k=1))
    return deep_merge_dicts(cfg, overrides)


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere (lightzero zero-inits the last head layers), eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.2)
    model.world_model.precompute_pos_emb_diff_kv()
    return model.eval()


def discrete_model(**overrides: Any) -> ScaleZeroModel:
    return randomized(ScaleZeroModel(observation_shape=4, action_space_size=3, world_model_cfg=small_cfg(**overrides)))


def collect_step(model: ScaleZeroModel, last_obs, last_action: List, obs, t: int, task_id=None):
    """One collect-style initial inference, as UniZeroPolicy._forward_collect calls it."""
    return model.initial_inference(last_obs, last_action, obs, np.full(B, t), task_id=task_id)


def loss_batch(obs_dim: int, num_actions: int, T: int = 4, seed: int = 0) -> Dict[str, torch.Tensor]:
    """A UniZeroPolicy-style ``batch_for_gpt`` of one task with random content."""
    g = torch.Generator().manual_seed(seed)
    one_hot = torch.zeros(B, T, SUPPORT)
    one_hot[..., SUPPORT // 2] = 1.0
    return dict(observations=torch.randn(B, T, obs_dim, generator=g),
                actions=torch.randint(0, num_actions, (B, T), generator=g), timestep=torch.arange(T).repeat(B, 1),
                rewards=one_hot.clone(), mask_padding=torch.ones(B, T, dtype=torch.bool),
                ends=torch.zeros(B, T, dtype=torch.long), target_value=one_hot.clone(),
                target_policy=torch.softmax(torch.randn(B, T, num_actions, generator=g), dim=-1))


# ---------------------------------------------------------------- shapes
def test_image_tasks_share_encoder_and_give_per_task_outputs():
    cfg = small_cfg(obs_type='image', observation_shape_list=None, num_layers=1)
    model = randomized(ScaleZeroModel(observation_shape=(3, 64, 64), action_space_size=18, world_model_cfg=cfg))
    assert not isinstance(model.representation_network.body, TaskSwitch)  # one shared image encoder
    obs = torch.rand(B, 3, 64, 64)
    outputs = []
    for task in (0, 1):
        out = collect_step(model, torch.zeros(B, 3, 64, 64), [-1] * B, obs, 0, task_id=task)
        assert out.policy_logits.shape == (B, 18) and out.value.shape == (B, SUPPORT)
        assert out.latent_state.shape == (B, 1, 32)
        history = [(out.latent_state.numpy(), torch.tensor([3, 17]))]
        rec = model.recurrent_inference(history, 0, [0] * B, np.zeros(B), task_id=task)
        assert rec.reward.shape == (B, SUPPORT) and rec.policy_logits.shape == (B, 18)
        assert rec.latent_state.shape == (B, 1, 32)
        outputs.append(out.policy_logits)
    assert not torch.allclose(outputs[0], outputs[1])  # same observation, per-task policy heads


def test_sampled_model_vector_tasks_with_different_obs_and_action_dims():
    cfg = small_cfg(observation_shape_list=[5, 17], action_space_size_list=[1, 6])
    model = randomized(SampledScaleZeroModel(action_space_size=6, world_model_cfg=cfg))
    for task, (obs_dim, act_dim) in enumerate([(5, 1), (17, 6)]):
        out = collect_step(model, torch.zeros(B, obs_dim), [-1] * B, torch.rand(B, obs_dim), 0, task_id=task)
        assert out.policy_logits.shape == (B, 2 * act_dim)  # [mu, sigma] of the task's Gaussian
        sigma = out.policy_logits[:, act_dim:]
        assert (sigma > 0).all()
        # Continuing an episode feeds a continuous action token of the task's dim.
        action = [np.random.uniform(-1, 1, act_dim).astype(np.float32) for _ in range(B)]
        out = collect_step(model, torch.rand(B, obs_dim), action, torch.rand(B, obs_dim), 1, task_id=task)
        history = [(out.latent_state.numpy(), torch.rand(B, act_dim) * 2 - 1)]
        rec = model.recurrent_inference(history, 0, [0] * B, np.ones(B), task_id=task)
        assert rec.policy_logits.shape == (B, 2 * act_dim) and rec.reward.shape == (B, SUPPORT)
        assert rec.latent_state.shape == (B, 1, 32)


def test_buffer_style_initial_inference_on_bound_task():
    """UniZeroGameBuffer computes target values / reanalyses with initial_inference(obs, actions, start_pos=...)."""
    model = discrete_model()
    L = 4
    with model.bind_task(1):
        out = model.initial_inference(torch.randn(B * L, 6), np.random.randint(0, 3, (B, L)),
                                      start_pos=np.tile(np.arange(L), (B, 1)))
    assert out.value.shape == (B * L, SUPPORT) and out.policy_logits.shape == (B * L, 3)


# ---------------------------------------------------------------- KV caches
def test_incremental_kv_cache_inference_matches_full_sequence_forward():
    model = discrete_model()
    wm = model.world_model
    g = torch.Generator().manual_seed(1)
    obs = [torch.randn(B, 4, generator=g) for _ in range(3)]
    actions = torch.randint(0, 3, (B, 3), generator=g)

    outs = [collect_step(model, torch.zeros(B, 4), [-1] * B, obs[0], 0, task_id=0)]
    for t in (1, 2):
        outs.append(collect_step(model, obs[t - 1], actions[:, t - 1].tolist(), obs[t], t, task_id=0))
    rec = model.recurrent_inference([(outs[-1].latent_state.numpy(), actions[:, 2])], 0, [0] * B, np.full(B, 2),
                                    task_id=0)

    with torch.no_grad(), wm.bind_task(0):
        latents = torch.cat([wm.tokenizer.encode_to_obs_embeddings(o) for o in obs] + [rec.latent_state], dim=1)
        act_tokens = torch.cat([actions, actions[:, -1:]], dim=1).unsqueeze(-1)  # (B, 4, 1); last one unused
        full = wm({'obs_embeddings_and_act_tokens': (latents, act_tokens)}, start_pos=[0] * B)
    for t, out in enumerate(outs):
        torch.testing.assert_close(out.policy_logits, full.logits_policy[:, t], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out.value, full.logits_value[:, t], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(rec.reward, full.logits_rewards[:, 2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(rec.latent_state[:, 0], full.logits_observations[:, 2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(rec.policy_logits, full.logits_policy[:, 3], atol=1e-5, rtol=1e-4)


def _run_task0(model: ScaleZeroModel, obs: List[torch.Tensor], actions: torch.Tensor, interleave: bool):
    """Task 0 collects 3 steps + one recurrent step; optionally task 1 runs 3 steps in between."""
    outs = [collect_step(model, torch.zeros(B, 4), [-1] * B, obs[0], 0, task_id=0),
            collect_step(model, obs[0], actions[:, 0].tolist(), obs[1], 1, task_id=0)]
    if interleave:  # enough task-1 steps to evict task 0's entries from a shared 2-slot root cache
        other = [torch.randn(B, 6) for _ in range(3)]
        collect_step(model, torch.zeros(B, 6), [-1] * B, other[0], 0, task_id=1)
        for t in (1, 2):
            out1 = collect_step(model, other[t - 1], [1] * B, other[t], t, task_id=1)
        model.recurrent_inference([(out1.latent_state.numpy(), torch.tensor([0, 2]))], 0, [0] * B, np.full(B, 2),
                                  task_id=1)
    outs.append(collect_step(model, obs[1], actions[:, 1].tolist(), obs[2], 2, task_id=0))
    outs.append(model.recurrent_inference([(outs[-1].latent_state.numpy(), actions[:, 2])], 0, [0] * B,
                                          np.full(B, 2), task_id=0))
    return outs


def test_interleaved_tasks_keep_their_own_kv_caches():
    model = discrete_model()
    g = torch.Generator().manual_seed(2)
    obs = [torch.randn(B, 4, generator=g) for _ in range(3)]
    actions = torch.randint(0, 3, (B, 3), generator=g)
    alone = _run_task0(model, obs, actions, interleave=False)
    model.world_model.clear_caches()
    mixed = _run_task0(model, obs, actions, interleave=True)
    for a, b in zip(alone, mixed):
        torch.testing.assert_close(a.policy_logits, b.policy_logits, atol=1e-6, rtol=0)
        torch.testing.assert_close(a.value, b.value, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.as_tensor(alone[-1].latent_state), torch.as_tensor(mixed[-1].latent_state))


# ---------------------------------------------------------------- training loss
def test_loss_on_task0_leaves_task1_parameters_without_gradient():
    model = discrete_model()
    target_model = copy.deepcopy(model)  # as UniZeroPolicy's target model
    wm = model.world_model.train()
    wm.bind_task(1)
    target_model.bind_task(1)
    losses = wm.compute_loss(loss_batch(obs_dim=4, num_actions=3), target_model.world_model.tokenizer, None, task_id=0)
    assert wm.task_id == 1 and target_model.representation_network.active_task == 1  # bindings restored
    assert torch.isfinite(losses.loss_total)
    losses.loss_total.backward()
    for switch in (wm.head_policy, wm.head_value, wm.head_rewards, wm.head_observations, wm.tokenizer.encoder.body):
        assert all(p.grad is None for p in switch.per_task[1].parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in switch.per_task[0].parameters())


def test_dense_and_moe_configs_build_the_right_ffn_and_aux_losses():
    dense = discrete_model(moe=dict(enabled=False)).world_model
    assert all(isinstance(block.mlp, nn.Sequential) for block in dense.transformer.blocks)
    moe = discrete_model(moe=dict(enabled=True, load_balance_weight=0.5, z_loss_weight=0.1)).world_model
    assert all(isinstance(block.mlp, MoEFeedForward) for block in moe.transformer.blocks)

    dense_losses = dense.compute_loss(loss_batch(obs_dim=4, num_actions=3), copy.deepcopy(dense.tokenizer), None,
                                      task_id=0)
    assert dense_losses.router_stats == {} and 'loss_moe_balance' not in dense_losses.intermediate_losses

    batch = loss_batch(obs_dim=6, num_actions=3)  # a batch of task 1
    losses = moe.compute_loss(batch, copy.deepcopy(moe.tokenizer), None, task_id=1)
    terms = losses.intermediate_losses
    assert terms['loss_moe_balance'] > 0 and terms['loss_moe_z'] > 0
    assert terms['loss_moe_balance'] == pytest.approx(0.5 * terms['moe_load_balance'], rel=1e-5)
    moe.config.moe.load_balance_weight = moe.config.moe.z_loss_weight = 0.0
    plain = moe.compute_loss(batch, copy.deepcopy(moe.tokenizer), None, task_id=1)
    assert 'loss_moe_balance' not in plain.intermediate_losses
    extra = float(losses.loss_total - plain.loss_total)
    assert extra == pytest.approx(float(terms['loss_moe_balance'] + terms['loss_moe_z']), rel=1e-4)
    stats = losses.router_stats
    assert stats['tokens_per_expert'].shape == (2, 4) and int(stats["tokens_per_expert"][0].sum()) == B * 4 * 2
    usage = stats['usage_per_task']  # (L, tasks, E): only task 1 routed tokens
    assert torch.allclose(usage[:, 1].sum(-1), torch.ones(2)) and usage[:, 0].sum() == 0


def test_sampled_model_loss_uses_the_task_action_dim():
    cfg = small_cfg(observation_shape_list=[5, 17], action_space_size_list=[1, 6])
    model = SampledScaleZeroModel(action_space_size=6, world_model_cfg=cfg)
    wm = model.world_model.train()
    K, T = 3, 4
    for task, (obs_dim, act_dim) in enumerate([(5, 1), (17, 6)]):
        batch = loss_batch(obs_dim, num_actions=K, T=T, seed=task)
        batch['actions'] = torch.rand(B, T, act_dim) * 2 - 1
        batch['child_sampled_actions'] = torch.rand(B, T, K, act_dim) * 2 - 1
        losses = wm.compute_loss(batch, copy.deepcopy(wm.tokenizer), None, task_id=task)
        assert torch.isfinite(losses.loss_total)
        assert losses.intermediate_losses['policy_mu'].shape[-1] == act_dim


# ---------------------------------------------------------------- binding, options, registry
def test_bind_task_is_a_setter_and_a_context_manager():
    model = discrete_model()
    model.bind_task(1)
    assert model.task_id == 1
    with model.bind_task(0):
        assert model.task_id == 0 and model.world_model.head_policy.active_task == 0
    assert model.task_id == 1 and model.world_model.head_policy.active_task == 1
    with pytest.raises(ValueError):
        model.bind_task(2)


@pytest.mark.parametrize('option', ['add', 'concat'])
def test_task_embedding_options(option):
    model = discrete_model(task_embed_option=option, task_embed_dim=8)
    latents = [collect_step(model, torch.zeros(B, d), [-1] * B, torch.zeros(B, d), 0, task_id=t).latent_state
               for t, d in enumerate((4, 6))]
    assert latents[0].shape == (B, 1, 32)
    if option == 'concat':  # the last task_embed_dim entries carry the task embedding
        assert not torch.allclose(latents[0][..., -8:], latents[1][..., -8:])


@pytest.mark.parametrize('overrides, message', [
    (dict(latent_norm='batchnorm'), 'latent_norm'),
    (dict(task_embed_option='prefix'), 'task_embed_option'),
    (dict(predict_latent_loss_type='group_kl'), 'mse'),
    (dict(action_space_size_list=[3, 4]), 'discrete tasks share'),
    (dict(moe=dict(num_expert=4)), 'unknown moe keys'),
])
def test_invalid_options_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        ScaleZeroModel(observation_shape=4, action_space_size=3, world_model_cfg=small_cfg(**overrides))


def test_registry_builds_both_models_from_lightzero_style_config():
    assert {'ScaleZeroModel', 'SampledScaleZeroModel'} <= set(MODEL_REGISTRY.keys())
    image = EasyDict(type='ScaleZeroModel', import_names=['lzero_ext.model.scalezero_model'],
                     observation_shape=(3, 64, 64), action_space_size=18, model_type='conv', norm_type='LN',
                     support_scale=50, categorical_distribution=True, frame_stack_num=1,
                     world_model_cfg=small_cfg(obs_type='image', observation_shape_list=None, num_layers=1))
    assert type(create_model(image)) is ScaleZeroModel
    sampled = EasyDict(type='SampledScaleZeroModel', import_names=['lzero_ext.model.scalezero_model'],
                       observation_shape=17, action_space_size=6, model_type='mlp', num_of_sampled_actions=5,
                       world_model_cfg=small_cfg(observation_shape_list=[5, 17], action_space_size_list=[1, 6]))
    model = create_model(sampled)
    assert type(model) is SampledScaleZeroModel and model.world_model.continuous_action_space


def test_param_count_active_excludes_unrouted_experts():
    model = discrete_model(moe=dict(enabled=True, num_experts=4, top_k=1))
    counts = count_parameters(model)
    routed = sum(p.numel() for block in model.world_model.transformer.blocks for p in block.mlp.experts.parameters())
    assert counts['routed_experts']['total'] == routed
    assert counts['all']['total'] == sum(p.numel() for p in model.parameters())
    assert counts['all']['total'] - counts['all']['active'] == pytest.approx(
        (4 - 1) / 4 * routed + sum(counts[p]['total'] - counts[p]['active'] for p in ('encoder', 'heads',
                                                                                     'embeddings')))
    assert counts['routed_experts']['total'] - counts['routed_experts']['active'] == pytest.approx(3 / 4 * routed)
    assert counts['heads']['active'] == pytest.approx(counts['heads']['total'] / 2)  # one of two task copies
    assert 'routed_experts' in format_parameter_table(counts)
    dense = count_parameters(discrete_model(moe=dict(enabled=False)))
    assert dense['routed_experts']['total'] == 0 and dense['ffn']['total'] > 0


# ---------------------------------------------------------------- lightzero MCTS on a bound task
def _count_calls(module: nn.Module) -> List[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_unizero_mcts_ctree_search_runs_on_bound_task():
    model = discrete_model()
    heads = model.world_model.head_policy.per_task
    calls = [_count_calls(heads[0]), _count_calls(heads[1])]
    num_simulations = 6
    mcts = UniZeroMCTSCtree(EasyDict(num_simulations=num_simulations, discount_factor=0.997, device='cpu',
                                     model=EasyDict(support_scale=50, categorical_distribution=True)))
    timestep = np.zeros(B, dtype=int)
    with model.bind_task(1):  # as a multi-task policy would around lightzero's collect code
        out = model.initial_inference(torch.zeros(B, 6), [-1] * B, torch.randn(B, 6), timestep)
        roots = UniZeroMCTSCtree.roots(B, [list(range(3))] * B)
        noises = [np.random.dirichlet([0.3] * 3).astype(np.float32).tolist() for _ in range(B)]
        roots.prepare(0.25, noises, out.reward, out.policy_logits.tolist(), [-1] * B)
        mcts.search(roots, model, out.latent_state.numpy(), [-1] * B, timestep)
    assert [sum(d) for d in roots.get_distributions()] == [num_simulations] * B
    assert calls[0][0] == 0 and calls[1][0] > num_simulations  # only task 1's policy head ran


def test_sampled_mcts_ctree_search_runs_on_bound_task():
    cfg = small_cfg(observation_shape_list=[5, 17], action_space_size_list=[1, 6])
    model = randomized(SampledScaleZeroModel(action_space_size=6, world_model_cfg=cfg))
    K, num_simulations = 4, 5
    mcts = SampledUniZeroMCTSCtree(EasyDict(
        num_simulations=num_simulations, discount_factor=0.997, device='cpu',
        model=EasyDict(support_scale=50, categorical_distribution=True, continuous_action_space=True)))
    timestep = np.zeros(B, dtype=int)
    with model.bind_task(1):
        out = model.initial_inference(torch.zeros(B, 17), [-1] * B, torch.randn(B, 17), timestep)
        roots = SampledUniZeroMCTSCtree.roots(B, [[-1] * K] * B, 6, K, True)
        noises = [np.random.dirichlet([0.3] * K).astype(np.float32).tolist() for _ in range(B)]
        roots.prepare(0.25, noises, out.reward, out.policy_logits.tolist(), [-1] * B)
        mcts.search(roots, model, out.latent_state.numpy(), [-1] * B, timestep)
    assert [sum(d) for d in roots.get_distributions()] == [num_simulations] * B
    assert all(len(a) == 6 for root in roots.get_sampled_actions() for a in root)
