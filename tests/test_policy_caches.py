"""The task-bound collect interface drops the task's stored contexts (its rows of the batched KV cache) every
``cache_clear_interval`` episode steps, on the per-step ``reset(env_id, current_steps, reset_init_data=False)``
call of lightzero's UniZero workers, and leaves the other tasks' alone."""
import copy

import numpy as np
import torch
from ding.policy import create_policy

import lzero_ext  # noqa: F401
from lzero_ext.entry.configs import compile_task_configs


def _two_task_policy(tmp_path, interval: int, rotary: bool = False):
    from zoo.classic_control.cartpole.config.cartpole_unizero_config import create_config, main_config

    configs = []
    for task_id in range(2):
        cfg, create = copy.deepcopy(main_config), copy.deepcopy(create_config)
        create.policy.update(type="scalezero", import_names=["policies.scalezero"])
        cfg.policy.update(task_num=2, cuda=False, num_simulations=3, collector_env_num=1, evaluator_env_num=1,
                          cache_clear_interval=interval)
        cfg.policy.model.world_model_cfg.update(num_tasks=2, env_num=1, collector_env_num=1, evaluator_env_num=1,
                                                rotary_emb=rotary)  # lightzero's CartPole config uses RoPE
        configs.append((cfg, create))
    cfgs = compile_task_configs(configs, seed=0, exp_name=str(tmp_path / "exp"), save_cfg=False)
    policy = create_policy(cfgs[0].policy, enable_field=["learn", "collect"])
    policy.set_task_configs({t: c.policy for t, c in enumerate(cfgs)})
    return policy


def _collect_step(collect, step: int) -> None:
    """One step as lightzero's UniZero collectors make it: forward, then the per-step reset (``step + 1`` steps so far)."""
    obs = torch.full((1, 4), 0.1 * step)
    output = collect.forward(obs, action_mask=[np.ones(2, dtype=np.float32)], temperature=1.0, to_play=[-1],
                             epsilon=0.0, ready_env_id=np.arange(1), timestep=np.array([step]))
    assert set(output) == {0} and output[0]["action"] in (0, 1)
    collect.reset(env_id=0, current_steps=step + 1, reset_init_data=False)


def _stored(policy, task_id: int) -> bool:
    """Whether env 0 of ``task_id`` has a stored context to continue from."""
    cache = policy._inference_cache("collect")
    return bool(cache.root_valid[cache.slots([task_id], [0])][0])


def test_collect_drops_only_the_tasks_contexts_every_interval(tmp_path):
    policy = _two_task_policy(tmp_path, interval=3)
    collect0, collect1 = policy.task_collect_mode(0), policy.task_collect_mode(1)
    collect1.reset()
    _collect_step(collect1, 0)
    assert _stored(policy, 1)

    collect0.reset()
    stored = []
    for step in range(6):
        _collect_step(collect0, step)
        stored.append(_stored(policy, 0))
    assert stored == [True, True, False, True, True, False]  # dropped after steps 3 and 6
    assert _stored(policy, 1)  # the other task keeps its context


def test_interval_zero_never_drops(tmp_path):
    policy = _two_task_policy(tmp_path, interval=0)
    collect0 = policy.task_collect_mode(0)
    collect0.reset()
    stored = []
    for step in range(4):
        _collect_step(collect0, step)
        stored.append(_stored(policy, 0))
    assert all(stored)


def test_reset_forgets_the_tasks_last_observations_only(tmp_path):
    policy = _two_task_policy(tmp_path, interval=0)
    collect0, collect1 = policy.task_collect_mode(0), policy.task_collect_mode(1)
    for collect in (collect0, collect1):
        collect.reset()
        _collect_step(collect, 1)
    assert policy._task_state(0, "collect")["last_batch_action"] != [-1]
    collect0.reset([0])  # lightzero's call at an episode end
    assert policy._task_state(0, "collect")["last_batch_action"] == [-1]
    assert torch.count_nonzero(policy._task_state(0, "collect")["last_batch_obs"]) == 0
    assert policy._task_state(1, "collect")["last_batch_action"] != [-1]


def test_a_multi_task_model_with_rotary_embeddings_is_refused(tmp_path):
    """RoPE is served by lightzero's own single-task code only; the batched engine uses absolute positions."""
    import pytest

    with pytest.raises(ValueError, match=r"rotary_emb / analysis_dormant_ratio .*task_num=2"):
        _two_task_policy(tmp_path, interval=0, rotary=True)
