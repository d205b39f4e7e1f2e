"""The four arms of the learning benchmark, each one training run returning eval curves.

* ``unizero``: lightzero 0.2.0's own single-task UniZero: policy type ``unizero`` trained by its
  ``lzero.entry.train_unizero_segment`` entry (lightzero's UniZero entry with the segment collector,
  the collector our trainer uses too), one model per task. Its evaluator and collector classes are
  swapped for recording subclasses (same behaviour) to read the eval returns back; like our
  trainer, it evaluates before the first update, and after training a final evaluation of as many
  episodes as the multi-task arms' (``final_eval_episodes``, in rounds of one episode per env).
* ``dense`` / ``moe``: one ScaleZero model for all tasks (``MultiTaskTrainer``), dense FFN or MoE.
* ``dps``: ``moe`` with Dynamic Parameter Scaling (``policy.dps``): a task whose eval return reaches
  its ``target_return`` is solved and stops collecting and training; staged LoRA adapters take over
  the frozen transformer as tasks get solved (or a stage times out). The trainer's final evaluation
  covers solved tasks too, on the final model, so every task's final return comes from the same episode count.

All arms share the env (``classic_control_scalezero``, or ``minatar_scalezero`` for the MinAtar suite:
``lzero_ext.bench.learning_minatar``), the transformer's width, depth and heads,
the simulations, batch size per task, replay ratio, learning rate and evaluation schedule.
Runs are plain functions of a picklable :class:`RunSpec`, so they can run in worker processes.
"""
import contextlib
import functools
import importlib
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Dict, Iterator, List, Optional, Tuple

import numpy as np

from lzero_ext.bench.learning_configs import run_configs
from lzero_ext.workers import eval_rounds

ARMS: Tuple[str, ...] = ("unizero", "dense", "moe", "dps")
ARM_LABELS: Dict[str, str] = {
    "unizero": "(a) lightzero UniZero, one model per task",
    "dense": "(b) multi-task, dense FFN",
    "moe": "(c) ScaleZero, MoE FFN",
    "dps": "(d) ScaleZero, MoE FFN + DPS",
}
Curve = List[Tuple[int, float]]  # (env_step, mean eval return), in order


@dataclass(frozen=True)
class TaskSpec:
    """One task of the suite: a ``classic_control_scalezero`` env id and options, a reference return
    (the 1 of the normalised score; the random policy's return, measured, is its 0) and a target
    return (the task counts as solved from the first evaluation at or above it; DPS stops it there)."""

    name: str
    env_id: str
    reference_return: float
    target_return: float
    max_episode_steps: Optional[int] = None
    continuous_action_bins: Optional[int] = None
    make_kwargs: Tuple[Tuple[str, Any], ...] = ()  # extra gymnasium.make arguments, as (key, value) pairs
    kind: ClassVar[str] = "classic"  # which config builders run it (MinAtarTask: "minatar")

    def env_config(self) -> Dict[str, Any]:
        return dict(env_id=self.env_id, max_episode_steps=self.max_episode_steps,
                    continuous_action_bins=self.continuous_action_bins, make_kwargs=dict(self.make_kwargs))

    def make_env(self) -> Any:
        from lzero_ext.envs.classic_control_env import ClassicControlEnv

        return ClassicControlEnv(self.env_config())

    def describe(self) -> Dict[str, Any]:
        """The task's entry in ``results.json``."""
        return dict(asdict(self), obs_dim=self.obs_dim, num_actions=self.num_actions)

    @property
    def obs_dim(self) -> int:
        return _task_dims(self)[0]

    @property
    def num_actions(self) -> int:
        return _task_dims(self)[1]


@functools.lru_cache(maxsize=None)
def _task_dims(task: TaskSpec) -> Tuple[int, int]:
    """(observation size, action count), read from the env."""
    from lzero_ext.envs.classic_control_env import ClassicControlEnv

    env = ClassicControlEnv(task.env_config())
    return int(env.observation_space.shape[0]), int(env.action_space.n)


