"""The configs of every arm of the learning benchmark, built from one :class:`RunConfig` per run.

The multi-task arms (``dense``, ``moe``, ``dps``) take one run config over all tasks of the suite;
arm ``unizero`` takes the same one-task config rewritten for lightzero's own UniZero
(:func:`lightzero_arm_config`). The classic suite is built here; the MinAtar suite's configs come from
the MinAtar zoo config (``lzero_ext.bench.learning_minatar``).
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

from easydict import EasyDict

from lzero_ext.entry.run_config import RunConfig, TaskEnvSpec, build_task_configs

TaskConfig = Tuple[EasyDict, EasyDict]
# lightzero's UniZero model with the grid encoder: arm ``unizero``'s model on MinAtar's 10x10 grids
GRID_UNIZERO_MODEL = dict(type="GridUniZeroModel", import_names=["lzero_ext.model.grid_encoder"])


def trainer_task_name(task: Any) -> str:
    """The name ``MultiTaskTrainer`` gives the task (its env id): the key of DPS targets."""
    return task.env_id.replace("/", "-")


def dps_config(tasks: Sequence[Any], settings: Any) -> Dict[str, Any]:
    """``policy.dps`` of arm ``dps``: every key explicit (suite None), targets from the tasks."""
    s = settings
    return dict(enabled=True, suite=None, num_stages=s.dps_num_stages, min_stage0_iters=s.dps_min_stage0_iters,
                max_stage_iters=s.dps_max_stage_iters, rank=s.dps_rank, alpha=s.dps_alpha, dropout=0.0,
                targets={trainer_task_name(t): t.target_return for t in tasks})


def run_configs(spec: Any) -> List[TaskConfig]:
    """The ``(main, create)`` pairs of one benchmark run (a ``learning_runs.RunSpec``): every task of a
    multi-task arm, or the one task of arm ``unizero`` as lightzero's UniZero config."""
    kw = dict(exp_name=spec.exp_name, seed=spec.seed)
    if spec.tasks[0].kind == "minatar":
        from lzero_ext.bench.learning_minatar import minatar_configs as build
    else:
        build = classic_configs
    if spec.arm == "unizero":
        (config,) = build(spec.tasks, spec.settings, moe=False, **kw)
        config = lightzero_arm_config(config)
        if spec.tasks[0].kind == "minatar":
            config[0].policy.model.update(GRID_UNIZERO_MODEL)
        return [config]
    return build(spec.tasks, spec.settings, moe=spec.arm in ("moe", "dps"), dps=spec.arm == "dps", **kw)


def classic_configs(tasks: Sequence[Any], settings: Any, *, moe: bool, exp_name: str, seed: int, dps: bool = False,
                    action_space_size: Optional[int] = None, env_manager: str = "base",
                    **run_keys: Any) -> List[TaskConfig]:
    """ScaleZero configs of a run over classic-control ``tasks`` (vector observations of per-task sizes, one
    discrete action space of ``action_space_size``, default the largest task's, actions beyond a task's own
    masked); ``dps`` turns on Dynamic Parameter Scaling (:func:`dps_config`); ``run_keys`` are further
    :class:`RunConfig` fields (``engine``, ``amp``, ``compile``)."""
    s = settings
    actions = action_space_size or max(t.num_actions for t in tasks)
    run = RunConfig(
        exp_name=exp_name, seed=seed, embed_dim=s.embed_dim, num_layers=s.num_layers, num_heads=s.num_heads,
        dense=not moe, num_experts=s.num_experts, predict_latent_loss_type=None,
        num_simulations=s.num_simulations, num_unroll_steps=s.num_unroll_steps, infer_context=s.infer_context,
        td_steps=s.td_steps, game_segment_length=s.game_segment_length, learning_rate=s.learning_rate,
        weight_decay=None, grad_clip_value=None, replay_ratio=None, update_per_collect=s.updates_per_round,
        diagnostics_freq=s.diagnostics_freq if len(tasks) > 1 else 0, dps=dps_config(tasks, s) if dps else None,
        eval_freq=s.eval_freq, replay_buffer_size=int(1e6),
        policy_extras=dict(manual_temperature_decay=False, fixed_temperature_value=s.collect_temperature,
                           use_augmentation=False, env_type="not_board_games", reanalyze_ratio=0.0),
        model_extras=dict(norm_type="LN", self_supervised_learning_loss=True, discrete_action_encoding_type="one_hot"),
        world_model_extras=dict(norm_type="LN"), **run_keys)
    specs = [TaskEnvSpec(
        env_type="classic_control_scalezero", env_import_names=("lzero_ext.envs.classic_control_env",),
        env=dict(task.env_config(), action_space_size=actions,
                 stop_value=float("inf")),  # never stop early: every arm spends the whole budget
        observation_shape=task.obs_dim, action_space_size=actions, obs_type="vector", batch_size=s.batch_size,
        collector_env_num=s.collector_env_num, evaluator_env_num=s.evaluator_env_num, env_manager=env_manager,
        # MCTS visit counts cover the legal actions only; with padded (masked) actions the replay buffer must map
        # them back into the shared action space.
        policy_extras=dict(action_type="fixed_action_space" if task.num_actions == actions else "varied_action_space"),
    ) for task in tasks]
    return build_task_configs(run, specs)


def lightzero_arm_config(config: TaskConfig) -> TaskConfig:
    """A one-task ScaleZero config as lightzero's UniZero for ``train_unizero_segment``: policy ``unizero``,
    this project's keys removed, and the entry's reanalysis keys added."""
    from lzero_ext.bench.common import lightzero_unizero_config

    main, create = lightzero_unizero_config(config)
    for key in ("diagnostics_freq", "dps"):
        main.policy.pop(key, None)
    # Keys train_unizero_segment reads that UniZeroPolicy's config lacks; reanalysis of the whole buffer is
    # effectively off (once per 1e5 collection rounds), as in our trainer.
    main.policy.update(buffer_reanalyze_freq=1e-5, reanalyze_batch_size=160, reanalyze_partition=0.75)
    return main, create
