"""Check and compile the per-task configs of a multi-task run.

A multi-task run takes one LightZero-style ``(main_config, create_config)`` pair per task. The
tasks share one model, so the keys that shape it must agree; a mismatch is reported naming the
task and the key instead of failing later inside the model.
"""
import copy
import math
import os
import pprint
from typing import Any, List, Sequence, Tuple

import torch
from ding.config import compile_config
from easydict import EasyDict

TaskConfig = Tuple[EasyDict, EasyDict]

# Keys (dotted, under main_config.policy) that every task must share because they shape the one model.
SHARED_POLICY_KEYS = (
    "model.model_type",
    "model.world_model_cfg.num_layers",
    "model.world_model_cfg.num_heads",
    "model.world_model_cfg.embed_dim",
    "model.world_model_cfg.moe",
    "model.world_model_cfg.num_tasks",
    "task_num",
    "num_unroll_steps",
    "dps",  # one curriculum and one set of adapters for the shared model
    # Run-level learner settings: one optimizer, one clip and one target model serve every task, so a
    # per-task value would be silently ignored (the learner reads the first task's).
    "learning_rate",
    "weight_decay",
    "grad_clip_value",
    "target_update_theta",
    "cos_lr_scheduler",
    "task_loss_weights",
    "diagnostics_freq",
    "replay_ratio",
    "update_per_collect",
    "cache_clear_interval",
    "eval_env_step_fractions",
    "final_eval_episodes",
    "collect_env_steps_per_round",
)
# lightzero UniZero keys that ScaleZero's learn step does not honour, with the only value it supports.
UNSUPPORTED_POLICY_KEYS = {
    "use_augmentation": False,
    "model.frame_stack_num": 1,
    "accumulation_steps": 1,
    "piecewise_decay_lr_scheduler": False,
    "model.world_model_cfg.analysis_dormant_ratio": False,
}
SHARED_CREATE_KEYS = ("policy.type",)
MIN_UNROLL_STEPS = 4  # lightzero's WorldModel.compute_loss raises IndexError for shorter unrolls
DISCRETE_SHARED_KEYS = ("model.action_space_size",)  # discrete tasks share one action embedding


class TaskConfigError(ValueError):
    """A per-task config is inconsistent with the others or with the run."""


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def _check_same(task_id: int, main: Any, other_id: int, other: Any, key: str, why: str) -> None:
    if _get(main.policy, key) != _get(other.policy, key):
        raise TaskConfigError(f"task {task_id} has policy.{key}={_get(main.policy, key)!r} but task {other_id} has "
                              f"{_get(other.policy, key)!r}; {why}, so it must match")


