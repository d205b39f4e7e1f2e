"""The MinAtar suite of the learning benchmark: its task spec and the configs of every arm.

Every arm sees the same env (``minatar_scalezero``: every game padded to (10, 10, 10), MinAtar's 6
actions, sticky actions 0.1, episodes capped at ``max_episode_steps``) and the same grid encoder
(``lzero_ext.model.grid_encoder``: lightzero's UniZero encoder without downsampling). The multi-task
arms take the zoo config's run config and task specs (``zoo.minatar.config.scalezero_minatar_multitask_config``)
with the benchmark's sizes; arm ``unizero`` is lightzero's UniZero on the same config, through
lightzero's ``unizero`` policy with ``GridUniZeroModel`` (lightzero's UniZero model with the grid
encoder; ``lzero_ext.bench.learning_configs.run_configs``).

The normalised score's 1 is the best evaluation return any arm reached on the game (no reference
score table exists for MinAtar at these budgets); its 0 is the random policy's return, measured.
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

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
                  update_per_collect=s.updates_per_round, learning_rate=s.learning_rate,
                  dps_min_stage0_iters=s.dps_min_stage0_iters, dps_max_stage_iters=s.dps_max_stage_iters)


def minatar_configs(tasks: Sequence[MinAtarTask], settings: Any, *, moe: bool, exp_name: str, seed: int,
                    dps: bool = False) -> List[Tuple[EasyDict, EasyDict]]:
    """ScaleZero ``(main, create)`` configs of a run over ``tasks``: the MinAtar zoo config's run and task specs
    with the benchmark's sizes, seed, collect temperature and diagnostics; ``dps`` turns on DPS with the tasks'
    targets."""
    from lzero_ext.bench.learning_configs import dps_config
    from lzero_ext.entry.run_config import build_task_configs
    from zoo.minatar.config.scalezero_minatar_multitask_config import run_config, task_spec

    s = settings
    zoo_run = run_config(_preset(s, tasks[0].max_episode_steps), exp_name=exp_name, cuda=False, dense=not moe)
    run = dataclasses.replace(
        zoo_run, seed=seed, td_steps=s.td_steps, diagnostics_freq=s.diagnostics_freq if len(tasks) > 1 else 0,
        dps=dps_config(tasks, s) if dps else dict(enabled=False, suite=None),
        policy_extras=dict(zoo_run.policy_extras, manual_temperature_decay=False,
                           fixed_temperature_value=s.collect_temperature, reanalyze_ratio=0.0))
    specs = [task_spec(t.name, _preset(s, t.max_episode_steps), sticky_action_prob=t.sticky_action_prob,
                       stop_value=float("inf"))  # every arm spends its budget
             for t in tasks]
    return build_task_configs(run, specs)
