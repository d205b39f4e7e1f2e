"""Multi-task training entry: one shared ScaleZero policy, per-task workers, one process or DDP.

The loop reads like the algorithm (the ScaleZero paper)::

    evaluate (at fractions of each task's env-step budget, or every eval_freq iterations) -> collect one round per
    unfinished task (collect_env_steps_per_round steps each) -> learn (updates_per_round steps, each on one batch
    per task) -> checkpoint -> stop? -> final evaluation (final_eval_episodes per task)

Under ``torchrun`` each rank owns a contiguous block of tasks; ranks meet only in the learn step's
gradient averaging and in a few small agreements (number of updates, whether anyone has data, stop),
so a rank whose tasks have no data yet never leaves the others waiting.
"""
import contextlib
import logging
import math
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

import torch
from ding.policy import create_policy
from ding.utils import set_pkg_seed

from lzero_ext.checkpoint import CheckpointError, capture_rng_state, restore_rng_state, save_checkpoint
from lzero_ext.distributed import all_gather_object, all_reduce_scalar, broadcast_module, init_distributed, split_tasks
from lzero_ext.entry.configs import TaskConfig, compile_task_configs, validate_task_configs
from lzero_ext.entry.dps_curriculum import DPSCurriculum, active_tasks
from lzero_ext.entry.finetune import FinetuneSpec, apply_finetune
from lzero_ext.entry.multitask_sampling import sample_tasks
from lzero_ext.entry.progress import RunProgress
from lzero_ext.entry.resume_check import agree_on_checkpoint
from lzero_ext.entry.run_guard import RunGuard, TrainerGuard, close_quietly
from lzero_ext.entry.run_logging import DiagnosticsRecorder, run_console
from lzero_ext.entry.task_runtime import TaskRuntime
from lzero_ext.domain_diagnostics import domain_summary
from lzero_ext.pictures import plot_diagnostics, plot_domain_diagnostics
from lzero_ext.summary import plot_learning_curves, print_summary_table, summarize, write_summary

logger = logging.getLogger(__name__)
CHECKPOINT_KEYS = ("policy", "train_iter", "tasks", "rng", "world_size", "dps")


@dataclass
class TrainResult:
    """What a run returns: its summary (also in ``summary.json``) and where things were written."""

    exp_dir: str
    summary: Dict[str, Any]
    train_iter: int
    last_learn_log: Dict[str, float] = field(default_factory=dict)  # the last learn step's losses and statistics
    policy: Any = field(repr=False, default=None)


def _task_name(cfg: Any, task_id: int) -> str:
    env_id = cfg.env.get("env_id") or cfg.env.get("env_name") or f"task{task_id}"
    return str(env_id).replace("/", "-")


def _checkpoint_dir(exp_dir: str, rank: int) -> str:
    return os.path.join(exp_dir, "ckpt", f"rank{rank}")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity on Linux; every CPU where the OS has no affinity call, e.g. macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextlib.contextmanager
