"""One run config: the settings every task of a multi-task run shares, and the per-task env specs.

A multi-task run trains one model with one learner, so its sizes, search, unroll and learner settings
exist once (:class:`RunConfig`); a task only brings what truly differs (:class:`TaskEnvSpec`: its env,
observation and action sizes, batch and env counts). :func:`build_task_configs` turns both into the
LightZero ``(main_config, create_config)`` pairs the trainer takes, one per task, and checks them with
:func:`~lzero_ext.entry.configs.validate_task_configs` (docs/architecture.md, "One run config").

Example::

    >>> from lzero_ext.entry.run_config import RunConfig, TaskEnvSpec, build_task_configs
    >>> run = RunConfig(exp_name="runs/two_games", embed_dim=32, num_layers=1, num_heads=2, num_experts=2,
    ...                 num_simulations=2, num_unroll_steps=4, infer_context=2, game_segment_length=12,
    ...                 eval_freq=20, replay_buffer_size=2000)
    >>> games = [TaskEnvSpec(env_type="atari_scalezero", env_import_names=("lzero_ext.envs.atari_env",),
    ...                      env=dict(env_id=g, observation_shape=(3, 64, 64), full_action_space=True),
    ...                      observation_shape=(3, 64, 64), action_space_size=18, obs_type="image", batch_size=4)
    ...          for g in ("Pong", "Breakout")]
    >>> [main.env.env_id for main, _ in build_task_configs(run, games)]
    ['Pong', 'Breakout']
"""
import copy
from dataclasses import dataclass, field
from typing import Any, FrozenSet, List, Mapping, Optional, Sequence, Tuple, Union

from easydict import EasyDict

from lzero_ext.entry.configs import (MIN_UNROLL_STEPS, UNSUPPORTED_POLICY_KEYS, TaskConfig, TaskConfigError,
                                     validate_task_configs)

POLICY_TYPES: FrozenSet[str] = frozenset({"scalezero", "sampled_scalezero"})
OBS_TYPES: FrozenSet[str] = frozenset({"image", "vector", "text"})
ENV_MANAGERS: FrozenSet[str] = frozenset({"base", "subprocess"})
POLICY_IMPORT_NAMES = ["policies.scalezero"]