def validate_task_configs(task_configs: Sequence[TaskConfig]) -> None:
    """Raises :class:`TaskConfigError` naming the first inconsistent task and key."""
    if not task_configs:
        raise TaskConfigError("no tasks given: a multi-task run needs at least one (main_config, create_config) pair")
    first_main, first_create = task_configs[0]
    discrete = [t for t, (main, _) in enumerate(task_configs) if not _get(main.policy, "model.continuous_action_space")]
    mixed_modalities = _get(first_main.policy, "model.world_model_cfg.obs_type_list") is not None
    # a model over several modalities reads each task's observations by its own model_type (conv or mlp)
    policy_keys = [k for k in SHARED_POLICY_KEYS if not (mixed_modalities and k == "model.model_type")]
    for task_id, (main, create) in enumerate(task_configs):
        for key in policy_keys:
            _check_same(task_id, main, 0, first_main, key, "all tasks share one model and learner")
        for key in DISCRETE_SHARED_KEYS:
            if task_id in discrete:
                _check_same(task_id, main, discrete[0], task_configs[discrete[0]][0], key,
                            "discrete tasks share one action space")
        for key, supported in UNSUPPORTED_POLICY_KEYS.items():
            value = _get(main.policy, key)
            if value is not None and value != supported:
                raise TaskConfigError(f"task {task_id} sets policy.{key}={value!r}; ScaleZero's multi-task learn step "
                                      f"does not implement it (only {supported!r})")
        for key in SHARED_CREATE_KEYS:
            if _get(create, key) != _get(first_create, key):
                raise TaskConfigError(f"task {task_id} has create_config.{key}={_get(create, key)!r}, task 0 has {_get(first_create, key)!r}")
        segment, unroll, td = (main.policy.get(k) for k in ("game_segment_length", "num_unroll_steps", "td_steps"))
        if unroll is not None and unroll < MIN_UNROLL_STEPS:
            raise TaskConfigError(f"task {task_id}: policy.num_unroll_steps={unroll} < {MIN_UNROLL_STEPS}; lightzero 0.2.0's "
                                  f"world-model loss logging indexes steps of the unroll and fails below that")
        if None not in (segment, unroll, td) and segment < unroll + td:
            raise TaskConfigError(
                f"task {task_id}: policy.game_segment_length={segment} < num_unroll_steps + td_steps = {unroll + td}; "
                f"lightzero's replay buffer needs whole unroll+TD windows inside one segment"
            )
        if main.policy.get("task_id", task_id) != task_id:
            raise TaskConfigError(f"task at position {task_id} has policy.task_id={main.policy.task_id}; ids must be 0..N-1 in order")
    task_num = first_main.policy.get("task_num", 1)  # missing keys take the policy defaults (1 task)
    if task_num != len(task_configs):
        raise TaskConfigError(f"policy.task_num={task_num} but {len(task_configs)} task configs were given")
    num_tasks = _get(first_main.policy, "model.world_model_cfg.num_tasks") or 1
    if num_tasks != task_num:
        raise TaskConfigError(f"policy.model.world_model_cfg.num_tasks={num_tasks} but policy.task_num={task_num}; they must agree")


def compile_task_configs(task_configs: Sequence[TaskConfig], *, seed: int, exp_name: str, save_cfg: bool) -> List[EasyDict]:
    """ding's ``compile_config`` per task (defaults of the registered policy and env merged in),
    with the task id, shared experiment name and the device set. ``save_cfg`` writes them all to
    ``<exp_name>/total_config.py`` (ding's own saving is skipped: it runs git and yapf for seconds and
    renames an existing experiment directory, which would break ``--resume``)."""
    compiled = []
    for task_id, (main, create) in enumerate(task_configs):
        main, create = copy.deepcopy(main), copy.deepcopy(create)
        main.exp_name = exp_name
        main.policy.task_id = task_id
        want_cuda = main.policy.get("cuda", False) and torch.cuda.is_available()
        main.policy.device = "cuda" if want_cuda else "cpu"
        main.policy.cuda = want_cuda
        main.policy.model.world_model_cfg.device = main.policy.device
        compiled.append(compile_config(main, seed=seed, env=None, auto=True, create_cfg=create, save_cfg=False))
    if save_cfg:
        save_task_configs(exp_name, compiled)
    return compiled


def save_task_configs(exp_dir: str, compiled: Sequence[EasyDict]) -> str:
    """Writes every task's compiled config to ``<exp_dir>/total_config.py`` (a plain Python literal, atomically)."""
    from lzero_ext.checkpoint import atomic_write

    path = os.path.join(exp_dir, "total_config.py")
    body = pprint.pformat([_plain(cfg) for cfg in compiled], width=110, sort_dicts=False)
    text = f"# Compiled per-task configs of this run (task i = task_configs[i]).\ntask_configs = {body}\n"
    atomic_write(path, lambda f: f.write(text.encode()))  # never a truncated file (a full disk fails it whole)
    return path


def _plain(obj: Any) -> Any:
    """EasyDicts and tuples as plain dicts/lists; anything else unrepresentable as its repr string."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)  # 'inf' / 'nan' as strings keep the file a valid literal
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)
