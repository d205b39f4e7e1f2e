"""Non-finite observations and rewards stopped where they enter: at the env manager of a task.

A NaN or inf coming out of an env (a broken env, a bad game file, a wrapper dividing by zero) would
otherwise reach the replay buffer and surface iterations later as a non-finite loss, blamed on the
learning rate. :class:`FiniteEnvManager` wraps a ding env manager (base or subprocess; it runs in the
trainer's process) and checks every step's observations and rewards; the first non-finite value
raises :class:`NonFiniteEnvError`, one line naming the task, the env and its step. Everything else is
the wrapped manager's (attributes are read through), except that closing it after one of its worker
processes died stops the other workers instead of raising ``BrokenPipeError``.

Example::

    env = FiniteEnvManager(create_env_manager(cfg.env.manager, factories), task_id=1, task_name="Breakout")
    collector = MaskAwareSegmentCollector(env=env, ...)
"""
from typing import Any, Dict

import numpy as np


class NonFiniteEnvError(ValueError):
    """An env returned a NaN or inf observation or reward (one line: task, env, step, what)."""


def _non_finite(value: Any) -> int:
    """How many entries of ``value`` are NaN or inf (0 for non-float data such as token ids)."""
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.complexfloating):
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))


class FiniteEnvManager:
    """A ding env manager whose ``step`` results are checked for NaN / inf (see the module docstring)."""

    def __init__(self, manager: Any, *, task_id: int, task_name: str) -> None:
        self._manager = manager
        self._task = f"task {task_id} ({task_name})"
        self._steps: Dict[int, int] = {}  # env id -> steps taken since the manager was built

    def __getattr__(self, name: str) -> Any:  # everything but step: the wrapped manager's
        try:
            manager = self.__dict__["_manager"]
        except KeyError:  # not built yet (copy, unpickling)
            raise AttributeError(name) from None
        return getattr(manager, name)

    def step(self, actions: Dict[int, Any]) -> Dict[int, Any]:
        timesteps = self._manager.step(actions)
        for env_id, timestep in timesteps.items():
            step = self._steps[env_id] = self._steps.get(env_id, 0) + 1
            obs = timestep.obs.get("observation") if isinstance(timestep.obs, dict) else timestep.obs
            for what, value in (("observation", obs), ("reward", timestep.reward)):
                bad = _non_finite(value)
                if bad:
                    raise NonFiniteEnvError(
                        f"the env returned a non-finite {what} for {self._task}, env {env_id}, at its step {step} "
                        f"({bad} of {np.asarray(value).size} values NaN or inf): the env or its game file is broken "
                        f"(not the learning)")
        return timesteps

    def close(self) -> None:
        """Closes the manager; a worker process that already died (its pipe broken) is not an error here, and
        the other workers are stopped too (ding's close gives up at the first broken pipe and leaves them)."""
        try:
            self._manager.close()
        except (BrokenPipeError, ConnectionResetError, EOFError):
            for process in (getattr(self._manager, "_subprocesses", None) or {}).values():
                process.terminate()
                process.join(timeout=5)

    def __repr__(self) -> str:
        return f"FiniteEnvManager({self._manager!r}, {self._task})"