def intra_op_threads(threads: Optional[int]) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``threads`` (at most the CPUs this process may use) inside the block, and
    put back after; None leaves them alone."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(int(threads), usable_cpus())))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class MultiTaskTrainer:
    """Holds one run's state; :func:`train_scalezero` is the functional front door."""

    run_identity: Optional[Dict[str, Any]] = None  # what a resume must match (set by the run guard; saved)
    guard: TrainerGuard = TrainerGuard()  # the run guard (signals, checkpoint bookkeeping); no-op for a bare trainer

    def __init__(self, task_configs: Sequence[TaskConfig], *, seed: int, exp_name: str, score_kind: str,
                 max_env_step: int, max_train_iter: int, checkpoint_freq: int, save_replay_buffer: bool,
                 progress: bool, initial_eval: bool = True, bar_stream: Any = None,
                 batch_transform: Optional[Callable[[int, Any], Any]] = None, learn_threads: Optional[int] = None) -> None:
        validate_task_configs(task_configs)
        self.dist = init_distributed()
        self.local_task_ids = split_tasks(list(range(len(task_configs))), self.dist.rank, self.dist.world_size)
        self.exp_dir = exp_name
        self.max_env_step, self.max_train_iter = max_env_step, max_train_iter
        self.checkpoint_freq, self.save_replay_buffer = checkpoint_freq, save_replay_buffer
        self.progress = progress and self.dist.rank == 0
        self.bar_stream = bar_stream
        self.batch_transform = batch_transform  # a test seam (lzero_ext.entry.fault_injection); None in production
        self.learn_threads = learn_threads  # torch's CPU threads while learning (None: as the rest of the run)
        self.bar = RunProgress(total=0, enabled=False)  # the run's bar, made in run()
        self.score_kind = score_kind
        self.train_iter = 0
        self.last_learn_log: Dict[str, float] = {}

        cfgs = compile_task_configs(task_configs, seed=seed, exp_name=exp_name, save_cfg=False)  # the run guard writes it
        set_pkg_seed(seed, use_cuda=torch.cuda.is_available())  # the same initial weights on every rank
        self.policy = create_policy(cfgs[0].policy, enable_field=["learn", "collect", "eval"])
        broadcast_module(self.policy._learn_model)
        broadcast_module(self.policy._target_model)
        set_pkg_seed(seed + self.dist.rank, use_cuda=torch.cuda.is_available())  # each rank explores differently
        self.policy.set_task_configs({t: cfgs[t].policy for t in self.local_task_ids})
        log_dir = os.path.join(exp_name, "log")
        self.tasks = [
            TaskRuntime.build(t, _task_name(cfgs[t], t), cfgs[t], self.policy, log_dir, score_kind)
            for t in self.local_task_ids
        ]
        self.cfg = cfgs[0].policy
        # the baseline evaluation before training: the config's (policy.initial_eval) unless the caller turns it off
        self.initial_eval = initial_eval and self.cfg.get("initial_eval", True)
        task_names = self.task_names = [_task_name(cfg, t) for t, cfg in enumerate(cfgs)]
        # a run over several domains: each task's domain, for the cross-domain diagnostics (None: one domain)
        self.task_domains = {t: cfg.policy.domain for t, cfg in enumerate(cfgs) if cfg.policy.get("domain")} or None
        self.dps = DPSCurriculum(self.policy, task_names) if self.cfg.dps.enabled else None
        self.diagnostics = DiagnosticsRecorder(log_dir, self.dist.rank, {t.task_id: t.writer for t in self.tasks})

    # ------------------------------------------------------------------ phases
    @property
    def active(self):
        """This rank's tasks that still collect, evaluate and train (DPS drops solved ones)."""
        return active_tasks(self.tasks, self.dps)

    def evaluate(self, final: bool = False) -> None:
        """Evaluates the tasks that are due, or, when ``final``, every task with ``final_eval_episodes`` on the final
        model: DPS's solved tasks too, so each task's last return comes from the same episode count and shows whether
        a solved task kept its return (not the short evaluation that reached its target)."""
        tasks = self.tasks if final else [task for task in self.active if self._eval_due(task)]
        episodes = self.cfg.final_eval_episodes if final else None
        returns = self.policy.run_workers("eval", {task.task_id: partial(self._evaluate_task, task, episodes, final)
                                           for task in tasks})
        for task in tasks:
            self.bar.task_return(task.name, returns[task.task_id])
            logger.info(f"[eval] {task.name}: mean return {returns[task.task_id]:.2f} at {task.env_steps} env steps")

    def _eval_due(self, task: TaskRuntime) -> bool:
        if not task.record.history and self.initial_eval:  # the baseline (lightzero's should_eval(0) is False)
            return True
        fractions = self.cfg.eval_env_step_fractions
        if fractions is None:
            return task.evaluator.should_eval(self.train_iter)
        if task.env_steps >= self.max_env_step:
            return False  # its budget is spent: the final evaluation comes
        last = task.record.history[-1][0] if task.record.history else 0
        return any(last < fraction * self.max_env_step <= task.env_steps for fraction in fractions)

    def _evaluate_task(self, task: TaskRuntime, episodes: Optional[int], final: bool = False) -> float:
        with self.bar.evaluating(task, episodes=episodes, final=final):
            return task.evaluate(self.train_iter, episodes)

    def collect(self) -> int:
        """One collection round for every task with budget left; returns the transitions collected here."""
        todo = [task for task in self.active if task.env_steps < self.max_env_step]
        before = {task.task_id: task.env_steps for task in todo}
        self.policy.run_workers("collect", {task.task_id: partial(self._collect_task, task) for task in todo})
        return sum(task.env_steps - before[task.task_id] for task in todo)

    def _collect_task(self, task: TaskRuntime) -> None:
        """Collector rounds until the task has ``collect_env_steps_per_round`` new steps (or its budget is spent)."""
        target, start = self.cfg.collect_env_steps_per_round, task.env_steps
        with self.bar.collecting(task):
            task.collect(self.train_iter)
            while target and task.env_steps - start < target and task.env_steps < self.max_env_step:
                task.collect(self.train_iter)

    def updates_this_round(self, collected_here: int) -> int:
        """Replay ratio over the mean per-task transitions (same count on every rank)."""
        if self.cfg.update_per_collect is not None:
            return int(self.cfg.update_per_collect)
        total = all_reduce_scalar(collected_here, "sum")
        return max(1, int(math.ceil(total / self.cfg.task_num * self.cfg.replay_ratio)))

    def learn(self, num_updates: int) -> Optional[Dict[str, float]]:
        with self.guard.updates(), intra_op_threads(self.learn_threads):
            return self._learn(num_updates)

    def _learn(self, num_updates: int) -> Optional[Dict[str, float]]:
        ready = [task for task in self.active if task.has_enough_data()]
        if all_reduce_scalar(len(ready), "max") == 0:
            return None  # no rank has a batch yet: everyone collects again
        log = None
        for _ in range(num_updates):
            if self.train_iter >= self.max_train_iter:
                break
            batches = sample_tasks(ready, self.policy)
            if self.batch_transform is not None:
                batches = [self.batch_transform(self.train_iter + 1, batch) for batch in batches]
            log = self.policy.learn_mode.forward(batches)
            self.train_iter += 1
            self.bar.learning(self.train_iter)
            self.diagnostics.record(self.train_iter, log, getattr(self.policy, "diagnostic_arrays", None))
            for task in ready:
                task.record.updates += 1
                prefix = f"task{task.task_id}/"
                task.log_learn(self.train_iter, {k[len(prefix):]: v for k, v in log.items() if k.startswith(prefix)})
        self.policy.recompute_pos_emb_diff_and_clear_cache()
        return log

    def finished(self) -> bool:
        # Only unsolved tasks count: a task that DPS solved stops collecting and must not keep the run alive.
        local_done = all(task.env_steps >= self.max_env_step for task in self.active)
        out_of_iters = self.train_iter >= self.max_train_iter
        return all_reduce_scalar(float(local_done), "min") == 1.0 or out_of_iters

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> str:
        path = os.path.join(_checkpoint_dir(self.exp_dir, self.dist.rank), f"iteration_{self.train_iter}.pth.tar")
        with self.guard.saving(self):  # signals wait until the checkpoint is whole
            state = {
                "policy": self.policy.learn_mode.state_dict(),
                "train_iter": self.train_iter,
                "task_names": self.task_names,
                "tasks": {t.task_id: t.state_dict(self.save_replay_buffer) for t in self.tasks},
                "rng": capture_rng_state(),
                "world_size": self.dist.world_size,
                "diagnostics": self.diagnostics.state_dict(),
                "dps": None if self.dps is None else self.dps.state_dict(),
                "run_identity": self.run_identity,
            }
            save_checkpoint(path, state, keep_last=3)
        self.guard.saved(self.train_iter, path)
        return path

    def resume(self, candidate: Optional[Any] = None) -> str:
        """Loads the newest intact checkpoint (the same iteration on every rank); returns its path."""
        ckpt_dir = _checkpoint_dir(self.exp_dir, self.dist.rank)
        path, state = agree_on_checkpoint(Path(ckpt_dir), required_keys=CHECKPOINT_KEYS, candidate=candidate)
        if state["world_size"] != self.dist.world_size:
            raise CheckpointError(f"checkpoint in {ckpt_dir} was written by {state['world_size']} ranks; "
                                  f"this run has {self.dist.world_size}: resume with the same number of ranks")
        self.policy.learn_mode.load_state_dict(state["policy"])
        self.train_iter = state["train_iter"]
        for task in self.tasks:
            if task.task_id not in state["tasks"]:
                raise CheckpointError(f"checkpoint in {ckpt_dir} has no state for task {task.task_id} ({task.name})")
            task.load_state_dict(state["tasks"][task.task_id])
        self.diagnostics.load_state_dict(state.get("diagnostics", {}))
        if (state["dps"] is None) != (self.dps is None):
            raise CheckpointError(f"checkpoint in {ckpt_dir} was written with dps.enabled={state['dps'] is not None}; "
                                  f"this run has dps.enabled={self.dps is not None}")
        if self.dps is not None:
            self.dps.load_state_dict(state["dps"])
        restore_rng_state(state["rng"])
        logger.info(f"resumed from {path} at iteration {self.train_iter}")
        self.guard.resumed(self.train_iter, str(path))
        return str(path)

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        budget = self.max_env_step * len(self.tasks)
        bar = self.bar = RunProgress(total=budget, initial=sum(min(t.env_steps, self.max_env_step) for t in self.tasks),
                                     enabled=self.progress, file=self.bar_stream)
        for task in self.tasks:  # resumed runs show their latest returns from the start
            if task.record.eval_return is not None:
                bar.task_return(task.name, task.record.eval_return)
        last_checkpoint = self.train_iter
        try:
            while not self.finished():
                self.evaluate()
                collected = self.collect()
                log = self.learn(self.updates_this_round(collected))
                if self.dps is not None:
                    self.dps.step(self.train_iter, [t.record for t in self.tasks])
                    self.diagnostics.add_scalars(self.dps.log_vars(), self.train_iter)
                if log is not None:
                    self.last_learn_log = log
                if self.train_iter - last_checkpoint >= self.checkpoint_freq:
                    self.save()
                    last_checkpoint = self.train_iter
            self.evaluate(final=True)
            self.save()
            bar.finish()
        finally:
            bar.close()
        logger.info(f"wall time: {bar.time_shares()}")
        return TrainResult(self.exp_dir, self.report(), self.train_iter, self.last_learn_log, self.policy)

    def report(self) -> Dict[str, Any]:
        """Gathers every rank's task records; rank 0 prints the table and writes summary.json and the plot."""
        for task in self.tasks:
            task.record.env_steps = task.env_steps
        records = sorted(sum(all_gather_object([t.record for t in self.tasks]), []), key=lambda r: r.task_id)
        summary = summarize(records, kind=self.score_kind)
        summary["diagnostics"] = self.diagnostics.summary(all_gather_object(self.diagnostics.history))
        if self.dps is not None:
            summary["dps"] = self.dps.report({r.name: r.env_steps for r in records})
        arrays = all_gather_object(self.diagnostics.latest_arrays)
        accumulated = all_gather_object(self.diagnostics.accumulated) if self.task_domains else None
        if self.dist.rank == 0:
            print_summary_table(summary)
            summary["files"] = {"learning_curves": plot_learning_curves(self.exp_dir, records).name,
                                **plot_diagnostics(self.exp_dir, arrays, self.task_names)}
            if accumulated is not None:  # gradient conflict within vs between domains, expert usage by domain
                summary["domain_diagnostics"] = domain_summary(accumulated, self.task_domains)
                summary["files"]["domain_diagnostics"] = plot_domain_diagnostics(
                    Path(self.exp_dir) / "domain_diagnostics.png", summary["domain_diagnostics"])
            write_summary(self.exp_dir, summary, extra={"train_iter": self.train_iter, "world_size": self.dist.world_size,
                                                        **self.bar.timings()})
        return summary

    def close(self) -> None:
        for task in self.tasks:
            close_quietly(task.close)  # workers killed with the job (SIGTERM to the group) close with BrokenPipe
        self.diagnostics.close()


