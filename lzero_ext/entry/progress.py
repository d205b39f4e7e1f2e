"""The run's progress bar: what the run is doing now, env steps over the whole run with an ETA, and
the latest evaluation return of every task, e.g.::

    eval Pong 340/1000 |███▍      | 4120/12000 env steps [05:12<09:58], Pong -20.0 Breakout 1.0 MsPacman 210.0

That is on a terminal (one that does not report its size gets a 100-column bar). Without one (output piped or written
to a file) the run writes a plain line at every 10% of its env steps instead of redrawing a bar::

    progress 30%: 3600/12000 env steps, 02:15 elapsed, ETA 05:15; latest eval returns Pong -20.0 Breakout 1.0

The trainer announces its phases (:meth:`RunProgress.evaluating`, :meth:`RunProgress.collecting`,
:meth:`RunProgress.learning`); during evaluation and collection the bar counts agent steps as they
happen, by wrapping the worker's policy ``forward`` (lightzero's evaluator and collector call it once
per step of the ready envs), so it moves from the first second. The ETA is the run's average rate
over everything so far (evaluation and learning included), not only collection.

The count stops one short of the total until :meth:`RunProgress.finish` (the final evaluation done and saved), so
100% means done, not "collection done"; meanwhile the description says what runs (``final eval Pong 340/10000``).

Example::

    bar = RunProgress(total=12000, enabled=True)
    with bar.evaluating(task):   # "eval Pong 0/1000", counting steps
        task.evaluate(train_iter)
    bar.task_return("Pong", -20.0)
    bar.close()
"""
import contextlib
import os
import sys
import threading
import time
from typing import IO, Any, Dict, Iterator, Optional

from tqdm import tqdm

BAR_FORMAT = "{desc} |{bar}| {n_fmt}/{total_fmt} env steps [{elapsed}<{remaining}]{postfix}"


def episode_step_cap(env_cfg: Any) -> Optional[int]:
    """Agent steps at which an episode of this env config is cut (None when unknown): Atari's
    ``max_episode_frames / frame_skip``, or ``max_episode_steps``."""
    frames, skip = env_cfg.get("max_episode_frames"), env_cfg.get("frame_skip", 4)
    if frames:
        return int(frames) // int(skip or 1)
    steps = env_cfg.get("max_episode_steps")
    return int(steps) if steps else None


