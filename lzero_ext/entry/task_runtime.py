"""Everything one task owns in a multi-task run: env managers, collector, evaluator, replay buffer.

All of them are lightzero's classes (the collector with per-step action masks, ``lzero_ext.collector``; both
workers make lightzero's per-step UniZero cache call for ScaleZero too, ``lzero_ext.workers``); they reach the
shared policy through ``policy.task_collect_mode(task_id)`` / ``policy.task_eval_mode(task_id)``, which pass the
task id on. lightzero 0.2.0's
workers assume rank 0 logs and evaluates for everyone and all-reduce counters across ranks; with
tasks split over ranks each rank owns its tasks, so they are built and run in a one-rank view
(:func:`rank_local`; the collector reads the rank only when built, the evaluator on every ``eval``).
"""
import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
from ding.envs import create_env_manager, get_vec_env_setting
from ding.rl_utils import get_epsilon_greedy_fn
from easydict import EasyDict
from lzero.mcts import SampledUniZeroGameBuffer, UniZeroGameBuffer
from lzero.policy import visit_count_temperature
from lzero.worker import muzero_evaluator, muzero_segment_collector
from torch.utils.tensorboard import SummaryWriter

from lzero_ext.collector import MaskAwareSegmentCollector
from lzero_ext.envs.base import ScaleZeroEnv
from lzero_ext.envs.finite_env import FiniteEnvManager
from lzero_ext.summary import TaskRecord
from lzero_ext.workers import UniZeroFamilyEvaluator, eval_rounds


def buffer_class(policy_cfg: EasyDict) -> type:
    """lightzero's replay buffer for the task's action kind: sampled (continuous) or UniZero's (discrete); in a run of
    both kinds the policy type is one, so the task's own action kind decides."""
    return SampledUniZeroGameBuffer if policy_cfg.model.get("continuous_action_space", False) else UniZeroGameBuffer


_RANK_LOCAL_DEPTH: Dict[Any, Tuple[int, Any, Any]] = {}  # module -> (depth, its get_rank, its get_world_size)


@contextmanager
def rank_local(*modules: Any) -> Iterator[None]:
    """Make lightzero worker modules see a one-process world while one rank works on its own tasks (they read the
    rank from their module's globals). Re-entrant (the lockstep coroutines of several tasks nest it): the outermost
    exit restores."""
    for module in modules:
        depth, get_rank, get_world_size = _RANK_LOCAL_DEPTH.get(module, (0, module.get_rank, module.get_world_size))
        _RANK_LOCAL_DEPTH[module] = (depth + 1, get_rank, get_world_size)
        module.get_rank, module.get_world_size = (lambda: 0), (lambda: 1)
    try:
        yield
    finally:
        for module in modules:
            depth, get_rank, get_world_size = _RANK_LOCAL_DEPTH.pop(module)
            if depth > 1:
                _RANK_LOCAL_DEPTH[module] = (depth - 1, get_rank, get_world_size)
            else:
                module.get_rank, module.get_world_size = get_rank, get_world_size


def collect_epsilon(policy_cfg: EasyDict, env_steps: int) -> float:
    """The epsilon-greedy probability of a collection round at ``env_steps`` of the task, from lightzero's
    ``policy.eps`` (``eps_greedy_exploration_in_collect``, ``type`` 'linear' or 'exp', ``start``, ``end``,
    ``decay`` env steps), as lightzero's ``train_unizero`` computes it; 0 when it is off."""
    eps = policy_cfg.get("eps") or {}
    if not eps.get("eps_greedy_exploration_in_collect", False):
        return 0.0
    return float(get_epsilon_greedy_fn(start=eps.start, end=eps.end, decay=eps.decay, type_=eps.type)(env_steps))


