"""The batched multi-task engine at model level: one forward over a mixed batch of several tasks' rows
must give every task exactly what the task-by-task path gives (losses, gradients, inference outputs)."""
import copy
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import pytest
import torch


from lzero_ext.dps import apply_staged_lora, set_dps_stage
from lzero_ext.model.scalezero_model import SampledScaleZeroModel, ScaleZeroModel
from lzero_ext.model.task_routing import TaskRows
from tests.test_world_model import SUPPORT, loss_batch, randomized, small_cfg

TOL = dict(atol=1e-5, rtol=1e-5)


def three_task_discrete(moe: bool, obs_type: str = 'vector', **overrides: Any) -> ScaleZeroModel:
    if obs_type == 'image':
        cfg = small_cfg(num_tasks=3, obs_type='image', observation_shape_list=None, num_layers=1,
                        moe=dict(enabled=moe), **overrides)
        return randomized(ScaleZeroModel(observation_shape=(3, 64, 64), action_space_size=5, world_model_cfg=cfg))
    cfg = small_cfg(num_tasks=3, observation_shape_list=[4, 6, 3], moe=dict(enabled=moe), **overrides)
    return randomized(ScaleZeroModel(observation_shape=4, action_space_size=5, world_model_cfg=cfg))


def three_task_continuous(moe: bool) -> SampledScaleZeroModel:
    cfg = small_cfg(num_tasks=3, observation_shape_list=[5, 17, 3], action_space_size_list=[1, 6, 2],
                    moe=dict(enabled=moe))
    return randomized(SampledScaleZeroModel(action_space_size=6, world_model_cfg=cfg))


def mixed_batches(obs_shapes: Sequence[Any], sizes: Sequence[int], num_actions: int = 5,
                  action_dims: Sequence[int] = ()) -> Dict[int, Dict[str, torch.Tensor]]:
    """One loss batch per task (different batch sizes); continuous tasks get actions of their own dim."""
    batches = {}
    for task, (shape, size) in enumerate(zip(obs_shapes, sizes)):
        batch = loss_batch(obs_dim=1, num_actions=num_actions, seed=task)
        T = batch['actions'].shape[1]
        g = torch.Generator().manual_seed(100 + task)
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        batch = {k: torch.cat([v] * size)[:size] if v.shape[0] != size else v for k, v in batch.items()}
        batch['observations'] = torch.randn(size, T, *shape, generator=g)
        batch['actions'] = torch.randint(0, num_actions, (size, T), generator=g)
        batch['target_policy'] = torch.softmax(torch.randn(size, T, num_actions, generator=g), -1)
        batch['timestep'] = torch.arange(T).repeat(size, 1)
        batch['mask_padding'] = torch.ones(size, T, dtype=torch.bool)
        batch['mask_padding'][0, -1] = False  # one padded step: the per-task mask normalisation must stay per task
        if action_dims:
            batch['actions'] = torch.rand(size, T, action_dims[task], generator=g) * 2 - 1
            batch['child_sampled_actions'] = torch.rand(size, T, num_actions, action_dims[task], generator=g) * 2 - 1
        batches[task] = batch
    return batches


def per_task_and_batched(model, batches) -> Tuple[Dict[int, Any], Dict[int, Any], List, List]:
    """Losses and gradients of the summed loss, once task by task and once from the batched forward."""
    wm = model.world_model.train()
    target = copy.deepcopy(wm.tokenizer)
    params = [p for p in wm.parameters() if p.requires_grad]

    def grads_of(losses):
        wm.zero_grad(set_to_none=True)
        sum(l.loss_total for l in losses.values()).backward()
        return [None if p.grad is None else p.grad.clone() for p in params]

    torch.manual_seed(0)
    per_task = {t: wm.compute_loss(b, target, None, task_id=t) for t, b in batches.items()}
    per_task_grads = grads_of(per_task)
    torch.manual_seed(0)
    batched = wm.compute_task_losses(batches, target, None)
    batched_grads = grads_of(batched)
    return per_task, batched, per_task_grads, batched_grads


