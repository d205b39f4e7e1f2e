"""Swapping ScaleZero into lightzero's own UniZero CartPole pipeline by changing only the policy type."""
import copy
import math

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
