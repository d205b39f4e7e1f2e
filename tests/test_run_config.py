"""RunConfig / TaskEnvSpec / build_task_configs: validation naming the field, per-task differences,
shared keys, unsupported lightzero keys, and every zoo config built through them."""
import argparse
import dataclasses

import pytest

from lzero_ext.entry.cli import run_keys
from lzero_ext.entry.configs import SHARED_POLICY_KEYS, TaskConfigError, _get, compile_task_configs, validate_task_configs
from lzero_ext.entry.run_config import RunConfig, RunConfigError, TaskEnvSpec, build_task_configs
from lzero_ext.envs.jericho_env import game_dir

RUN = dict(exp_name="runs/test", embed_dim=32, num_layers=1, num_heads=2, num_experts=2, num_simulations=2,
           num_unroll_steps=4, infer_context=2, game_segment_length=12, eval_freq=20, replay_buffer_size=100)


def _run(**changes) -> RunConfig:
    return RunConfig(**dict(RUN, **changes))


def _vector_task(env_id: str, *, obs: int, actions: int, batch: int, continuous: bool = False, **changes) -> TaskEnvSpec:
    return TaskEnvSpec(**dict(dict(env_type="dmc_scalezero", env_import_names=("lzero_ext.envs.dmc_env",),
                                   env=dict(env_id=env_id), observation_shape=obs, action_space_size=actions,
                                   obs_type="vector", continuous=continuous, batch_size=batch), **changes))


@pytest.mark.parametrize("field, value", [
    ("embed_dim", 0), ("num_layers", -1), ("num_heads", 0), ("num_simulations", 0), ("eval_freq", 0),
    ("embed_dim", 33),  # not divisible by num_heads=2
    ("num_unroll_steps", 3), ("game_segment_length", 8),  # < num_unroll_steps + td_steps = 9
    ("amp", "fp16"), ("vit", "huge"), ("policy_type", "muzero"), ("learning_rate", 0.0),
    ("discount_factor", 1.5), ("moe_top_k", 3), ("weight_decay", -1.0), ("diagnostics_freq", -5),
    ("dps", dict(suite="atari")), ("exp_name", ""),
])
def test_run_config_errors_name_the_field(field, value):
    with pytest.raises(RunConfigError, match=rf"RunConfig\.{field}=") as error:
        _run(**{field: value})
    assert error.value.field == field and isinstance(error.value, TaskConfigError)


@pytest.mark.parametrize("field, value", [("batch_size", 0), ("collector_env_num", 0), ("obs_type", "audio"),
                                          ("env_manager", "ray"), ("env", dict(observation_shape=3)),
                                          ("n_evaluator_episode", 0), ("action_space_size", 0)])
def test_task_env_spec_errors_name_the_field(field, value):
    with pytest.raises(RunConfigError, match=rf"TaskEnvSpec\.{field}="):
        _vector_task("a", obs=3, actions=2, batch=4, **{field: value})


def test_mixed_pair_differs_per_task_and_shares_the_rest():
    tasks = [_vector_task("cartpole-swingup", obs=5, actions=1, batch=4, continuous=True),
             _vector_task("cheetah-run", obs=17, actions=6, batch=8, continuous=True, collector_env_num=2,
                          env_manager="subprocess")]
    configs = build_task_configs(_run(policy_type="sampled_scalezero", learning_rate=3e-4,
                                      task_loss_weights=(1.0, 2.0)), tasks)
    (a, ca), (b, cb) = configs
    assert (a.policy.model.observation_shape, b.policy.model.observation_shape) == (5, 17)
    assert (a.policy.model.action_space_size, b.policy.model.action_space_size) == (1, 6)
    assert (a.policy.batch_size, b.policy.batch_size) == (4, 8)
    assert (a.env.env_id, b.env.env_id) == ("cartpole-swingup", "cheetah-run")
    assert (a.policy.model.world_model_cfg.env_num, b.policy.model.world_model_cfg.env_num) == (1, 2)
    assert (ca.env_manager.type, cb.env_manager.type) == ("base", "subprocess")
    assert (a.policy.task_id, b.policy.task_id) == (0, 1)
    for key in SHARED_POLICY_KEYS:
        assert _get(a.policy, key) == _get(b.policy, key), key
    wm = b.policy.model.world_model_cfg
    assert wm.observation_shape_list == [5, 17] and wm.action_space_size_list == [1, 6]
    assert wm.continuous_action_space and a.policy.model.continuous_action_space
    assert a.policy.learning_rate == 3e-4 and a.policy.task_num == 2
    assert a.policy.task_loss_weights == b.policy.task_loss_weights == [1.0, 2.0]
    assert ca.policy.type == cb.policy.type == "sampled_scalezero"
    assert "diagnostics_freq" not in a.policy  # None: the policy's default applies


def test_shared_key_differing_between_tasks_is_a_clear_error():
    configs = build_task_configs(_run(), [_vector_task("a", obs=3, actions=2, batch=4),
                                          _vector_task("b", obs=4, actions=2, batch=4)])
    configs[1][0].policy.learning_rate = 1e-3
    with pytest.raises(TaskConfigError, match=r"task 1 has policy\.learning_rate=0\.001"):
        validate_task_configs(configs)