def assert_same(per_task, batched, per_task_grads, batched_grads) -> None:
    assert list(batched) == list(per_task)
    for t in per_task:
        torch.testing.assert_close(batched[t].loss_total, per_task[t].loss_total, **TOL)
        for name, value in per_task[t].intermediate_losses.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                torch.testing.assert_close(batched[t].intermediate_losses[name], value, **TOL, msg=name)
    assert any(g is not None for g in per_task_grads)
    for a, b in zip(per_task_grads, batched_grads):
        assert (a is None) == (b is None)  # a task-specific parameter unused by all tasks stays gradient-free
        if a is not None:
            torch.testing.assert_close(b, a, **TOL)


@pytest.mark.parametrize("moe", [True, False], ids=["moe", "dense"])
def test_batched_loss_equals_per_task_on_vector_tasks_of_different_sizes(moe):
    model = three_task_discrete(moe)
    assert_same(*per_task_and_batched(model, mixed_batches([4, 6, 3], [2, 3, 1])))


@pytest.mark.parametrize("moe", [True, False], ids=["moe", "dense"])
def test_batched_loss_equals_per_task_on_shared_image_encoder(moe):
    model = three_task_discrete(moe, obs_type='image')
    assert_same(*per_task_and_batched(model, mixed_batches([(3, 64, 64)] * 3, [2, 1, 2])))


@pytest.mark.parametrize("moe", [True, False], ids=["moe", "dense"])
def test_batched_loss_equals_per_task_on_dmc_like_tasks(moe):
    """Per-task encoders, action embeddings and Gaussian heads of different widths (1, 6 and 2 action dims)."""
    model = three_task_continuous(moe)
    batches = mixed_batches([5, 17, 3], [2, 2, 3], num_actions=3, action_dims=[1, 6, 2])
    per_task, batched, *grads = per_task_and_batched(model, batches)
    assert [batched[t].intermediate_losses['policy_mu'].shape[-1] for t in batched] == [1, 6, 2]
    assert_same(per_task, batched, *grads)


@pytest.mark.parametrize("moe", [True, False], ids=["moe", "dense"])
def test_batched_loss_equals_per_task_across_image_vector_and_text_tasks(moe):
    """One model over three modalities (a grid, a state vector, token ids): each task's loss and the gradients
    from the flattened mixed batch equal the task-by-task ones."""
    cfg = small_cfg(num_tasks=3, obs_type_list=['image', 'vector', 'text'], observation_shape_list=[(2, 5, 5), 7, 12],
                    moe=dict(enabled=moe), text_encoder=dict(cache_size=0))
    model = randomized(ScaleZeroModel(observation_shape=(2, 5, 5), action_space_size=5, num_channels=8,
                                      downsample=False, world_model_cfg=cfg))
    batches = mixed_batches([(2, 5, 5), 7, 12], [2, 1, 2])
    g = torch.Generator().manual_seed(7)
    batches[2]['observations'] = torch.randint(1000, 2000, batches[2]['observations'].shape, generator=g).float()
    assert_same(*per_task_and_batched(model, batches))


@pytest.mark.parametrize("moe", [True, False], ids=["moe", "dense"])
def test_batched_loss_equals_per_task_across_discrete_and_continuous_tasks(moe):
    """One model over both action kinds: the discrete tasks' cross-entropy policy loss and the continuous task's
    sampled-action loss, with their gradients, from one forward equal the task-by-task ones."""
    cfg = small_cfg(num_tasks=3, observation_shape_list=[4, 6, 3], action_type_list=['discrete', 'continuous', 'discrete'],
                    action_space_size_list=[5, 2, 5], moe=dict(enabled=moe))
    model = randomized(ScaleZeroModel(observation_shape=4, action_space_size=5, world_model_cfg=cfg))
    batches = mixed_batches([4, 6, 3], [2, 3, 1])
    batches[1] = mixed_batches([6], [3], num_actions=3, action_dims=[2])[0]  # K = 3 sampled actions of 2 dims
    per_task, batched, *grads = per_task_and_batched(model, batches)
    assert batched[1].intermediate_losses['policy_mu'].shape[-1] == 2 and 'policy_mu' not in batched[0].intermediate_losses
    assert_same(per_task, batched, *grads)