class RunConfigError(TaskConfigError):
    """A :class:`RunConfig` or :class:`TaskEnvSpec` field holds an invalid value; ``field`` names it."""

    def __init__(self, owner: str, name: str, value: Any, reason: str) -> None:
        self.field = name
        super().__init__(f"{owner}.{name}={value!r}: {reason}")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything shared by all tasks of one run (one model, one search, one learner).

    ``None`` in an optional field means "not written": the registered policy's default applies
    (``policies/scalezero.py``), so each default lives in one place.
    """

    # -- run
    exp_name: str  # experiment directory; every task's exp_name
    cuda: bool = False  # train on CUDA (the trainer falls back to CPU without a device)
    seed: Optional[int] = None  # main_config.seed (the trainer's seed argument decides otherwise)
    # registered policy: 'scalezero' (discrete, or both kinds) or 'sampled_scalezero' (continuous); None: by the tasks
    policy_type: Optional[str] = None
    # -- model: one transformer world model (the ScaleZero paper, arXiv 2509.07945)
    embed_dim: int  # transformer width; a multiple of num_heads
    num_layers: int  # transformer blocks
    num_heads: int  # attention heads per block
    dense: bool = False  # dense FFN instead of MoE: the multi-task UniZero baseline
    num_experts: int = 8  # routed MoE experts per block
    moe_top_k: int = 1  # routed experts per token
    num_shared_experts: int = 1  # always-on shared experts per block
    vit: Optional[str] = None  # image encoder: a ViT size of lzero_ext.model.vit_encoder.VIT_SIZES; None: lightzero's ResNet
    predict_latent_loss_type: Optional[str] = "mse"  # next-latent loss (MSE with LayerNorm latents, the paper)
    # -- search and unroll
    num_simulations: int  # MCTS simulations per step
    num_unroll_steps: int  # world-model unroll in training (>= 4: lightzero's loss logging)
    infer_context: int  # steps of context the inference KV cache keeps
    td_steps: int = 5  # n of the n-step value target
    discount_factor: float = 0.997  # reward discount
    game_segment_length: int  # steps per stored game segment (>= num_unroll_steps + td_steps)
    # -- learner (one optimizer, one clip, one target model serve every task)
    learning_rate: float = 1e-4  # AdamW learning rate
    weight_decay: Optional[float] = 1e-2  # AdamW weight decay
    grad_clip_value: Optional[float] = 5  # gradient-norm clip, after averaging across ranks
    replay_ratio: Optional[float] = 0.25  # learner steps per collected transition
    update_per_collect: Optional[int] = None  # fixed learner steps per collection round (overrides replay_ratio)
    target_update_theta: Optional[float] = None  # momentum of the target model's update
    cos_lr_scheduler: Optional[bool] = None  # cosine learning-rate decay
    task_loss_weights: Optional[Tuple[float, ...]] = None  # per-task weights of the summed loss
    diagnostics_freq: Optional[int] = None  # learn steps between diagnostics (0: off)
    cache_clear_interval: Optional[int] = None  # env steps between KV-cache clears of a task
    eval_env_step_fractions: Optional[Tuple[float, ...]] = None  # evaluate at these fractions of the env-step budget
    final_eval_episodes: Optional[int] = None  # episodes of each task's final evaluation
    initial_eval: Optional[bool] = None  # the baseline evaluation before training
    collect_env_steps_per_round: Optional[int] = None  # env steps every task collects per round
    amp: Optional[str] = None  # 'off' or 'bf16' autocast (lzero_ext.amp)
    compile: Optional[bool] = None  # torch.compile the world model
    dps: Optional[Mapping[str, Any]] = None  # policy.dps: Dynamic Parameter Scaling (docs/dps.md)
    # -- evaluation and replay
    eval_freq: int  # learner iterations between evaluations
    replay_buffer_size: int  # transitions kept per task
    # -- suite-specific lightzero keys with no field of their own (e.g. a grid encoder's channels)
    policy_extras: Mapping[str, Any] = field(default_factory=dict)  # under main_config.policy
    model_extras: Mapping[str, Any] = field(default_factory=dict)  # under policy.model
    world_model_extras: Mapping[str, Any] = field(default_factory=dict)  # under policy.model.world_model_cfg

    def __post_init__(self) -> None:
        from lzero_ext.amp import AMP_MODES
        from lzero_ext.model.vit_encoder import VIT_SIZES

        bad = lambda name, reason: RunConfigError("RunConfig", name, getattr(self, name), reason)  # noqa: E731
        if not self.exp_name:
            raise bad("exp_name", "an experiment directory is needed")
        for name in ("embed_dim", "num_layers", "num_heads", "num_experts", "moe_top_k", "num_simulations",
                     "infer_context", "td_steps", "game_segment_length", "eval_freq", "replay_buffer_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        if self.num_shared_experts < 0:
            raise bad("num_shared_experts", "must be >= 0")
        if self.embed_dim % self.num_heads:
            raise bad("embed_dim", f"must be divisible by num_heads={self.num_heads}")
        if self.moe_top_k > self.num_experts:
            raise bad("moe_top_k", f"must be <= num_experts={self.num_experts}")
        if self.num_unroll_steps < MIN_UNROLL_STEPS:
            raise bad("num_unroll_steps", f"must be >= {MIN_UNROLL_STEPS} (lightzero 0.2.0's loss logging indexes the unroll)")
        if self.game_segment_length < self.num_unroll_steps + self.td_steps:
            raise bad("game_segment_length", f"must be >= num_unroll_steps + td_steps = {self.num_unroll_steps + self.td_steps} "
                      "(the replay buffer needs whole unroll+TD windows inside one segment)")
        if not 0 < self.discount_factor <= 1:
            raise bad("discount_factor", "must be in (0, 1]")
        if not self.learning_rate > 0:
            raise bad("learning_rate", "must be > 0")
        for name in ("weight_decay", "grad_clip_value", "replay_ratio", "target_update_theta"):
            if getattr(self, name) is not None and not getattr(self, name) >= 0:
                raise bad(name, "must be >= 0")
        if self.eval_env_step_fractions is not None and not all(
                isinstance(f, (int, float)) and 0 < f < 1 for f in self.eval_env_step_fractions):
            raise bad("eval_env_step_fractions", "must be fractions strictly between 0 and 1 (the baseline and the "
                                                 "final evaluation always run)")
        for name in ("final_eval_episodes", "collect_env_steps_per_round"):
            if getattr(self, name) is not None and (not isinstance(getattr(self, name), int) or getattr(self, name) < 1):
                raise bad(name, "must be a positive integer")
        for name in ("update_per_collect", "diagnostics_freq", "cache_clear_interval"):
            if getattr(self, name) is not None and (not isinstance(getattr(self, name), int) or getattr(self, name) < 0):
                raise bad(name, "must be a non-negative integer")
        _check_choice(self, "policy_type", POLICY_TYPES, optional=True)
        _check_choice(self, "amp", AMP_MODES, optional=True)
        _check_choice(self, "vit", frozenset(VIT_SIZES), optional=True)
        if self.dps is not None and not isinstance(self.dps.get("enabled"), bool):
            raise bad("dps", "must be a policy.dps mapping with a boolean 'enabled' (docs/dps.md)")
        for name, prefix in (("policy_extras", ""), ("model_extras", "model."),
                             ("world_model_extras", "model.world_model_cfg.")):
            check_extras("RunConfig", name, getattr(self, name), prefix)
        if self.world_model_extras.get("rotary_emb", False):  # the batched KV cache and forwards: absolute positions
            raise bad("world_model_extras", "rotary_emb=True is served by lightzero's own single-task route only "
                                            "(docs/policy_swap.md); the multi-task engine uses absolute position embeddings")


@dataclass(frozen=True, kw_only=True)
class TaskEnvSpec:
    """What differs per task: its env, observation and action sizes, batch and env counts."""

    env_type: str  # env in ding's ENV_REGISTRY, e.g. 'atari_scalezero'
    env_import_names: Tuple[str, ...]  # modules that register env_type
    env: Mapping[str, Any]  # the env's own keys (env_id first of all; observation shape, episode cap, games_dir ...)
    observation_shape: Union[int, Tuple[int, ...]]  # this task's observation: (C, H, W), a vector size or tokens
    action_space_size: int  # discrete actions (shared width, masked) or continuous action dims
    obs_type: str  # 'image', 'vector' or 'text'; tasks of several types share one model (docs/architecture.md)
    continuous: bool = False  # continuous actions (sampled MCTS, per-task Gaussian heads); may differ across tasks
    batch_size: int  # replay samples per learn step of this task
    collector_env_num: int = 1  # collector envs
    evaluator_env_num: int = 1  # evaluator envs
    n_evaluator_episode: Optional[int] = None  # episodes per evaluation; None: evaluator_env_num
    env_manager: str = "base"  # ding env manager: 'base' or 'subprocess'
    policy_extras: Mapping[str, Any] = field(default_factory=dict)  # per-task policy keys (e.g. a masked action_type)
    model_extras: Mapping[str, Any] = field(default_factory=dict)  # per-task policy.model keys (e.g. image_channel)
    domain: Optional[str] = None  # the task's benchmark in a run over several ('atari', 'dmc', ...): summary groups
    score_kind: Optional[str] = None  # its summary score ('atari' HNS, 'dmc' return/1000, 'raw'); None: the run's

    def __post_init__(self) -> None:
        bad = lambda name, reason: RunConfigError("TaskEnvSpec", name, getattr(self, name), reason)  # noqa: E731
        if not self.env_type:
            raise bad("env_type", "an env type registered in ding's ENV_REGISTRY is needed")
        if "env_id" not in self.env:
            raise bad("env", "must hold the task's 'env_id'")
        for name in ("action_space_size", "batch_size", "collector_env_num", "evaluator_env_num"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        if self.n_evaluator_episode is not None and self.n_evaluator_episode < self.evaluator_env_num:
            raise bad("n_evaluator_episode", f"must be at least evaluator_env_num={self.evaluator_env_num} (every "
                                             f"evaluator env plays an episode; ding's evaluator refuses fewer)")
        _check_choice(self, "obs_type", OBS_TYPES)
        _check_choice(self, "env_manager", ENV_MANAGERS)
        _check_choice(self, "score_kind", _score_kinds(), optional=True)
        check_extras("TaskEnvSpec", "policy_extras", self.policy_extras, "")
        check_extras("TaskEnvSpec", "model_extras", self.model_extras, "model.")

    @property
    def name(self) -> str:
        """The task's name in logs, checkpoints and the summary: its env id, '/' as '-' (as the trainer names it)."""
        return str(self.env["env_id"]).replace("/", "-")

    @property
    def env_num(self) -> int:
        return max(self.collector_env_num, self.evaluator_env_num)


