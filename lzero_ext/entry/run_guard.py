"""Never lose or corrupt a run: the checks and bookkeeping around one training job.

:class:`RunGuard` wraps a run of :func:`~lzero_ext.entry.train_scalezero.train_scalezero`:

- before anything is written: the experiment path must be a directory; ``world_size <= tasks``;
  the directory is created and checked (writable, free space: :func:`~lzero_ext.fs_errors.check_output_dir`);
  an existing run (checkpoints or ``summary.json``) needs ``resume`` or ``overwrite``; with
  ``resume`` the number of ranks must be the run's (each rank says so and stops, before any
  collective), the newest intact checkpoint is loaded and its stored :func:`run_identity` compared
  with this run's (one line naming the differing keys);
- rank 0 holds the directory's :class:`~lzero_ext.entry.run_lock.ExperimentLock`;
- SIGINT / SIGTERM / SIGHUP (:class:`~lzero_ext.entry.run_signals.RunSignals`) never interrupt a
  learner step or a checkpoint write; on one, :meth:`RunGuard.watch` saves a final checkpoint when a
  learner iteration ran since the last one and fills in the true one-line message; a dead env worker
  process ends the run the same way (:class:`EnvWorkerDied`, naming the worker);
- divergence (:class:`~lzero_ext.divergence.DivergenceError`) gets its iteration and task name, and
  no checkpoint with non-finite parameters is ever written;
- ``total_config.py`` is (re)written, atomically, only once a resume has succeeded; a different previous
  one is kept as ``total_config.<time>.py``; a free-space pre-flight warns below a few checkpoints' size.

Example (what ``train_scalezero`` does)::

    with RunGuard(exp_dir, task_configs, seed=0, resume=True) as guard:
        trainer = MultiTaskTrainer(...)
        with guard.watch(trainer):
            trainer.resume(guard.resume_candidate)
            guard.record_config()
            trainer.run()
"""
import contextlib
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ContextManager, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from lzero_ext.checkpoint import CKPT_SUBDIR, ITERATION_FILE, CheckpointError, atomic_write, load_newest_intact
from lzero_ext.distributed import split_tasks
from lzero_ext.divergence import DivergenceError, check_finite_parameters
from lzero_ext.entry.configs import compile_task_configs, save_task_configs, validate_task_configs
from lzero_ext.entry.resume_check import check_resume_compatible, run_identity
from lzero_ext.entry.run_lock import ExperimentLock
from lzero_ext.entry.run_signals import RunInterrupted, RunSignals
from lzero_ext.fs_errors import check_output_dir

logger = logging.getLogger(__name__)
RUN_MARKERS = ("summary.json",)  # besides checkpoints: files that mean "a run lives here"
# Every file and directory a run writes into its experiment directory (besides run.lock): --overwrite removes them.
OVERWRITTEN = (CKPT_SUBDIR, "log", "evaluate", "summary.json", "learning_curves.png", "expert_usage.png",
               "grad_cosine.png", "domain_diagnostics.png", "total_config.py", "finetune.json")
OVERWRITTEN_PATTERNS = ("total_config.*.py",)  # configs kept by resumes with other settings
CHECKPOINTS_OF_FREE_SPACE = 3  # warn when the disk holds fewer checkpoints than this
CONFIG_FILE = "total_config.py"


class TrainerGuard:
    """What a trainer tells its run's guard: around updates and saves (deferring signals), after a save and after
    a resume. This no-op base is a bare trainer's (tests, benchmarks); :class:`RunGuard` is a real run's."""

    def updates(self) -> ContextManager[None]:
        return contextlib.nullcontext()

    def saving(self, trainer: Any) -> ContextManager[None]:
        return contextlib.nullcontext()

    def saved(self, iteration: int, path: str) -> None:
        pass

    def resumed(self, iteration: int, path: str) -> None:
        pass


class RunGuardError(ValueError):
    """An experiment directory that cannot be used as asked (one line, for the CLI)."""


class EnvWorkerDied(RunGuardError):
    """An env worker process died during the run (killed, out of memory): one line, after a final checkpoint."""


