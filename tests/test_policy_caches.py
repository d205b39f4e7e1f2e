"""The task-bound collect interface clears the bound task's KV caches every ``cache_clear_interval`` episode steps,
on the per-step ``reset(env_id, current_steps, reset_init_data=False)`` call of lightzero's UniZero workers."""
import copy

import numpy as np
import torch
from ding.policy import create_policy

import lzero_ext  # noqa: F401
from lzero_ext.entry.configs import compile_task_configs


def _two_task_policy(tmp_path, interval: int):
    from zoo.classic_control.cartpole.config.cartpole_unizero_config import create_config, main_config

    configs = []
    for task_id in range(2):
        cfg, create = copy.deepcopy(main_config), copy.deepcopy(create_config)
        create.policy.update(type="scalezero", import_names=["policies.scalezero"])
        cfg.policy.update(task_num=2, cuda=False, num_simulations=3, collector_env_num=1, evaluator_env_num=1,
                          cache_clear_interval=interval)
        cfg.policy.model.world_model_cfg.update(num_tasks=2, env_num=1, collector_env_num=1, evaluator_env_num=1)
        configs.append((cfg, create))
    cfgs = compile_task_configs(configs, seed=0, exp_name=str(tmp_path / "exp"), save_cfg=False)
    policy = create_policy(cfgs[0].policy, enable_field=["learn", "collect"])
    policy.set_task_configs({t: c.policy for t, c in enumerate(cfgs)})
    return policy


def _collect_step(collect, step: int) -> None:
    """One step as lightzero's UniZero collectors make it: forward, then the per-step reset (``step + 1`` steps so far)."""
    obs = torch.full((1, 4), 0.1 * step)  # a new observation each step, so each step adds cache entries
    collect.forward(obs, action_mask=[np.ones(2, dtype=np.float32)], temperature=1.0, to_play=[-1], epsilon=0.0,
                    ready_env_id=np.arange(1), timestep=np.array([step]))
    collect.reset(env_id=0, current_steps=step + 1, reset_init_data=False)


def _cached_entries(policy, task_id: int) -> int:
    world_model = policy._model.world_model
    with world_model.bind_task(task_id):
        return len(world_model.past_kv_cache_recurrent_infer) + sum(len(d) for d in world_model.past_kv_cache_init_infer_envs)


def test_collect_clears_only_the_bound_tasks_caches_every_interval(tmp_path):
    policy = _two_task_policy(tmp_path, interval=3)
    collect0, collect1 = policy.task_collect_mode(0), policy.task_collect_mode(1)
    collect1.reset()
    _collect_step(collect1, 0)
    task1_entries = _cached_entries(policy, 1)
    assert task1_entries > 0

    collect0.reset()
    sizes = []
    for step in range(6):
        _collect_step(collect0, step)
        sizes.append(_cached_entries(policy, 0))
    assert sizes[0] > 0 and sizes[1] > sizes[0]  # caches grow between clears
    assert sizes[2] == 0 and sizes[5] == 0        # and are cleared after steps 3 and 6
    assert sizes[3] > 0
    assert _cached_entries(policy, 1) == task1_entries  # the other task's caches are untouched


def test_interval_zero_never_clears(tmp_path):
    policy = _two_task_policy(tmp_path, interval=0)
    collect0 = policy.task_collect_mode(0)
    collect0.reset()
    sizes = []
    for step in range(4):
        _collect_step(collect0, step)
        sizes.append(_cached_entries(policy, 0))
    assert all(b >= a for a, b in zip(sizes, sizes[1:])) and sizes[-1] > 0
