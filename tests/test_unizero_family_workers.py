"""lightzero's collectors and evaluator make their per-step UniZero cache call for ScaleZero policies
(``lzero_ext.workers``), and the policy clears its KV caches on it every ``cache_clear_interval`` steps: lightzero's
own caches on lightzero's route (``policy.collect_mode``, RoPE as in lightzero's CartPole config), the task's rows
of the batched KV cache on the task-bound interfaces of the lockstep engine."""
import copy
from functools import partial

import pytest
from ding.envs import create_env_manager, get_vec_env_setting
from ding.policy import create_policy
from lzero.worker import MuZeroCollector, MuZeroEvaluator, MuZeroSegmentCollector

import lzero_ext  # noqa: F401
import policies  # noqa: F401  (registers scalezero, sampled_scalezero)
from lzero_ext.collector import MaskAwareSegmentCollector
from lzero_ext.entry.configs import compile_task_configs
from lzero_ext.workers import (FamilyTypedConfig, UniZeroFamilyCollector, UniZeroFamilyEvaluator,
                               UniZeroFamilySegmentCollector, family_typed, unizero_family_type)

INTERVAL = 4


def test_family_types_come_from_the_registry():
    assert unizero_family_type("unizero") == "unizero"
    assert unizero_family_type("scalezero") == "unizero"
    assert unizero_family_type("sampled_scalezero") == "sampled_unizero"
    assert unizero_family_type("muzero") is None
    with pytest.raises(KeyError):
        unizero_family_type("no_such_policy")


def _policy_and_cfg(tmp_path, rotary: bool = True):
    from zoo.classic_control.cartpole.config.cartpole_unizero_config import create_config, main_config

    cfg, create = copy.deepcopy(main_config), copy.deepcopy(create_config)
    create.policy.update(type="scalezero", import_names=["policies.scalezero"])
    create.env_manager.type = "base"
    cfg.env.update(collector_env_num=1, evaluator_env_num=1, n_evaluator_episode=1)
    cfg.policy.update(cuda=False, num_simulations=2, collector_env_num=1, evaluator_env_num=1, num_segments=1,
                      game_segment_length=12, cache_clear_interval=INTERVAL)
    cfg.policy.model.world_model_cfg.update(env_num=1, collector_env_num=1, evaluator_env_num=1, rotary_emb=rotary)
    (compiled,) = compile_task_configs([(cfg, create)], seed=0, exp_name=str(tmp_path / "exp"), save_cfg=False)
    policy = create_policy(compiled.policy, enable_field=["learn", "collect", "eval"])
    policy.set_task_configs({0: compiled.policy})
    return policy, compiled


def _env_manager(cfg, evaluator: bool):
    env_fn, collector_cfgs, evaluator_cfgs = get_vec_env_setting(cfg.env)
    manager = create_env_manager(cfg.env.manager, [partial(env_fn, cfg=c) for c in
                                                   (evaluator_cfgs if evaluator else collector_cfgs)])
    manager.seed(0, dynamic_seed=False)
    return manager


def test_the_policy_view_answers_the_family_type_and_nothing_else(tmp_path):
    policy, cfg = _policy_and_cfg(tmp_path)
    view = family_typed(policy.task_collect_mode(0))
    seen = view.get_attribute("cfg")
    assert isinstance(seen, FamilyTypedConfig) and seen.type == "unizero" and seen["type"] == "unizero"
    assert seen.get("num_segments") == cfg.policy.num_segments and seen.collector_env_num == 1
    assert policy._cfg.type == "scalezero"  # the policy's own config is untouched


def _run(worker_cls, policy, cfg, tmp_path, bound: bool = False):
    """One collect round (or one evaluation) of ``worker_cls``: through lightzero's own interface, or (``bound``)
    the task-bound one in a lockstep round, as the trainer runs it."""
    evaluator = issubclass(worker_cls, MuZeroEvaluator)
    common = dict(env=_env_manager(cfg, evaluator), tb_logger=None, exp_name=str(tmp_path / "exp"),
                  policy_config=cfg.policy)
    if evaluator:
        worker = worker_cls(eval_freq=1, n_evaluator_episode=1, stop_value=1e9,
                            policy=policy.task_eval_mode(0) if bound else policy.eval_mode, **common)
        run = partial(worker.eval, None, 0, 0)
    else:
        worker = worker_cls(policy=policy.task_collect_mode(0) if bound else policy.collect_mode, **common)
        run = partial(worker.collect, train_iter=0, policy_kwargs={"temperature": 1.0, "epsilon": 0.0})
    try:
        if bound:
            policy.run_workers("eval" if evaluator else "collect", {0: run})
        else:
            run()
        return worker.envstep if not evaluator else None
    finally:
        worker.close()


def _count_clears(policy, monkeypatch):
    """Counts the world model's cache clears."""
    calls = {"world_model": 0}
    world_model = policy._model.world_model
    clear = world_model.clear_caches

    def counted_clear():
        calls["world_model"] += 1
        clear()

    monkeypatch.setattr(world_model, "clear_caches", counted_clear)
    return calls


@pytest.mark.parametrize("worker_cls", [UniZeroFamilySegmentCollector, MaskAwareSegmentCollector,
                                        UniZeroFamilyCollector, UniZeroFamilyEvaluator])
def test_lightzero_workers_clear_scalezero_caches_per_episode_step(worker_cls, tmp_path, monkeypatch):
    policy, cfg = _policy_and_cfg(tmp_path)
    calls = _count_clears(policy, monkeypatch)
    resets = []
    reset_state = policy._reset_lightzero_state
    monkeypatch.setattr(policy, "_reset_lightzero_state",
                        lambda env_num, env_id, steps, init: (resets.append((env_id, steps, init)),
                                                              reset_state(env_num, env_id, steps, init)))
    _run(worker_cls, policy, cfg, tmp_path)
    per_step = [steps for env_id, steps, init in resets if env_id == 0 and not init]
    assert len(per_step) >= INTERVAL and per_step[:INTERVAL] == list(range(1, INTERVAL + 1))
    assert calls["world_model"] == sum(1 for steps in per_step if steps % INTERVAL == 0) > 0


@pytest.mark.parametrize("worker_cls", [MuZeroSegmentCollector, MuZeroCollector, MuZeroEvaluator])
def test_lightzero_own_workers_skip_the_call_for_scalezero(worker_cls, tmp_path, monkeypatch):
    """What the workers above fix: lightzero's own workers gate the call on the policy's type name."""
    policy, cfg = _policy_and_cfg(tmp_path)
    calls = _count_clears(policy, monkeypatch)
    _run(worker_cls, policy, cfg, tmp_path)
    assert calls["world_model"] == 0


def test_batched_engine_drops_the_tasks_batched_cache_rows(tmp_path, monkeypatch):
    policy, cfg = _policy_and_cfg(tmp_path, rotary=False)
    invalidated = []
    cache = policy._inference_cache("collect")
    invalidate = cache.invalidate
    monkeypatch.setattr(cache, "invalidate", lambda task_id=None: (invalidated.append(task_id), invalidate(task_id)))
    steps = _run(MaskAwareSegmentCollector, policy, cfg, tmp_path, bound=True)
    assert steps >= INTERVAL and invalidated and set(invalidated) == {0}
