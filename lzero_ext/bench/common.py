"""Shared pieces of the training benchmarks: interleaved timing, thread control, and the configs of
the two sides being compared (a ScaleZero multi-task run and lightzero's single-task UniZero at the
same width, depth and settings)."""
import copy
import dataclasses
import os
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from easydict import EasyDict

TaskConfig = Tuple[EasyDict, EasyDict]

# Keys this project adds to lightzero's UniZero config; removed for the lightzero side.
_SCALEZERO_POLICY_KEYS = ("task_num", "task_id", "task_loss_weights")
_SCALEZERO_WORLD_MODEL_KEYS = ("num_tasks", "observation_shape_list", "action_space_size_list", "share_heads",
                               "task_embed_option", "task_embed_dim", "latent_norm", "moe")


def set_threads(threads: Optional[int]) -> int:
    """Pins torch's intra-op threads (None: leave the default); returns the count in use."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def time_interleaved(steps: Dict[str, Callable[[], None]], *, warmup: int, repeats: int) -> Dict[str, List[float]]:
    """Seconds per call of each step, measured round-robin so machine noise hits every arm alike."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def machine_load() -> str:
    """The 1-minute load average, printed beside timings (they are only comparable on a quiet machine)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def atari_task_configs(games: Sequence[str], *, dense: bool, embed_dim: int, num_layers: int, num_heads: int,
                       batch_size: int, num_simulations: int, collector_env_num: int, exp_name: str,
                       num_experts: int = 8, **run_keys: Any) -> List[TaskConfig]:
    """The ``cpu`` preset's Atari task configs with the benchmark's sizes swapped in (base env manager);
    ``run_keys`` are further :class:`~lzero_ext.entry.run_config.RunConfig` fields."""
    from lzero_ext.entry.run_config import build_task_configs
    from zoo.atari.config.scalezero_multitask_config import PRESETS, run_config, task_spec

    preset = dataclasses.replace(PRESETS["cpu"], embed_dim=embed_dim, num_layers=num_layers, num_heads=num_heads,
                                 num_experts=num_experts, batch_size=batch_size, num_simulations=num_simulations,
                                 collector_env_num=collector_env_num)
    specs = [dataclasses.replace(task_spec(game, preset), env_manager="base")  # time the policy, not subprocess pipes
             for game in games]
    run = dataclasses.replace(run_config(preset, exp_name=exp_name, cuda=False, dense=dense), **run_keys)
    return build_task_configs(run, specs)


def lightzero_unizero_config(task_config: TaskConfig) -> TaskConfig:
    """The same task as lightzero's own single-task UniZero: policy type ``unizero`` and the
    project's extra keys removed (width, depth, heads, batch, simulations, env unchanged)."""
    main, create = copy.deepcopy(task_config)
    for key in _SCALEZERO_POLICY_KEYS:
        main.policy.pop(key, None)
    for key in _SCALEZERO_WORLD_MODEL_KEYS:
        main.policy.model.world_model_cfg.pop(key, None)
    create.policy = EasyDict(type="unizero", import_names=["lzero.policy.unizero"])
    return main, create


def create_policy_for(task_config: TaskConfig, *, seed: int = 0, task_id: int = 0,
                      enable_field: Sequence[str] = ("learn",)):
    """Compiles a LightZero config pair as the trainer does and creates its policy (learn mode by default)."""
    from ding.policy import create_policy
    from ding.utils import set_pkg_seed

    from lzero_ext.entry.configs import compile_task_configs

    main, create = task_config
    cfg = compile_task_configs([(main, create)], seed=seed, exp_name=main.exp_name, save_cfg=False)[0]
    cfg.policy.task_id = task_id
    set_pkg_seed(seed)
    return create_policy(cfg.policy, enable_field=list(enable_field)), cfg


def lightzero_segment_collector(policy: Any, cfg: EasyDict, instance_name: str) -> Any:
    """lightzero's own ``MuZeroSegmentCollector`` for ``policy`` on the collector envs of the compiled ``cfg``."""
    from functools import partial

    from ding.envs import create_env_manager, get_vec_env_setting
    from lzero.worker import MuZeroSegmentCollector

    env_fn, collector_env_cfg, _ = get_vec_env_setting(cfg.env)
    env = create_env_manager(cfg.env.manager, [partial(env_fn, cfg=c) for c in collector_env_cfg])
    env.seed(cfg.seed)
    return MuZeroSegmentCollector(env=env, policy=policy.collect_mode, tb_logger=None,
                                  exp_name=os.path.relpath(cfg.exp_name), instance_name=instance_name,
                                  policy_config=cfg.policy)
