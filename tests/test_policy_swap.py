"""Swapping ScaleZero into lightzero's own UniZero CartPole pipeline by changing only the policy type."""
import copy
import math

import pytest

import lzero_ext  # noqa: F401
from lzero_ext.entry import train_scalezero


def test_lightzero_cartpole_unizero_config_trains_with_scalezero(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from zoo.classic_control.cartpole.config.cartpole_unizero_config import create_config, main_config

    cfg, create = copy.deepcopy(main_config), copy.deepcopy(create_config)
    create.policy.type = "scalezero"  # the swap: these two keys only
    create.policy.import_names = ["policies.scalezero"]
    # a tiny budget (not part of the swap)
    cfg.env.update(collector_env_num=2, evaluator_env_num=1, n_evaluator_episode=1)
    cfg.policy.update(collector_env_num=2, evaluator_env_num=1, num_segments=2, cuda=False, num_simulations=5,
                      batch_size=16, eval_freq=1000)
    cfg.policy.model.world_model_cfg.update(env_num=2, collector_env_num=2, evaluator_env_num=1)
    create.env_manager.type = "base"

    result = train_scalezero([(cfg, create)], max_env_step=300, max_train_iter=4, exp_name="swap", progress=False)
    assert result.train_iter == 4
    assert type(result.policy).__name__ == "ScaleZeroPolicy"
    assert type(result.policy._model._orig_mod if hasattr(result.policy._model, "_orig_mod") else result.policy._model).__name__ == "ScaleZeroModel"
    assert math.isfinite(result.last_learn_log["task0/loss_total"])
    (row,) = result.summary["tasks"]
    assert row["name"] == "CartPole-v0" and row["eval_return"] >= 1


def _tiny_swapped_cartpole():
    from zoo.classic_control.cartpole.config.cartpole_unizero_config import create_config, main_config

    cfg, create = copy.deepcopy(main_config), copy.deepcopy(create_config)
    create.policy.type = "scalezero"
    create.policy.import_names = ["policies.scalezero"]
    cfg.env.update(collector_env_num=1, evaluator_env_num=1, n_evaluator_episode=1)
    cfg.policy.update(collector_env_num=1, evaluator_env_num=1, num_segments=1, cuda=False, num_simulations=3,
                      batch_size=8, eval_freq=1000)
    cfg.policy.model.world_model_cfg.update(env_num=1, collector_env_num=1, evaluator_env_num=1)
    create.env_manager.type = "base"
    return cfg, create


def test_lightzero_train_unizero_still_rejects_other_policy_types(tmp_path, monkeypatch):
    """The blocker documented in docs/policy_swap.md: if lightzero drops its assert, this fails and the docs change."""
    monkeypatch.chdir(tmp_path)
    from lzero.entry import train_unizero as lightzero_train_unizero

    with pytest.raises(AssertionError, match="only supports"):
        lightzero_train_unizero(list(_tiny_swapped_cartpole()), max_train_iter=1)


def test_drop_in_train_unizero_runs_the_swapped_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from lzero_ext.entry import train_unizero

    policy = train_unizero(list(_tiny_swapped_cartpole()), seed=0, max_env_step=200, max_train_iter=2)
    assert type(policy).__name__ == "ScaleZeroPolicy"
    cfg, create = _tiny_swapped_cartpole()
    create.policy.type = "muzero"
    with pytest.raises(ValueError, match="runs policy types"):
        train_unizero([cfg, create])
