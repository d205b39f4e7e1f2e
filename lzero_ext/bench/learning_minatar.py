"""The MinAtar suite of the learning benchmark: its task spec and the configs of every arm.

Every arm sees the same env (``minatar_scalezero``: every game padded to (10, 10, 10), MinAtar's 6
actions, sticky actions 0.1, episodes capped at ``max_episode_steps``) and the same grid encoder
(``lzero_ext.model.grid_encoder``: lightzero's UniZero encoder without downsampling). The multi-task
arms take the zoo config's task config (``zoo.minatar.config.scalezero_minatar_multitask_config``)
with the benchmark's sizes; arm ``unizero`` is lightzero's UniZero on the same config, through the
lightzero's ``unizero`` policy with ``GridUniZeroModel`` (lightzero's UniZero model with the grid
encoder).

The normalised score's 1 is the best evaluation return any arm reached on the game (no reference
score table exists for MinAtar at these budgets); its 0 is the random policy's return, measured.
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional, Sequence, Tuple

from easydict import EasyDict


@dataclass(frozen=True)
class MinAtarTask:
    """One MinAtar game of the suite and its target return (solved from the first evaluation at or above it;
    DPS stops the game there)."""

    name: str  # CamelCase game name, also the env id
    target_return: float
    max_episode_steps: int = 1000
    sticky_action_prob: float = 0.1
    reference_return: Optional[float] = None  # None: the best return any arm reached (set by the report)
    kind: ClassVar[str] = "minatar"

    @property
    def env_id(self) -> str:
        return self.name

    def env_config(self) -> Dict[str, Any]:
        from zoo.minatar.config.scalezero_minatar_multitask_config import OBSERVATION_SHAPE

        return dict(env_id=self.name, observation_shape=OBSERVATION_SHAPE, max_episode_steps=self.max_episode_steps,
                    sticky_action_prob=self.sticky_action_prob)

    def make_env(self) -> Any:
        from lzero_ext.envs.minatar_env import MinAtarEnv

        return MinAtarEnv(self.env_config())

    def describe(self) -> Dict[str, Any]:
        """The task's entry in ``results.json``."""
        from zoo.minatar.config.scalezero_minatar_multitask_config import NUM_ACTIONS, OBSERVATION_SHAPE

        return dict(dataclasses.asdict(self), observation_shape=list(OBSERVATION_SHAPE), num_actions=NUM_ACTIONS)


def _preset(settings: Any, max_episode_steps: int) -> Any:
    """The zoo config's ``Preset`` holding the benchmark's sizes."""
    from zoo.minatar.config.scalezero_minatar_multitask_config import Preset

    s = settings
    return Preset(max_env_step=s.env_steps, embed_dim=s.embed_dim, num_layers=s.num_layers, num_heads=s.num_heads,
                  num_experts=s.num_experts, num_simulations=s.num_simulations, batch_size=s.batch_size,
                  collector_env_num=s.collector_env_num, evaluator_env_num=s.evaluator_env_num,
                  game_segment_length=s.game_segment_length, num_unroll_steps=s.num_unroll_steps,
                  infer_context=s.infer_context, eval_freq=s.eval_freq, max_episode_steps=max_episode_steps,
                  replay_buffer_size=int(1e6), checkpoint_freq=int(1e10), encoder_channels=s.encoder_channels,
                  updates_per_round=s.updates_per_round, learning_rate=s.learning_rate,
                  dps_min_stage0_iters=s.dps_min_stage0_iters, dps_max_stage_iters=s.dps_max_stage_iters)


def minatar_task_config(task: MinAtarTask, task_id: int, tasks: Sequence[MinAtarTask], settings: Any, *,
                        moe: bool, exp_name: str, seed: int, dps: bool = False) -> Tuple[EasyDict, EasyDict]:
    """ScaleZero ``(main, create)`` config of ``task`` in a run over ``tasks``: the zoo config's, with the
    benchmark's sizes, seed, collect temperature and diagnostics; ``dps`` turns on DPS with the tasks' targets."""
    from lzero_ext.bench.learning_runs import dps_config
    from zoo.minatar.config.scalezero_minatar_multitask_config import build_task_config

    s = settings
    main, create = build_task_config(task.name, task_id, len(tasks), _preset(s, task.max_episode_steps), dense=not moe,
                                     exp_name=exp_name, cuda=False)
    main.seed = seed
    main.env.update(sticky_action_prob=task.sticky_action_prob, stop_value=float("inf"))  # every arm spends its budget
    main.policy.update(td_steps=s.td_steps, manual_temperature_decay=False, fixed_temperature_value=s.collect_temperature,
                       diagnostics_freq=s.diagnostics_freq if len(tasks) > 1 else 0, reanalyze_ratio=0.0,
                       dps=EasyDict(dps_config(tasks, s)) if dps else EasyDict(enabled=False, suite=None))
    return main, create


def minatar_unizero_config(task: MinAtarTask, settings: Any, *, exp_name: str, seed: int) -> Tuple[EasyDict, EasyDict]:
    """The same game for lightzero's own single-task UniZero (policy ``unizero`` with lightzero's UniZero model
    and the grid encoder, ``GridUniZeroModel``; this project's keys removed)."""
    from lzero_ext.bench.learning_runs import lightzero_arm_config

    main, create = lightzero_arm_config(minatar_task_config(task, 0, [task], settings, moe=False, exp_name=exp_name,
                                                            seed=seed))
    main.policy.model.update(type="GridUniZeroModel", import_names=["lzero_ext.model.grid_encoder"])
    return main, create