@dataclass(frozen=True)
class Settings:
    """Model and training sizes shared by every arm (per task where it says so)."""

    env_steps: int  # per task
    embed_dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    num_experts: int = 4  # routed experts per MoE layer (top-1) plus one shared expert
    num_simulations: int = 16
    batch_size: int = 32  # per task
    # Learner steps per collection round (each round collects collector_env_num segments of every task; a
    # multi-task step takes one batch per task). Fixed, so every arm updates alike: lightzero's entry derives
    # the count from its own transition count, which on short-episode tasks (CartPole) gives about half our
    # trainer's count. 40 = 8 segments x 20 steps x replay ratio 0.25 when segments are full.
    updates_per_round: int = 40
    learning_rate: float = 1e-3
    num_unroll_steps: int = 5
    infer_context: int = 4
    td_steps: int = 5
    game_segment_length: int = 20
    collector_env_num: int = 8
    evaluator_env_num: int = 3  # = episodes per evaluation, one per env
    collect_temperature: float = 0.25  # visit-count temperature of the collectors' action sampling (lightzero's default)
    eval_freq: int = 100  # learner iterations between evaluations
    diagnostics_freq: int = 20  # learner steps between gradient-conflict diagnostics (multi-task arms)
    encoder_channels: int = 16  # conv channels of the grid encoder (image suites only)
    # Arm ``dps`` (policy.dps keys of docs/dps.md, scaled to this budget): stages, the iterations before the
    # first switch and per stage at most, and the LoRA rank and alpha (alpha / rank = 1) of each adapter.
    dps_num_stages: int = 3
    dps_min_stage0_iters: int = 200
    dps_max_stage_iters: int = 200
    dps_rank: int = 8
    dps_alpha: float = 8.0


@dataclass(frozen=True)
class RunSpec:
    """One training run: an arm, a seed and its tasks (one task for ``unizero``)."""

    arm: str
    seed: int
    tasks: Tuple[TaskSpec, ...]
    settings: Settings
    out_dir: str  # the run's files go under <out_dir>/<exp_name>
    threads: int = 1

    @property
    def exp_name(self) -> str:
        names = "_".join(t.name for t in self.tasks) if self.arm == "unizero" else f"{len(self.tasks)}tasks"
        return f"{self.arm}_{names}_seed{self.seed}"


@dataclass
class RunResult:
    """Eval curves per task name, run time, and (multi-task arms) the diagnostics summary."""

    arm: str
    seed: int
    curves: Dict[str, Curve]
    env_steps: Dict[str, int]
    wall_s: float
    train_iter: int
    diagnostics: Dict[str, Any] = field(default_factory=dict)
    dps: Dict[str, Any] = field(default_factory=dict)  # arm ``dps``: the trainer's summary["dps"] (stages, switches)
    final_episodes: Dict[str, int] = field(default_factory=dict)  # episodes of each task's last evaluation


@contextlib.contextmanager
def _working_dir(path: str) -> Iterator[None]:
    """lightzero writes ``./<exp_name>/...`` relative to the working directory."""
    os.makedirs(path, exist_ok=True)
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _all_loggers() -> List[logging.Logger]:
    return [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                    if isinstance(lg, logging.Logger)]


@contextlib.contextmanager
def _handlers_removed_after() -> Iterator[None]:
    """Detaches and closes every logging handler added during the block. lightzero and ding attach
    handlers to the root logger (bound to the run's redirected stderr, closed after the run) and file
    handlers to ``learner_logger`` & co; left in place, a later run in the same worker process writes
    into the closed or earlier run's files ("--- Logging error ---" in its log)."""
    before = {logger: set(logger.handlers) for logger in _all_loggers()}
    try:
        yield
    finally:
        for logger in _all_loggers():
            for handler in [h for h in logger.handlers if h not in before.get(logger, ())]:
                logger.removeHandler(handler)
                handler.close()