def check_extras(owner: str, name: str, extras: Mapping[str, Any], prefix: str) -> None:
    """Rejects an extra lightzero key the multi-task learn step does not honour (``UNSUPPORTED_POLICY_KEYS``)."""
    for key, value in extras.items():
        supported = UNSUPPORTED_POLICY_KEYS.get(prefix + key, value)
        if value != supported:
            raise TaskConfigError(f"{owner}.{name} sets policy.{prefix}{key}={value!r}; ScaleZero's multi-task learn "
                                  f"step does not implement it (only {supported!r})")


def _check_choice(obj: Any, name: str, choices: FrozenSet[Any], *, optional: bool = False) -> None:
    value = getattr(obj, name)
    if not (optional and value is None) and value not in choices:
        raise RunConfigError(type(obj).__name__, name, value, f"choose from {sorted(choices)}")


def _score_kinds() -> FrozenSet[str]:
    from lzero_ext.summary import KINDS

    return KINDS


# Optional RunConfig learner fields, written under main_config.policy when set.
_OPTIONAL_POLICY_FIELDS = ("weight_decay", "grad_clip_value", "replay_ratio", "update_per_collect", "target_update_theta",
                           "cos_lr_scheduler", "diagnostics_freq", "cache_clear_interval", "amp", "compile",
                           "eval_env_step_fractions", "final_eval_episodes", "initial_eval",
                           "collect_env_steps_per_round")