def test_batched_loss_equals_per_task_with_dps_adapters_in_stage_1():
    model = three_task_discrete(moe=True)
    apply_staged_lora(model, num_stages=3, rank=4, alpha=4.0, dropout=0.0)
    set_dps_stage(model, 1)
    with torch.no_grad():  # a trained-looking adapter: B != 0, so the adapter path contributes
        for name, param in model.named_parameters():
            if 'lora_B' in name:
                param.normal_(0.0, 0.1)
    assert_same(*per_task_and_batched(model, mixed_batches([4, 6, 3], [2, 2, 2])))


def test_batched_loss_with_concat_task_embedding_and_a_task_subset():
    model = three_task_discrete(moe=True, task_embed_option='concat', task_embed_dim=8)
    batches = mixed_batches([4, 6, 3], [2, 2, 2])
    del batches[1]  # a rank (or a DPS stage) may train only some of the tasks
    assert_same(*per_task_and_batched(model, batches))


def test_batched_expert_usage_is_per_task():
    model = three_task_discrete(moe=True)
    wm = model.world_model.train()
    losses = wm.compute_task_losses(mixed_batches([4, 6, 3], [2, 3, 1]), copy.deepcopy(wm.tokenizer), None)
    for t, task_losses in losses.items():
        usage = task_losses.router_stats['usage_per_task']  # (L, tasks, E): only task t's tokens
        assert torch.allclose(usage[:, t].sum(-1), torch.ones(usage.shape[0]))
        assert usage[:, [o for o in range(3) if o != t]].sum() == 0


# ---------------------------------------------------------------- inference
def _initial(model, obs, task_id, last_obs=None, last_action=None):
    n = obs.shape[0]
    last_obs = torch.zeros_like(obs) if last_obs is None else last_obs
    last_action = [-1] * n if last_action is None else last_action
    return model.initial_inference(last_obs, last_action, obs, np.zeros(n, dtype=int), task_id=task_id)


def test_mixed_batch_of_image_tasks_gets_each_tasks_own_inference_over_two_steps():
    """The batched cache over three image tasks (shared encoder, per-task heads): two steps, so every (task, env)
    slot reuses its context, then a recurrent step; each row equals that task's own (lightzero) inference."""
    from lzero_ext.model.cached_inference import InferenceCache, initial_inference, recurrent_inference

    model = three_task_discrete(moe=True, obs_type='image')
    tasks, envs = [0, 1, 2], 2
    g = torch.Generator().manual_seed(3)
    obs = [torch.rand(len(tasks) * envs, 3, 64, 64, generator=g) for _ in range(2)]
    actions = torch.randint(0, 5, (len(tasks) * envs,), generator=g)
    task_ids = np.repeat(tasks, envs)
    cache = InferenceCache(model.world_model, {t: envs for t in tasks}, num_simulations=4)
    slots = cache.slots(task_ids, np.tile(np.arange(envs), len(tasks)))
    first = initial_inference(model.world_model, obs[0], task_ids, cache, slots, first_step=np.ones(6, dtype=bool))
    second = initial_inference(model.world_model, obs[1], task_ids, cache, slots, last_obs=obs[0],
                               last_actions=actions, first_step=np.zeros(6, dtype=bool))
    store = cache.begin_search(6)
    store.copy_entries(cache.root, slots, np.arange(6))
    rec_actions = torch.randint(0, 5, (6,), generator=g)
    rec = recurrent_inference(model.world_model, store, np.arange(6), 6 + np.arange(6), rec_actions, task_ids)
    for t in tasks:
        rows = slice(t * envs, (t + 1) * envs)
        want_first = _initial(model, obs[0][rows], t)
        want_second = _initial(model, obs[1][rows], t, last_obs=obs[0][rows], last_action=list(actions[rows]))
        want_rec = model.recurrent_inference([(want_second.latent_state.numpy(), rec_actions[rows])], 0, [0] * envs,
                                             np.ones(envs), task_id=t)
        for got, want in ((first, want_first), (second, want_second)):
            torch.testing.assert_close(got.policy_logits[rows], want.policy_logits, **TOL)
            torch.testing.assert_close(got.value[rows], want.value, **TOL)
            torch.testing.assert_close(got.latent[rows], want.latent_state, **TOL)
        torch.testing.assert_close(rec.reward[rows], want_rec.reward, **TOL)
        torch.testing.assert_close(rec.policy_logits[rows], want_rec.policy_logits, **TOL)
        torch.testing.assert_close(rec.latent[rows], want_rec.latent_state, **TOL)