@contextlib.contextmanager
def quiet_run(out_dir: str, log_name: str, threads: int = 1) -> Iterator[None]:
    """Runs the block in ``out_dir`` (lightzero writes ``./<exp_name>/...`` relative to it) with ``threads`` torch
    threads, everything lightzero prints going to ``<out_dir>/<log_name>.log``, and its logging handlers removed
    after."""
    import torch

    import lzero_ext.registry  # noqa: F401  (registers envs, models, policies)

    torch.set_num_threads(threads)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # lightzero's workers log every collection and evaluation at INFO
    try:
        with _working_dir(out_dir), open(f"{log_name}.log", "w") as log, _handlers_removed_after(), \
                contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        root.setLevel(level)


def run(spec: RunSpec) -> RunResult:
    """Trains one arm for one seed (quietly) and returns its eval curves."""
    if spec.arm not in ARMS:
        raise ValueError(f"unknown arm {spec.arm!r}; expected one of {ARMS}")
    start = time.perf_counter()
    with quiet_run(spec.out_dir, spec.exp_name, spec.threads):
        result = _run_unizero(spec) if spec.arm == "unizero" else _run_multitask(spec)
    result.wall_s = time.perf_counter() - start
    return result


def _run_multitask(spec: RunSpec) -> RunResult:
    from lzero_ext.entry.train_scalezero import MultiTaskTrainer

    trainer = MultiTaskTrainer(run_configs(spec), seed=spec.seed, exp_name=spec.exp_name, score_kind="raw",
                               max_env_step=spec.settings.env_steps, max_train_iter=int(1e10), checkpoint_freq=int(1e10),
                               save_replay_buffer=False, progress=False)
    try:
        result = trainer.run()
    finally:
        trainer.close()
    names = {i: t.name for i, t in enumerate(spec.tasks)}
    curves = {names[task.task_id]: list(task.record.history) for task in trainer.tasks}
    steps = {names[task.task_id]: int(task.env_steps) for task in trainer.tasks}
    episodes = {names[task.task_id]: eval_episodes(task.cfg.env, trainer.cfg.final_eval_episodes)
                for task in trainer.tasks}
    return RunResult(spec.arm, spec.seed, curves, steps, 0.0, result.train_iter, result.summary.get("diagnostics", {}),
                     result.summary.get("dps") or {}, episodes)