class WorldSizeMismatch(CheckpointError):
    """A resume with another number of ranks than the run's checkpoints. Every rank prints it (``every_rank``):
    each one stops on its own, before any collective."""

    every_rank = True


def checkpoint_ranks(exp_dir: Path) -> int:
    """How many ranks wrote the run's checkpoints: the highest ``ckpt/rank<r>`` holding one, plus 1 (0: none)."""
    ranks = [int(d.name[4:]) for d in (exp_dir / CKPT_SUBDIR).glob("rank*")
             if d.name[4:].isdigit() and any(ITERATION_FILE.match(p.name) for p in d.iterdir())]
    return max(ranks) + 1 if ranks else 0


def _rank_from_env() -> Tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


QUIET_CLOSE_ERRORS = (BrokenPipeError, ConnectionResetError, EOFError)  # env workers that died with the job


def close_quietly(close: Any) -> None:
    """Calls ``close()``; a pipe to an env worker that was already killed (SIGTERM to the process
    group, or Ctrl-C) is not an error at shutdown."""
    try:
        close()
    except QUIET_CLOSE_ERRORS as error:
        logger.debug(f"ignored while closing: {type(error).__name__}: {error}")


def _caused_by(error: BaseException, kinds: Tuple[type, ...]) -> Optional[BaseException]:
    """The first exception of ``kinds`` in ``error``'s cause / context chain (ding's env managers wrap a worker's
    broken pipe in ``RuntimeError('Exception in thread')``), else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kinds):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def dead_env_workers(trainer: Any) -> List[str]:
    """``'the collector env worker 1 of task 0 (Pong)'`` for every env worker process of ``trainer``'s tasks that is
    no longer alive (ding's subprocess env managers; in-process ones have none)."""
    dead = []
    for task in getattr(trainer, "tasks", ()):
        for role, worker in (("collector", task.collector), ("evaluator", task.evaluator)):
            processes = getattr(getattr(worker, "_env", None), "_subprocesses", None) or {}
            dead += [f"the {role} env worker {env_id} of task {task.task_id} ({task.name})"
                     for env_id, process in sorted(processes.items()) if not process.is_alive()]
    return dead


def existing_checkpoints(exp_dir: Path) -> Sequence[Path]:
    ckpt = exp_dir / CKPT_SUBDIR
    return sorted(p for p in ckpt.glob("rank*/*.pth.tar") if ITERATION_FILE.match(p.name)) if ckpt.is_dir() else []


def prepare_run_dir(exp_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Applies the reuse rule: an existing run needs ``resume`` (continue) or ``overwrite`` (start over)."""
    holds_run = bool(existing_checkpoints(exp_dir)) or any((exp_dir / m).exists() for m in RUN_MARKERS)
    if not holds_run or resume:
        return
    if not overwrite:
        raise RunGuardError(f"{exp_dir} already holds a run: continue it with --resume, start it over with --overwrite, "
                            f"or choose a new --exp-name")
    logger.warning(f"--overwrite: removing the previous run's checkpoints, logs, summary, configs and fine-tune "
                   f"settings in {exp_dir}")
    for path in [exp_dir / name for name in OVERWRITTEN] + [p for pattern in OVERWRITTEN_PATTERNS
                                                            for p in exp_dir.glob(pattern)]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def checkpoint_bytes_estimate(policy: Any) -> int:
    """A checkpoint's size: learn and target model plus AdamW's two moments, 4 copies of the parameters."""
    return 4 * sum(p.numel() * p.element_size() for p in policy._learn_model.parameters())


def check_free_space(directory: Path, checkpoint_bytes: int, *, count: int = CHECKPOINTS_OF_FREE_SPACE) -> Optional[str]:
    """A warning (also logged) when ``directory``'s disk has room for fewer than ``count`` checkpoints."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return None
    if free >= count * checkpoint_bytes:
        return None
    message = (f"only {free / 2**20:.1f} MiB free on the disk of {directory}, less than {count} checkpoints "
               f"(~{checkpoint_bytes / 2**20:.1f} MiB each): checkpoints may fail with 'no space left on device'")
    logger.warning(message)
    return message


class RunGuard(TrainerGuard):
    """The checks around one run; see the module docstring. Enter it before building the trainer."""

    def __init__(self, exp_dir: str, task_configs: Sequence[Any], *, seed: int, resume: bool, overwrite: bool = False,
                 labels: Optional[Mapping[str, Any]] = None) -> None:
        self.exp_dir = Path(exp_dir)
        self.task_configs, self.seed = task_configs, seed
        self.resume, self.overwrite, self.labels = resume, overwrite, dict(labels or {})
        self.rank, self.world_size = _rank_from_env()
        self.signals = RunSignals()
        self.lock: Optional[ExperimentLock] = None
        self.identity: Dict[str, Any] = {}
        self.compiled: Sequence[Any] = ()
        self.resume_candidate: Optional[Tuple[Path, Dict[str, Any]]] = None
        self.last_saved: Optional[Tuple[int, str]] = None  # (iteration, path) of the newest checkpoint

    # ------------------------------------------------------------------ before the trainer exists
    def __enter__(self) -> "RunGuard":
        self.signals.__enter__()
        try:
            self._preflight()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _preflight(self) -> None:
        if self.resume and self.overwrite:
            raise RunGuardError("--resume and --overwrite exclude each other: continue the run or start it over")
        validate_task_configs(self.task_configs)
        split_tasks(list(range(len(self.task_configs))), self.rank, self.world_size)  # too many ranks: one clear error
        if not str(self.exp_dir).strip():
            raise RunGuardError("--exp-name is empty: give the experiment directory a name")
        if os.path.exists(self.exp_dir) and not os.path.isdir(self.exp_dir):
            raise RunGuardError(f"--exp-name {self.exp_dir} is an existing file, not a directory: choose another --exp-name")
        self.compiled = compile_task_configs(self.task_configs, seed=self.seed, exp_name=str(self.exp_dir), save_cfg=False)
        self.identity = run_identity(self.compiled, self.labels)
        if self.resume and not os.path.isdir(self.exp_dir):
            raise CheckpointError(f"no checkpoints in {self.exp_dir / CKPT_SUBDIR}: nothing to resume from "
                                  f"(start without --resume)")
        check_output_dir(self.exp_dir, flag="--exp-name")  # name, type, permissions, free space: before any file
        if self.rank == 0:
            self.lock = ExperimentLock(self.exp_dir).acquire()
            prepare_run_dir(self.exp_dir, resume=self.resume, overwrite=self.overwrite)
        if self.resume:
            self._check_world_size(checkpoint_ranks(self.exp_dir))
            ckpt_dir = self.exp_dir / CKPT_SUBDIR / f"rank{self.rank}"
            if not ckpt_dir.is_dir():
                raise CheckpointError(f"no checkpoints in {ckpt_dir}: nothing to resume from (start without --resume)")
            path, state = self.resume_candidate = load_newest_intact(ckpt_dir, required_keys=("train_iter",))
            if isinstance(state.get("world_size"), int):
                self._check_world_size(state["world_size"])
            check_resume_compatible(state.get("run_identity"), self.identity, path)

    def _check_world_size(self, saved: int) -> None:
        """Every rank stops at once (no collective is waited for) when the run was written by another number of ranks."""
        if saved and saved != self.world_size:
            raise WorldSizeMismatch(f"cannot resume: {self.exp_dir} was written by {saved} rank(s); this run has "
                                    f"{self.world_size}: resume with {saved} rank(s) (torchrun --nproc_per_node / "
                                    f"--nnodes), or start a new --exp-name")

    def __exit__(self, *exc: Any) -> None:
        if self.lock is not None:
            self.lock.release()
        self.signals.__exit__()

    # ------------------------------------------------------------------ around the trainer
    @contextmanager
    def watch(self, trainer: Any) -> Iterator[None]:
        """Attaches to ``trainer`` (it defers signals around its updates and saves, refuses a non-finite save and
        reports its checkpoints: :class:`TrainerGuard`) and handles the end of the run."""
        self._hook(trainer)
        check_free_space(self.exp_dir, checkpoint_bytes_estimate(trainer.policy))
        try:
            yield
        except RunInterrupted as stop:
            stop.message = self._final_checkpoint(trainer, stop)
            raise
        except DivergenceError as error:
            error.iteration = trainer.train_iter + 1
            error.task_name = {t.task_id: t.name for t in trainer.tasks}.get(error.task_id)
            error.last_checkpoint = None if self.last_saved is None else self.last_saved[1]
            raise
        except Exception as error:
            if self.signals.received is None:
                dead = dead_env_workers(trainer)
                if not dead and not _caused_by(error, QUIET_CLOSE_ERRORS):
                    raise
                if not dead:  # the pipe broke as the worker died: give it a moment to be reaped
                    time.sleep(0.5)
                    dead = dead_env_workers(trainer)
                cause = _caused_by(error, QUIET_CLOSE_ERRORS) or error
                head = (f"{', '.join(dead) or 'an env worker or a pipe of this run'} died "
                        f"({type(cause).__name__}) at iteration {trainer.train_iter}")
                raise EnvWorkerDied(self._final_checkpoint(trainer, head=head)) from None
            # Under DDP a signalled peer that already left breaks this rank's collective ("Connection closed by
            # peer") while its own signal waits for the learner step: that is the same interrupt, not a crash.
            stop = RunInterrupted(self.signals.received)
            stop.message = self._final_checkpoint(trainer, stop)
            raise stop from None

    def _hook(self, trainer: Any) -> None:
        trainer.run_identity = self.identity
        trainer.guard = self

    # ------------------------------------------------------------------ called by the trainer (TrainerGuard)
    def updates(self) -> ContextManager[None]:
        return self.signals.deferred()  # a final checkpoint never holds a half-applied update

    def saving(self, trainer: Any) -> ContextManager[None]:
        check_finite_parameters(trainer.policy._learn_model.parameters())  # keep the last good checkpoint
        return self.signals.deferred()

    def saved(self, iteration: int, path: str) -> None:
        self.last_saved = (iteration, str(path))

    def resumed(self, iteration: int, path: str) -> None:
        self.resume_candidate = None  # the loaded state (maybe a replay buffer) is not kept for the whole run
        self.last_saved = (iteration, str(path))

    def _final_checkpoint(self, trainer: Any, stop: Optional[RunInterrupted] = None, *, head: str = "") -> str:
        """Saves when a learner iteration ran since the last checkpoint; returns the one true line, which starts
        with ``head`` (default: the signal and the iteration)."""
        head = head or f"interrupted by {stop.signal_name} at iteration {trainer.train_iter}"
        if self.last_saved is not None and self.last_saved[0] == trainer.train_iter:
            return f"{head}: the last checkpoint {self.last_saved[1]} is up to date; continue with --resume"
        if trainer.train_iter == 0:
            return f"{head}: no learner iteration ran, no checkpoint was written (start again without --resume)"
        try:
            path = trainer.save()
        except (CheckpointError, DivergenceError, OSError) as error:
            kept = ("no checkpoint exists" if self.last_saved is None
                    else f"the last checkpoint is {self.last_saved[1]} (iteration {self.last_saved[0]})")
            return f"{head}: the final checkpoint failed ({error}); {kept}"
        return f"{head}: saved a final checkpoint {path}; continue with --resume"

    def record_config(self) -> Optional[Path]:
        """Rank 0 writes ``total_config.py`` (after a successful resume); a different old one is kept."""
        if self.rank != 0:
            return None
        path = self.exp_dir / CONFIG_FILE
        kept = path.with_name(f"total_config.{time.strftime('%Y%m%d-%H%M%S')}.py")
        previous = path.read_bytes() if path.is_file() else None
        if previous is not None:  # first, atomically: a failure while writing the new one loses nothing
            atomic_write(kept, lambda f: f.write(previous))
        try:
            save_task_configs(str(self.exp_dir), self.compiled)  # atomic too: total_config.py is whole, old or new
        except BaseException:
            if previous is not None:
                kept.unlink(missing_ok=True)  # total_config.py is still the previous one
            raise
        if previous is not None:
            if previous == path.read_bytes():
                kept.unlink()
            else:
                logger.info(f"the run's settings changed: the previous config is kept as {kept}")
        return path