def test_task_rows_validation():
    assert TaskRows.from_task_ids([2, 2, 0]).segments == ((2, 0, 2), (0, 2, 3))
    with pytest.raises(ValueError, match="once"):
        TaskRows.from_task_ids([0, 1, 0])


# ---------------------------------------------------------------- one run config
@pytest.mark.parametrize("key, value", [("learning_rate", 3e-4), ("grad_clip_value", 1.0),
                                        ("task_loss_weights", [1.0, 2.0]), ("diagnostics_freq", 7),
                                        ("target_update_theta", 0.5)])
def test_a_run_level_key_set_differently_on_two_tasks_is_a_clear_error(key, value, tmp_path):
    from lzero_ext.entry.configs import TaskConfigError, validate_task_configs
    from zoo.atari.config.scalezero_multitask_config import build_configs

    configs = build_configs("smoke", exp_name=str(tmp_path), cuda=False)
    configs[1][0].policy[key] = value
    with pytest.raises(TaskConfigError, match=f"task 1 has policy.{key}="):
        validate_task_configs(configs)


@pytest.mark.parametrize("key, value", [("use_augmentation", True), ("accumulation_steps", 2),
                                        ("model.frame_stack_num", 4)])
def test_lightzero_keys_the_learn_step_ignores_are_rejected(key, value, tmp_path):
    from lzero_ext.entry.configs import TaskConfigError, validate_task_configs
    from zoo.atari.config.scalezero_multitask_config import build_configs

    configs = build_configs("smoke", exp_name=str(tmp_path), cuda=False)
    target, *path = [configs[0][0].policy] + key.split(".")
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(TaskConfigError, match=f"policy.{key}={value!r}.*does not implement"):
        validate_task_configs(configs)


def test_encoder_chunks_give_the_same_latents():
    model = three_task_discrete(moe=False, obs_type='image')
    encoder = model.world_model.tokenizer.encoder
    obs = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    whole = encoder(obs)
    encoder.max_batch = 2  # chunks of 2, 2 and 1 observations
    torch.testing.assert_close(encoder(obs), whole, **TOL)


@pytest.mark.parametrize("moe", [True, False], ids=["moe", "dense"])
def test_batched_loss_equals_per_task_across_all_four_domains(moe):
    """Atari-like frames, a DMC-like continuous task, a MinAtar-like grid and a Jericho-like text task in one batch:
    two image encoders (downsampled 64x64, full-resolution 10x10), a state MLP and the text encoder, both action kinds.
    Every task's loss and the gradients from the one forward equal the task-by-task ones."""
    shapes = [(3, 64, 64), 6, (4, 10, 10), 12]
    cfg = small_cfg(num_tasks=4, obs_type_list=['image', 'vector', 'image', 'text'], observation_shape_list=shapes,
                    action_type_list=['discrete', 'continuous', 'discrete', 'discrete'],
                    action_space_size_list=[5, 2, 5, 5], moe=dict(enabled=moe), text_encoder=dict(cache_size=0))
    model = randomized(ScaleZeroModel(observation_shape=(3, 64, 64), action_space_size=5, num_channels=64,
                                      downsample=True, world_model_cfg=cfg))
    batches = mixed_batches(shapes, [2, 3, 2, 1])
    batches[1] = mixed_batches([6], [3], num_actions=3, action_dims=[2])[0]  # K = 3 sampled actions of 2 dims
    g = torch.Generator().manual_seed(7)
    batches[3]['observations'] = torch.randint(1000, 2000, batches[3]['observations'].shape, generator=g).float()
    bodies = {type(body.body).__name__ for body in model.world_model.tokenizer.encoder.body.per_task}
    assert {'RepresentationNetworkUniZero', 'GridRepresentationNetwork', 'TextEncoder'} <= bodies
    assert_same(*per_task_and_batched(model, batches))