def eval_episodes(env_cfg: Any, episodes: Optional[int]) -> int:
    """Episodes an evaluation of the multi-task trainer plays: ``episodes`` rounded up to whole rounds of one
    episode per evaluator env (``TaskRuntime.evaluate``), or the env's ``n_evaluator_episode`` when None."""
    if episodes is None:
        return int(env_cfg.n_evaluator_episode)
    env_num = int(env_cfg.evaluator_env_num)
    return -(-int(episodes) // env_num) * env_num


def _run_unizero(spec: RunSpec) -> RunResult:
    (task,) = spec.tasks
    ((main, create),) = run_configs(spec)
    trained = train_lightzero_unizero((main, create), seed=spec.seed, max_env_step=spec.settings.env_steps)
    return RunResult(spec.arm, spec.seed, {task.name: trained.history}, {task.name: trained.env_steps}, 0.0,
                     trained.train_iter, final_episodes={task.name: trained.final_episodes})


@dataclass
class LightZeroRun:
    """What a run of lightzero's own UniZero entry leaves: its eval curve (the final evaluation last), env steps,
    learner iterations and the final evaluation's episode count."""

    history: Curve
    env_steps: int
    train_iter: int
    final_episodes: int


def train_lightzero_unizero(config: Tuple[Any, Any], *, seed: int, max_env_step: int) -> LightZeroRun:
    """lightzero's ``train_unizero_segment`` (the UniZero entry with the segment collector our trainer
    uses too) on one task's config, with its evaluator and collector swapped for recording subclasses so that
    the eval history and the final env step can be read back, then a final evaluation of the config's
    ``final_eval_episodes`` (the multi-task trainer's; the entry itself ends with its last regular one)."""
    main, create = config
    recorder = _Recorder()
    with recorder.hooked(importlib.import_module("lzero.entry.train_unizero_segment")) as entry:
        entry.train_unizero_segment((main, create), seed=seed, max_env_step=max_env_step)
    collector, evaluator = recorder.collector, recorder.evaluator
    try:
        evaluator.final_eval(main.policy.get("final_eval_episodes"), recorder.last_train_iter, collector.envstep)
    finally:
        collector.close()
        evaluator.close()
    return LightZeroRun(list(recorder.history), int(collector.envstep), recorder.last_train_iter,
                        recorder.last_episodes)


class _Recorder:
    """Hooks into a lightzero entry module: its ``Evaluator``, ``Collector`` and ``BaseLearner`` become
    subclasses that remember their instance, every evaluation's (env_step, mean return), the latest one's
    episode count and the learner iteration, and its ``compile_config`` skips writing the formatted
    config file (seconds of yapf per run). The evaluator also evaluates once before the first learner step
    (lightzero's ``should_eval(0)`` is False), as our trainer does, so every arm's curve starts at env step 0,
    and runs the final evaluation (``final_eval``: :func:`~lzero_ext.workers.eval_rounds`, recorded as one evaluation)."""

    def __init__(self) -> None:
        self.history: Curve = []
        self.collector: Any = None
        self.evaluator: Any = None
        self.last_train_iter = 0
        self.last_episodes = 0  # episodes of the latest evaluation

    @contextlib.contextmanager
    def hooked(self, entry: Any) -> Iterator[Any]:
        saved = {name: getattr(entry, name) for name in ("Evaluator", "Collector", "BaseLearner", "compile_config")}
        entry.Evaluator = self._evaluator_class(saved["Evaluator"])
        entry.Collector = self._collector_class(saved["Collector"])
        entry.BaseLearner = self._learner_class(saved["BaseLearner"])
        entry.compile_config = functools.partial(_compile_config_unsaved, saved["compile_config"])
        try:
            yield entry
        finally:
            for name, value in saved.items():
                setattr(entry, name, value)

    def _evaluator_class(self, base: type) -> type:
        recorder = self

        class RecordingEvaluator(base):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                recorder.evaluator = self

            def should_eval(self, train_iter: int) -> bool:
                return not recorder.history or super().should_eval(train_iter)

            def eval(self, save_ckpt_fn: Any = None, train_iter: int = -1, envstep: int = 0, **kwargs: Any):
                stop, info = super().eval(save_ckpt_fn, train_iter, envstep, **kwargs)
                recorder.record(envstep, np.atleast_1d(info["eval_episode_return"]).tolist())
                return stop, info

            def final_eval(self, episodes: Optional[int], train_iter: int, envstep: int) -> None:
                recorder.record(envstep, eval_rounds(super().eval, self._env_num, episodes, train_iter, envstep))

        return RecordingEvaluator

    def record(self, envstep: int, returns: List[float]) -> None:
        """One evaluation: its mean return at ``envstep`` joins the curve; its episode count is the latest."""
        self.history.append((int(envstep), float(np.mean(returns))))
        self.last_episodes = len(returns)

    def _collector_class(self, base: type) -> type:
        recorder = self

        class RecordingCollector(base):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                recorder.collector = self

        return RecordingCollector

    def _learner_class(self, base: type) -> type:
        recorder = self

        class RecordingLearner(base):
            def train(self, *args: Any, **kwargs: Any) -> Any:
                out = super().train(*args, **kwargs)
                recorder.last_train_iter = int(self.train_iter)
                return out

        return RecordingLearner


def _compile_config_unsaved(compile_config: Any, *args: Any, **kwargs: Any) -> Any:
    return compile_config(*args, **dict(kwargs, save_cfg=False))