@dataclass
class TaskRuntime:
    """One task's workers. Build with :meth:`build`; the trainer calls collect / sample / evaluate."""

    task_id: int
    name: str
    cfg: EasyDict
    collector: MaskAwareSegmentCollector
    evaluator: UniZeroFamilyEvaluator
    buffer: Any
    writer: SummaryWriter
    record: TaskRecord

    @classmethod
    def build(cls, task_id: int, name: str, cfg: EasyDict, policy: Any, log_dir: str, score_kind: str = "raw") -> "TaskRuntime":
        """The task's workers and buffer; ``score_kind`` applies unless the task names its own (``policy.score_kind``)."""
        env_fn, collector_env_cfg, evaluator_env_cfg = get_vec_env_setting(cfg.env)
        # The evaluator's envs run in this process: its cost is the search over every env's root, and its many envs
        # (the final evaluation's episodes in parallel) would otherwise each be a process.
        evaluator_manager = EasyDict(dict(cfg.env.manager, type="base"))
        # NaN / inf observations and rewards stop at the env boundary, naming the task and the step
        collector_env, evaluator_env = (
            FiniteEnvManager(create_env_manager(manager, [partial(env_fn, cfg=c) for c in env_cfgs]),
                             task_id=task_id, task_name=name)
            for manager, env_cfgs in ((cfg.env.manager, collector_env_cfg), (evaluator_manager, evaluator_env_cfg)))
        collector_env.seed(cfg.seed)
        evaluator_env.seed(cfg.seed, dynamic_seed=False)
        writer = SummaryWriter(os.path.join(log_dir, "tasks", name))
        exp_name = os.path.relpath(cfg.exp_name)  # lightzero's workers prefix './' to exp_name
        with rank_local(muzero_segment_collector, muzero_evaluator):
            collector = MaskAwareSegmentCollector(  # lightzero's, with per-step action masks (see lzero_ext/collector.py)
                env=collector_env, policy=policy.task_collect_mode(task_id), tb_logger=writer, exp_name=exp_name,
                instance_name=f"collector_{name}", policy_config=cfg.policy,
            )
            evaluator = UniZeroFamilyEvaluator(  # lightzero's, with its per-step cache call for ScaleZero
                eval_freq=cfg.policy.eval_freq, n_evaluator_episode=cfg.env.n_evaluator_episode,
                stop_value=cfg.env.stop_value, env=evaluator_env, policy=policy.task_eval_mode(task_id),
                tb_logger=writer, exp_name=exp_name, instance_name=f"evaluator_{name}", policy_config=cfg.policy,
            )
        buffer = buffer_class(cfg.policy)(cfg.policy)
        record = TaskRecord(task_id, name, episode_cap=episode_cap(env_fn, evaluator_env_cfg[0]),
                            domain=cfg.policy.get("domain"), score_kind=cfg.policy.get("score_kind") or score_kind)
        return cls(task_id, name, cfg, collector, evaluator, buffer, writer, record)

    # ------------------------------------------------------------------ phases
    @property
    def env_steps(self) -> int:
        return self.collector.envstep

    def collect(self, train_iter: int) -> List[Any]:
        """Collects ``collector_env_num`` game segments with MCTS and pushes them to the buffer."""
        policy_cfg = self.cfg.policy
        temperature = visit_count_temperature(
            policy_cfg.manual_temperature_decay, policy_cfg.fixed_temperature_value,
            policy_cfg.threshold_training_steps_for_final_temperature, trained_steps=train_iter,
        )
        new_data = self.collector.collect(train_iter=train_iter, policy_kwargs={
            "temperature": temperature, "epsilon": collect_epsilon(policy_cfg, self.env_steps)})
        self.buffer.push_game_segments(new_data)
        self.buffer.remove_oldest_data_to_fit()
        return new_data

    def has_enough_data(self) -> bool:
        return self.buffer.get_num_of_transitions() > self.cfg.policy.batch_size

    def sample(self, policy: Any) -> Tuple[int, Any, Any]:
        """One batch for the learner, sampled alone: a task that reanalyses (``reanalyze_ratio > 0``) runs
        lightzero's buffer search, which calls the target model without a task id (so the task is bound for it).
        Every other task is sampled by :func:`~lzero_ext.entry.multitask_sampling.sample_tasks` with the others."""
        with policy._target_model.bind_task(self.task_id):
            current_batch, target_batch = self.buffer.sample(self.cfg.policy.batch_size, policy)
        return self.task_id, current_batch, target_batch

    def evaluate(self, train_iter: int, episodes: Optional[int] = None) -> float:
        """Runs ``episodes`` episodes (None: ``n_evaluator_episode``; more than the evaluator's envs in rounds,
        :func:`~lzero_ext.workers.eval_rounds`); returns and records their mean raw return."""
        with rank_local(muzero_evaluator):
            returns = eval_rounds(self.evaluator.eval, self.evaluator._env_num, episodes, train_iter, self.env_steps)
        mean_return = float(np.mean(returns))
        self.record.add_eval(self.env_steps, mean_return, episodes=len(returns))
        self.writer.add_scalar("eval/episode_return_mean_vs_env_step", mean_return, self.env_steps)
        return mean_return

    def log_learn(self, train_iter: int, values: Dict[str, float]) -> None:
        for key, value in values.items():
            if np.isscalar(value):
                self.writer.add_scalar(f"learn/{key}", value, train_iter)

    # ------------------------------------------------------------------ resume
    def state_dict(self, include_buffer: bool = False) -> Dict[str, Any]:
        state = {
            "name": self.name,
            "env_steps": self.collector._total_envstep_count,
            "episodes": self.collector._total_episode_count,
            "eval_history": list(self.record.history),
            "eval_episodes": self.record.eval_episodes,
            "updates": self.record.updates,
            "max_eval_return": self.evaluator._max_episode_return,
        }
        if include_buffer:
            state["buffer"] = self.buffer
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state["name"] != self.name:
            raise ValueError(f"checkpoint task {self.task_id} is {state['name']!r}, this run's is {self.name!r}")
        self.collector._total_envstep_count = state["env_steps"]
        self.collector._total_episode_count = state["episodes"]
        for env_step, mean_return in state["eval_history"]:
            self.record.add_eval(env_step, mean_return)
        self.record.eval_episodes = state.get("eval_episodes")  # checkpoints before the count: None
        self.evaluator._max_episode_return = state["max_eval_return"]
        self.record.updates = int(state.get("updates", 0))  # checkpoints before the count: 0
        if "buffer" in state:
            self.buffer = state["buffer"]

    def close(self) -> None:
        self.collector.close()
        self.evaluator.close()
        self.writer.close()


def episode_cap(env_cls: type, evaluator_env_cfg: Any) -> Optional[str]:
    """How the task's evaluation episodes are cut short (``ScaleZeroEnv.episode_cap``); None for full episodes
    and for envs that are not the project's (lightzero's own, on the policy-swap route)."""
    return env_cls.episode_cap(evaluator_env_cfg) if issubclass(env_cls, ScaleZeroEnv) else None