def _console_log_path(exp_name: str) -> str:
    """Where a run's console keeps what it does not show: ``<exp>/log/console.log`` (``console_rank<r>.log`` on
    torchrun ranks other than 0)."""
    rank = int(os.environ.get("RANK", "0"))
    return os.path.join(exp_name, "log", "console.log" if rank == 0 else f"console_rank{rank}.log")


def train_scalezero(task_configs: Sequence[TaskConfig], *, seed: int = 0, max_env_step: int = int(1e10),
                    max_train_iter: int = int(1e10), exp_name: Optional[str] = None, resume: bool = False,
                    score_kind: str = "raw", checkpoint_freq: int = 1000, save_replay_buffer: bool = False,
                    progress: bool = True, initial_eval: bool = True, init_from: Optional[FinetuneSpec] = None,
                    bar_stream: Any = None, overwrite: bool = False,
                    run_labels: Optional[Dict[str, Any]] = None,
                    batch_transform: Optional[Callable[[int, Any], Any]] = None,
                    learn_threads: Optional[int] = None) -> TrainResult:
    """Trains one ScaleZero model on every task in ``task_configs`` (one ``(main, create)`` pair each).

    ``max_env_step`` is a per-task budget: a task that spent it stops collecting; the run ends when
    all have, or after ``max_train_iter`` learner iterations. ``resume`` continues from the latest
    checkpoint in ``<exp_name>/ckpt``; an existing run without ``resume`` needs ``overwrite``;
    ``run_labels`` (e.g. the preset) and the fine-tune mode of ``init_from`` must match on resume. :class:`RunGuard` holds the directory's
    lock and turns SIGINT/SIGTERM into a final checkpoint. Returns a :class:`TrainResult`; rank 0 also writes
    ``summary.json`` and ``learning_curves.png`` into the experiment directory. ``initial_eval=False`` skips
    the baseline evaluation before training; ``init_from`` starts from another run's checkpoint
    (:mod:`lzero_ext.entry.finetune`); ``bar_stream``: where the progress bar goes (default stderr);
    ``batch_transform``: ``(iteration, batch) -> batch`` on every sampled batch, for injected faults in tests
    (:mod:`lzero_ext.entry.fault_injection`); ``learn_threads``: torch's CPU threads while learning (sampling and
    learner steps; None: as the rest of the run).

    The run's console shows the project's lines and the bar only: lightzero's and ding's prints and log
    records go to ``<exp_name>/log/console.log`` (:func:`lzero_ext.entry.run_logging.run_console`; inside a
    verbose run console everything stays on the console too).
    """
    exp_name = task_configs[0][0].exp_name if exp_name is None else exp_name
    labels = {**(run_labels or {}), "finetune": "none" if init_from is None else init_from.identity()}
    with RunGuard(exp_name, task_configs, seed=seed, resume=resume, overwrite=overwrite, labels=labels) as guard, \
            run_console(log_path=_console_log_path(exp_name)) as console_stream:
        bar_stream = console_stream if bar_stream is None else bar_stream
        trainer = MultiTaskTrainer(task_configs, seed=seed, exp_name=exp_name, score_kind=score_kind,
                                   max_env_step=max_env_step, max_train_iter=max_train_iter,
                                   checkpoint_freq=checkpoint_freq, save_replay_buffer=save_replay_buffer,
                                   progress=progress, initial_eval=initial_eval, bar_stream=bar_stream,
                                   batch_transform=batch_transform, learn_threads=learn_threads)
        try:
            with guard.watch(trainer):  # final checkpoint on SIGINT/SIGTERM; divergence keeps the last good one
                if init_from is not None:
                    report = apply_finetune(trainer.policy, init_from, task_names=trainer.task_names, exp_dir=exp_name)
                    logger.info(f"initialised from {report.checkpoint}: {report.shared_loaded} shared tensors; per-task "
                                f"weights from {report.copied} (None: fresh); {report.trainable_params:,} trainable "
                                f"parameters")
                if resume:
                    trainer.resume(guard.resume_candidate)
                guard.record_config()
                return trainer.run()
        finally:
            trainer.close()
