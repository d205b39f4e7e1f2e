"""Swapping ScaleZero into lightzero's own UniZero pipelines (CartPole, Atari) by changing only the policy type."""
import copy
import math
import re

import pytest

import lzero_ext  # noqa: F401
from lzero_ext.entry import config_from_main, train_scalezero

# What lightzero / ding print on a run: optimizer groups, env spaces, worker chatter, result tables.
LIGHTZERO_NOISE = re.compile(r"num decayed|fused AdamW|INFO|Env Space|collected|clear_interval|\+-------|Traceback")


def test_lightzero_cartpole_unizero_config_trains_with_scalezero(tmp_path, monkeypatch, capsys):
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
    # a quiet console: the project's lines and the table; lightzero's prints and log records are in the log file
    console = capsys.readouterr()
    assert not LIGHTZERO_NOISE.search(console.out + console.err), console
    assert "[eval] CartPole-v0" in console.err and "CartPole-v0" in console.out
    log = (tmp_path / "swap" / "log" / "console.log").read_text()
    assert all(line in log for line in ("num decayed parameter tensors", "eval_episode_return", "collected"))


def test_lightzero_atari_unizero_config_built_in_main_is_captured():
    """lightzero's Atari config builds itself inside main(); config_from_main hands back the pair, nothing trains."""
    from zoo.atari.config import atari_unizero_config

    import lzero.entry

    entry = lzero.entry.train_unizero
    main_config, create_config = config_from_main(atari_unizero_config.main, env_id="BreakoutNoFrameskip-v4", seed=3)
    assert main_config.env.env_id == "BreakoutNoFrameskip-v4" and main_config.policy.model.action_space_size == 4
    assert create_config.policy.type == "unizero" and create_config.env.type == "atari_lightzero"
    assert lzero.entry.train_unizero is entry  # lightzero's entry is back
    with pytest.raises(RuntimeError, match="without calling"):
        config_from_main(lambda: None)


@pytest.mark.slow
def test_lightzero_atari_unizero_config_trains_with_scalezero(tmp_path, monkeypatch, capsys):
    """lightzero's own Atari UniZero config (its env, its 768-wide two-layer world model), policy swapped."""
    monkeypatch.chdir(tmp_path)
    from zoo.atari.config import atari_unizero_config

    cfg, create = config_from_main(atari_unizero_config.main, env_id="PongNoFrameskip-v4")
    create.policy.type = "scalezero"  # the swap: these two keys only
    create.policy.import_names = ["policies.scalezero"]
    # a tiny budget (not part of the swap): 2 collector envs, 40-step episodes, 4 simulations
    cfg.env.update(collector_env_num=2, evaluator_env_num=1, n_evaluator_episode=1, collect_max_episode_steps=40,
                   eval_max_episode_steps=40)
    cfg.policy.update(collector_env_num=2, evaluator_env_num=1, num_segments=2, num_simulations=4, batch_size=8)
    cfg.policy.model.world_model_cfg.update(env_num=2)

    result = train_scalezero([(cfg, create)], max_env_step=120, max_train_iter=2, exp_name="pong")
    assert result.train_iter == 2 and math.isfinite(result.last_learn_log["task0/loss_total"])
    assert result.policy._model.world_model.config.embed_dim == 768
    console = capsys.readouterr()
    assert not LIGHTZERO_NOISE.search(console.out + console.err) and "Stella" not in console.err, console


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