def build_task_configs(run: RunConfig, tasks: Sequence[TaskEnvSpec]) -> List[TaskConfig]:
    """Every task's LightZero ``(main_config, create_config)`` pair (EasyDicts), checked by
    :func:`~lzero_ext.entry.configs.validate_task_configs`. Raises :class:`TaskConfigError` naming the
    task and key when the tasks cannot share one model."""
    tasks = list(tasks)
    if not tasks:
        raise TaskConfigError("no tasks given: a multi-task run needs at least one TaskEnvSpec")
    check_mixed_tasks(run, tasks)
    if run.task_loss_weights is not None and len(run.task_loss_weights) != len(tasks):
        raise RunConfigError("RunConfig", "task_loss_weights", run.task_loss_weights,
                             f"needs one weight per task ({len(tasks)} tasks)")
    configs = [_task_config(run, task, task_id, tasks) for task_id, task in enumerate(tasks)]
    validate_task_configs(configs)
    return configs


def mixes_action_kinds(tasks: Sequence[TaskEnvSpec]) -> bool:
    return len({t.continuous for t in tasks}) > 1


def policy_type(run: RunConfig, tasks: Sequence[TaskEnvSpec]) -> str:
    """The run's registered policy: ``run.policy_type``, else 'sampled_scalezero' when every task is continuous
    and 'scalezero' otherwise (discrete tasks, or both kinds in one model)."""
    if run.policy_type is not None:
        return run.policy_type
    return "sampled_scalezero" if all(t.continuous for t in tasks) else "scalezero"