FALLBACK_SIZE = (100, 24)  # columns and rows of a terminal that does not report its size (tqdm draws nothing there)
LINE_STEP = 0.1  # without a terminal: one plain line per 10% of the run


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (a file, a pipe or a closed stream is not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def terminal_columns(stream: Any) -> int:
    """Columns of the terminal behind ``stream``; 0 when it does not say (no file descriptor, a 0x0 pty)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


class RunProgress:
    """The run's progress: a live tqdm bar on a terminal; elsewhere (a log file, a pipe) a plain line at every
    10% of the env steps and a last one at the end, never a ``\r`` redraw. ``enabled=False`` makes every call a
    no-op (other ranks, tests); ``live`` overrides the terminal check of ``file`` (default stderr)."""

    def __init__(self, *, total: int, initial: int = 0, enabled: bool = True, file: Optional[IO[str]] = None,
                 min_interval_s: float = 0.25, live: Optional[bool] = None) -> None:
        self.enabled = enabled
        self.stream = file if file is not None else sys.stderr
        self.live = enabled and (is_terminal(self.stream) if live is None else live)
        self.total = total
        self.n = max(0, min(initial, self._held))
        columns, rows = (None, None) if terminal_columns(self.stream) > 0 else FALLBACK_SIZE
        self.bar = tqdm(total=total, initial=self.n, disable=not self.live, file=self.stream,
                        dynamic_ncols=columns is None, ncols=columns, nrows=rows, bar_format=BAR_FORMAT, smoothing=0.0, mininterval=min_interval_s)
        self.min_interval_s = min_interval_s
        self.returns: Dict[str, float] = {}
        self.phase = ""
        self._last_draw = 0.0
        self._start = time.monotonic()
        self._start_n = self.n
        self._line_at: Optional[int] = None  # env steps when the last plain line was written
        self.seconds: Dict[str, float] = {"eval": 0.0, "collect": 0.0}  # wall time inside each phase
        self._active: Dict[str, int] = {}  # tasks inside each phase now
        self._since: Dict[str, float] = {}
        self._lock = threading.Lock()
        self.set_phase("start")

    # ------------------------------------------------------------------ display
    def set_phase(self, text: str, *, force: bool = True) -> None:
        """Shows ``text`` as the bar's description (redraws at most every ``min_interval_s`` unless ``force``)."""
        self.phase = text
        if not self.live:
            return
        now = time.monotonic()
        if force or now - self._last_draw >= self.min_interval_s:
            self.bar.set_description_str(text, refresh=True)
            self._last_draw = now

    @property
    def _held(self) -> int:
        """The most the count shows before :meth:`finish`: one short of the total."""
        return max(self.total - 1, 0)

    def add_env_steps(self, steps: int) -> None:
        """Counts ``steps`` more (or, negative, fewer) env steps, within ``[0, total - 1]`` until :meth:`finish` (the
        last round may overshoot the budget)."""
        self._show(max(0, min(self._held, self.n + steps)))

    def _show(self, target: int) -> None:
        previous, self.n = self.n, target
        if self.live:
            if target >= self.bar.n:
                self.bar.update(target - self.bar.n)
            else:
                self.bar.n = target
                self.bar.refresh()
        elif self.enabled and self.total and self._tenth(target) > self._tenth(previous):
            self._write_line()

    def task_return(self, name: str, value: float) -> None:
        """Shows ``value`` as ``name``'s latest evaluation return."""
        self.returns[name] = float(value)
        if self.live:
            self.bar.set_postfix_str(self._returns_text(), refresh=True)

    def _returns_text(self) -> str:
        return " ".join(f"{n} {v:.1f}" for n, v in self.returns.items())

    def _tenth(self, n: int) -> int:
        return int(n / self.total / LINE_STEP + 1e-9) if self.total else 0

    def plain_line(self) -> str:
        """``progress 30%: 3600/12000 env steps, 02:15 elapsed, ETA 05:15; latest eval returns Pong -20.0 ...``"""
        elapsed = time.monotonic() - self._start
        done = self.n - self._start_n
        eta = tqdm.format_interval(elapsed * (self.total - self.n) / done) if done > 0 else "?"
        line = (f"progress {self.n / max(self.total, 1):.0%}: {self.n}/{self.total} env steps, "
                f"{tqdm.format_interval(elapsed)} elapsed, ETA {eta}")
        return line + (f"; latest eval returns {self._returns_text()}" if self.returns else "")

    def _write_line(self) -> None:
        self._line_at = self.n
        self.stream.write(self.plain_line() + "\n")
        self.stream.flush()

    def timings(self) -> Dict[str, Any]:
        """``wall_seconds`` since the bar was made (a resumed run: since its resume) and ``phase_seconds`` inside
        evaluation and collection, for ``summary.json``."""
        return {"wall_seconds": time.monotonic() - self._start,
                "phase_seconds": {name: round(s, 3) for name, s in self.seconds.items()}}

    def time_shares(self) -> str:
        """``eval 41%, collect 35%, learn and the rest 24%`` of the wall time since the bar was made."""
        total = max(time.monotonic() - self._start, 1e-9)
        shares = {name: s / total for name, s in self.seconds.items()}
        rest = max(0.0, 1.0 - sum(shares.values()))
        return ", ".join([f"{name} {share:.0%}" for name, share in shares.items()] + [f"learn and the rest {rest:.0%}"])

    @contextlib.contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        """Wall time while at least one task is in ``phase`` (lockstep workers of several tasks overlap)."""
        with self._lock:
            self._active[phase] = self._active.get(phase, 0) + 1
            if self._active[phase] == 1:
                self._since[phase] = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._active[phase] -= 1
                if self._active[phase] == 0:
                    self.seconds[phase] += time.monotonic() - self._since[phase]

    # ------------------------------------------------------------------ phases
    @contextlib.contextmanager
    def _counting_steps(self, worker: Any, on_step: Any) -> Iterator[None]:
        """Wraps ``worker._policy.forward`` (a ding policy-mode namedtuple) to call ``on_step(n_envs)``."""
        policy = worker._policy
        forward = policy.forward

        def counting_forward(*args: Any, **kwargs: Any) -> Any:
            out = forward(*args, **kwargs)
            on_step(len(kwargs.get("ready_env_id") or out or [None]))
            return out

        worker._policy = policy._replace(forward=counting_forward)
        try:
            yield
        finally:
            worker._policy = policy

    @contextlib.contextmanager
    def evaluating(self, task: Any, *, episodes: Optional[int] = None, final: bool = False) -> Iterator[None]:
        """``eval <task> <steps>/<cap x episodes>`` while ``task.evaluate`` runs (``episodes``: None, the env's
        ``n_evaluator_episode``); ``final``: the run's last evaluation."""
        cap = episode_step_cap(task.cfg.env)
        episodes = int(episodes or task.cfg.env.get("n_evaluator_episode") or 1)
        limit = f"/{cap * episodes}" if cap else " steps"
        done = 0

        def on_step(n: int) -> None:
            nonlocal done
            done += n
            self.set_phase(f"{'final ' if final else ''}eval {task.name} {done}{limit}", force=False)

        self.set_phase(f"eval {task.name} 0{limit}")
        with self._timed("eval"):
            if not self.enabled:
                yield
                return
            with self._counting_steps(task.evaluator, on_step):
                yield

    @contextlib.contextmanager
    def collecting(self, task: Any) -> Iterator[None]:
        """``collect <task>`` while ``task.collect`` runs; env steps count up live, then are settled to the
        collector's own count (``task.env_steps``) when it returns."""
        before, counted = task.env_steps, 0

        def on_step(n: int) -> None:
            nonlocal counted
            counted += n
            self.add_env_steps(n)
            self.set_phase(f"collect {task.name}", force=False)

        self.set_phase(f"collect {task.name}")
        with self._timed("collect"):
            if not self.enabled:
                yield
                return
            with self._counting_steps(task.collector, on_step):
                yield
        self.add_env_steps((task.env_steps - before) - counted)  # settle on the collector's count

    def finish(self) -> None:
        """The run is done (final evaluation and checkpoint): the bar reaches 100%."""
        self._show(self.total)

    def learning(self, train_iter: int) -> None:
        """``learn it <train_iter>``, once per learner iteration."""
        self.set_phase(f"learn it {train_iter}", force=False)

    def close(self) -> None:
        """Ends the bar; without a terminal, writes the last plain line unless it was just written."""
        if self.enabled and not self.live and self._line_at != self.n:
            self._write_line()
        self.bar.close()