def test_tasks_of_both_action_kinds_share_one_model():
    """A discrete and a continuous task: one 'scalezero' model with per-task action kinds; the continuous task's
    collector stores sampled actions (sampled_algo) and the discrete tasks share one action space."""
    tasks = [_vector_task("a", obs=3, actions=4, batch=4),
             _vector_task("b", obs=5, actions=2, batch=4, continuous=True, domain="dmc", score_kind="dmc"),
             _vector_task("c", obs=3, actions=4, batch=4)]
    (a, _), (b, cb), (c, _) = build_task_configs(_run(), tasks)
    wm = a.policy.model.world_model_cfg
    assert wm.action_type_list == ["discrete", "continuous", "discrete"] and wm.action_space_size_list == [4, 2, 4]
    assert wm.action_space_size == 4 and not wm.get("continuous_action_space")
    assert b.policy.sampled_algo and "sampled_algo" not in a.policy and cb.policy.type == "scalezero"
    assert b.policy.model.continuous_action_space and (b.policy.domain, b.policy.score_kind) == ("dmc", "dmc")
    assert "domain" not in a.policy


@pytest.mark.parametrize("run, tasks, message", [
    (dict(policy_type="sampled_scalezero"), [dict(), dict(continuous=True)], r"uses policy_type='scalezero'"),
    (dict(world_model_extras=dict(rotary_emb=True)), [dict(), dict()], r"rotary_emb=True is served by lightzero's own"),
    (dict(policy_type="sampled_scalezero"), [dict(), dict()], r"task 'a' is discrete: use policy_type='scalezero'"),
    (dict(), [dict(), dict(actions=5)], r"discrete tasks share one action space: task 'a' has 2 actions and task 'b'"),
    (dict(), [dict(), dict(env=dict(env_id="a"))], r"task name 'a' appears twice"),
])
def test_a_task_list_one_model_cannot_serve_is_one_clear_error(run, tasks, message):
    specs = [_vector_task(name, **dict(dict(obs=3, actions=2, batch=4), **changes))
             for name, changes in zip("ab", tasks)]
    with pytest.raises(TaskConfigError, match=message):
        build_task_configs(_run(**run), specs)


def test_empty_task_list_and_weights_per_task():
    with pytest.raises(TaskConfigError, match="no tasks"):
        build_task_configs(_run(), [])
    with pytest.raises(RunConfigError, match=r"RunConfig\.task_loss_weights=.*one weight per task \(2 tasks\)"):
        build_task_configs(_run(task_loss_weights=(1.0,)), [_vector_task("a", obs=3, actions=2, batch=4),
                                                            _vector_task("b", obs=3, actions=2, batch=4)])


@pytest.mark.parametrize("extras, name, bad, good, key", [
    ("policy_extras", "use_augmentation", True, False, "use_augmentation"),
    ("policy_extras", "accumulation_steps", 4, 1, "accumulation_steps"),
    ("policy_extras", "piecewise_decay_lr_scheduler", True, False, "piecewise_decay_lr_scheduler"),
    ("model_extras", "frame_stack_num", 4, 1, "model.frame_stack_num"),
    ("world_model_extras", "analysis_dormant_ratio", True, False, "model.world_model_cfg.analysis_dormant_ratio"),
])
def test_unsupported_lightzero_key_is_rejected_naming_it(extras, name, bad, good, key):
    with pytest.raises(TaskConfigError, match=rf"policy\.{key}={bad!r}"):
        _run(**{extras: {name: bad}})
    _run(**{extras: {name: good}})  # the one supported value passes


def test_per_task_unsupported_key_and_field_collisions_are_rejected():
    with pytest.raises(TaskConfigError, match=r"policy\.use_augmentation=True"):
        _vector_task("a", obs=3, actions=2, batch=4, policy_extras=dict(use_augmentation=True))
    with pytest.raises(TaskConfigError, match=r"\['batch_size'\].*use the field"):
        build_task_configs(_run(policy_extras=dict(batch_size=64)), [_vector_task("a", obs=3, actions=2, batch=4)])
    with pytest.raises(TaskConfigError, match=r"\['collector_env_num'\]"):
        build_task_configs(_run(), [_vector_task("a", obs=3, actions=2, batch=4,
                                                 env=dict(env_id="a", collector_env_num=3))])


def test_run_config_is_frozen_and_keyword_only():
    run = _run()
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.embed_dim = 64
    with pytest.raises(TypeError):
        RunConfig("runs/x")  # noqa


def _zoo_configs(suite: str, **kw):
    if suite == "atari":
        from zoo.atari.config.scalezero_multitask_config import build_configs
    elif suite == "dmc":
        from zoo.dmc.config.scalezero_dmc_multitask_config import build_configs
    elif suite == "minatar":
        from zoo.minatar.config.scalezero_minatar_multitask_config import build_configs
    else:
        if not game_dir().is_dir():
            pytest.skip("Jericho game files not found (set SCALEZERO_JERICHO_DIR)")
        from zoo.jericho.config.scalezero_jericho_multitask_config import build_configs
    return build_configs("smoke", cuda=False, **kw)


@pytest.mark.parametrize("suite", ["atari", "dmc", "jericho", "minatar"])
def test_every_zoo_config_builds_through_the_run_config(suite, tmp_path):
    """The zoo's smoke configs pass the trainer's checks and compile; the CLI's run keys reach every task."""
    args = argparse.Namespace(amp="bf16", compile=True)
    configs = _zoo_configs(suite, exp_name=str(tmp_path / "exp"), **run_keys(args))
    validate_task_configs(configs)
    compiled = compile_task_configs(configs, seed=0, exp_name=str(tmp_path / "exp"), save_cfg=False)
    assert len(compiled) == len(configs) >= 2
    for cfg in compiled:
        assert (cfg.policy.amp, cfg.policy.compile) == ("bf16", True)
    default = _zoo_configs(suite, exp_name=str(tmp_path / "exp"))
    assert "amp" not in default[0][0].policy  # not given: the policy's default