def check_mixed_tasks(run: RunConfig, tasks: Sequence[TaskEnvSpec]) -> None:
    """Raises a one-line :class:`TaskConfigError` naming the first task that one model of these tasks cannot serve."""
    names = [t.name for t in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TaskConfigError(f"task name {duplicates[0]!r} appears twice (e.g. one game in two domains): every task "
                              f"of a run needs its own name for its buffer, checkpoint and summary row")
    discrete = [t for t in tasks if not t.continuous]
    if mixes_action_kinds(tasks):
        continuous = next(t for t in tasks if t.continuous)
        if run.policy_type not in (None, "scalezero"):
            raise TaskConfigError(f"task {continuous.name!r} is continuous and task {discrete[0].name!r} discrete: "
                                  f"a run of both kinds uses policy_type='scalezero' (got {run.policy_type!r})")
    elif run.policy_type is not None and tasks[0].continuous != (run.policy_type == "sampled_scalezero"):
        raise TaskConfigError(f"task {tasks[0].name!r} is {'continuous' if tasks[0].continuous else 'discrete'}: "
                              f"use policy_type={'sampled_scalezero' if tasks[0].continuous else 'scalezero'!r} "
                              f"(got {run.policy_type!r})")
    other = next((t for t in discrete if t.action_space_size != discrete[0].action_space_size), None)
    if other is not None:
        raise TaskConfigError(f"discrete tasks share one action space: task {discrete[0].name!r} has "
                              f"{discrete[0].action_space_size} actions and task {other.name!r} {other.action_space_size} "
                              f"(pad them to one width and mask)")


def _task_config(run: RunConfig, task: TaskEnvSpec, task_id: int, tasks: Sequence[TaskEnvSpec]) -> TaskConfig:
    env = _merged(dict(collector_env_num=task.collector_env_num, evaluator_env_num=task.evaluator_env_num,
                       n_evaluator_episode=task.n_evaluator_episode or task.evaluator_env_num,
                       manager=dict(shared_memory=False)), task.env, "TaskEnvSpec.env")
    model = dict(observation_shape=task.observation_shape, action_space_size=task.action_space_size,
                 model_type="conv" if task.obs_type == "image" else "mlp")
    if task.continuous:
        model["continuous_action_space"] = True
    model = _merged(model, run.model_extras, "RunConfig.model_extras")
    model = _merged(model, task.model_extras, "TaskEnvSpec.model_extras")
    model["world_model_cfg"] = _world_model_cfg(run, task, tasks)
    policy = dict(task_num=len(tasks), task_id=task_id, cuda=run.cuda, model=model,
                  num_unroll_steps=run.num_unroll_steps, game_segment_length=run.game_segment_length,
                  num_segments=task.collector_env_num, collector_env_num=task.collector_env_num,
                  evaluator_env_num=task.evaluator_env_num, num_simulations=run.num_simulations,
                  batch_size=task.batch_size, learning_rate=run.learning_rate, eval_freq=run.eval_freq,
                  replay_buffer_size=run.replay_buffer_size, td_steps=run.td_steps,
                  discount_factor=run.discount_factor, use_wandb=False)
    policy.update({name: getattr(run, name) for name in _OPTIONAL_POLICY_FIELDS if getattr(run, name) is not None})
    if run.task_loss_weights is not None:
        policy["task_loss_weights"] = list(run.task_loss_weights)
    if run.dps is not None:
        policy["dps"] = copy.deepcopy(dict(run.dps))
    if task.domain is not None:
        policy["domain"] = task.domain
    if task.score_kind is not None:
        policy["score_kind"] = task.score_kind
    if task.continuous and mixes_action_kinds(tasks):  # lightzero's collector and segments store sampled actions
        policy["sampled_algo"] = True
    policy = _merged(policy, run.policy_extras, "RunConfig.policy_extras")
    policy = _merged(policy, task.policy_extras, "TaskEnvSpec.policy_extras")
    main = dict(exp_name=run.exp_name, env=env, policy=policy)
    if run.seed is not None:
        main["seed"] = run.seed
    create = dict(env=dict(type=task.env_type, import_names=list(task.env_import_names)),
                  env_manager=dict(type=task.env_manager),
                  policy=dict(type=policy_type(run, tasks), import_names=list(POLICY_IMPORT_NAMES)))
    return EasyDict(main), EasyDict(create)


def _world_model_cfg(run: RunConfig, task: TaskEnvSpec, tasks: Sequence[TaskEnvSpec]) -> dict:
    """policy.model.world_model_cfg of one task: the shared transformer, this task's env counts."""
    wm: dict = dict(num_tasks=len(tasks), obs_type=task.obs_type)
    mixed_obs, mixed_actions = len({t.obs_type for t in tasks}) > 1, mixes_action_kinds(tasks)
    if mixed_obs:  # one encoder body per modality (lzero_ext.model.modalities)
        wm["obs_type_list"] = [t.obs_type for t in tasks]
    if mixed_obs or task.obs_type == "vector":
        wm["observation_shape_list"] = [t.observation_shape for t in tasks]  # per-task MLP encoders, flat slices
    if mixed_actions:  # discrete tasks share one action space; continuous ones their own dims and Gaussian heads
        wm.update(action_type_list=["continuous" if t.continuous else "discrete" for t in tasks],
                  action_space_size_list=[t.action_space_size for t in tasks],
                  action_space_size=next(t.action_space_size for t in tasks if not t.continuous))
    elif task.continuous:  # per-task action embeddings and Gaussian heads
        wm.update(action_space_size_list=[t.action_space_size for t in tasks], continuous_action_space=True)
    else:  # one discrete action space and action embedding
        wm["action_space_size"] = task.action_space_size
    wm.update(embed_dim=run.embed_dim, num_layers=run.num_layers, num_heads=run.num_heads,
              max_blocks=run.num_unroll_steps, max_tokens=2 * run.num_unroll_steps,
              context_length=2 * run.infer_context, env_num=task.env_num, collector_env_num=task.collector_env_num,
              evaluator_env_num=task.evaluator_env_num, device="cuda" if run.cuda else "cpu")
    if run.predict_latent_loss_type is not None:
        wm["predict_latent_loss_type"] = run.predict_latent_loss_type
    wm["moe"] = dict(enabled=not run.dense, num_experts=run.num_experts, top_k=run.moe_top_k,
                     num_shared_experts=run.num_shared_experts)
    if run.vit is not None:
        from lzero_ext.model.vit_encoder import VIT_SIZES

        wm.update(encoder="vit", vit=dict(VIT_SIZES[run.vit]))
    return _merged(wm, run.world_model_extras, "RunConfig.world_model_extras")


def _merged(base: dict, extras: Mapping[str, Any], owner: str) -> dict:
    """``base`` with ``extras`` added; an extra may not replace a key a field already sets."""
    taken = sorted(set(base) & set(extras))
    if taken:
        raise TaskConfigError(f"{owner} sets {taken}, which a RunConfig / TaskEnvSpec field already sets: use the field")
    return {**base, **copy.deepcopy(dict(extras))}
