"""DeepMind Control Suite task names: parse ``'domain-task'`` ids and list the ScaleZero DMC-18 tasks.

A task id is ``'<domain>-<task>'`` with dm_control's own names, e.g. ``'cartpole-swingup'``,
``'ball_in_cup-catch'``, ``'finger-turn_easy'``. Every task of ``dm_control.suite.ALL_TASKS`` is
valid; ``DMC18`` holds the 18 tasks of the ScaleZero paper with their
state-observation and action dims.

List the valid ids with ``list_tasks()`` or ``python -m lzero_ext.envs.dmc_tasks --list``.
"""
import argparse
import ctypes.util
import difflib
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Dict, List, Optional, Tuple

SEPARATOR = "-"  # between domain and task; dm_control names use '_' inside a name, never '-'
DEFAULT_ACTION_REPEAT = 4  # control steps per agent step (the ScaleZero paper: frame skip 4 ...)
ACTION_REPEAT_BY_DOMAIN: Dict[str, int] = {"pendulum": 8}  # ... pendulum 8
LIST_HINT = "List valid ids with lzero_ext.envs.dmc_tasks.list_tasks() or `python -m lzero_ext.envs.dmc_tasks --list`"


@dataclass(frozen=True)
class DMCTaskInfo:
    """Sizes of one DMC task with state observations (flattened observation dict)."""

    obs_dim: int
    action_dim: int


# The DMC-18 benchmark of the ScaleZero paper: task id -> (state obs dim, action dim).
DMC18: Dict[str, DMCTaskInfo] = {
    "acrobot-swingup": DMCTaskInfo(6, 1),
    "cartpole-balance": DMCTaskInfo(5, 1),
    "cartpole-balance_sparse": DMCTaskInfo(5, 1),
    "cartpole-swingup": DMCTaskInfo(5, 1),
    "cartpole-swingup_sparse": DMCTaskInfo(5, 1),
    "cheetah-run": DMCTaskInfo(17, 6),
    "ball_in_cup-catch": DMCTaskInfo(8, 2),
    "finger-spin": DMCTaskInfo(9, 2),
    "finger-turn_easy": DMCTaskInfo(12, 2),
    "finger-turn_hard": DMCTaskInfo(12, 2),
    "hopper-hop": DMCTaskInfo(15, 4),
    "hopper-stand": DMCTaskInfo(15, 4),
    "pendulum-swingup": DMCTaskInfo(3, 1),
    "reacher-easy": DMCTaskInfo(6, 2),
    "reacher-hard": DMCTaskInfo(6, 2),
    "walker-run": DMCTaskInfo(24, 6),
    "walker-stand": DMCTaskInfo(24, 6),
    "walker-walk": DMCTaskInfo(24, 6),
}

# DPS target returns of these tasks: lzero_ext.dps.DMC_DPS_TARGETS.


def default_mujoco_gl() -> str:
    """``egl`` (headless rendering) when an EGL library is found, else ``disable``: state observations work on any
    headless machine."""
    return "egl" if ctypes.util.find_library("EGL") else "disable"


def load_suite() -> ModuleType:
    """``dm_control.suite``, imported lazily (loading MuJoCo takes a moment). dm_control picks its GL backend when
    first imported: if ``MUJOCO_GL`` is unset it is :func:`default_mujoco_gl` for that import only (not glfw,
    which warns on a headless machine), and unset again afterwards."""
    unset = "MUJOCO_GL" not in os.environ
    if unset:
        os.environ["MUJOCO_GL"] = default_mujoco_gl()
    try:
        from dm_control import suite
    finally:
        if unset:
            os.environ.pop("MUJOCO_GL", None)
    return suite


def _tasks_by_domain() -> Dict[str, Tuple[str, ...]]:
    suite = load_suite()

    by_domain: Dict[str, List[str]] = {}
    for domain, task in suite.ALL_TASKS:
        by_domain.setdefault(domain, []).append(task)
    return {domain: tuple(tasks) for domain, tasks in by_domain.items()}


def task_id(domain: str, task: str) -> str:
    """``('cartpole', 'swingup')`` -> ``'cartpole-swingup'``."""
    return f"{domain}{SEPARATOR}{task}"


def list_tasks() -> List[str]:
    """Every task id of ``dm_control.suite``, sorted."""
    return sorted(task_id(domain, task) for domain, tasks in _tasks_by_domain().items() for task in tasks)


def resolve_task(env_id: str) -> Tuple[str, str]:
    """``'cartpole-swingup'`` -> ``('cartpole', 'swingup')``.

    Raises:
        ValueError: malformed id, unknown domain or unknown task; the message suggests close matches
        (``Did you mean ...?``) and how to list valid ids.
    """
    if not isinstance(env_id, str) or env_id.count(SEPARATOR) != 1:
        raise ValueError(f"DMC env_id must be '<domain>{SEPARATOR}<task>' (e.g. 'cartpole-swingup'), got {env_id!r}. "
                         f"{LIST_HINT}.")
    domain, task = (part.strip() for part in env_id.split(SEPARATOR))
    by_domain = _tasks_by_domain()
    if domain not in by_domain:
        close = difflib.get_close_matches(domain, list(by_domain), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(d) for d in close)}?" if close else ""
        raise ValueError(f"Unknown DMC domain {domain!r} in {env_id!r}.{hint} {LIST_HINT}.")
    if task not in by_domain[domain]:
        close = difflib.get_close_matches(task, list(by_domain[domain]), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(task_id(domain, t)) for t in close)}?" if close else ""
        raise ValueError(f"Unknown task {task!r} for DMC domain {domain!r}.{hint} "
                         f"Its tasks: {', '.join(by_domain[domain])}.")
    return domain, task


def default_action_repeat(env_id: str) -> int:
    """Control steps per agent step used by ScaleZero: 8 for pendulum, 4 otherwise."""
    domain, _ = resolve_task(env_id)
    return ACTION_REPEAT_BY_DOMAIN.get(domain, DEFAULT_ACTION_REPEAT)


def main(argv: Optional[List[str]] = None) -> None:
    """Command line: ``--list`` prints every task id; ``--dmc18`` the DMC-18 table; ids given as arguments are checked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print every valid task id")
    parser.add_argument("--dmc18", action="store_true", help="print the DMC-18 tasks with obs/action dims")
    parser.add_argument("ids", nargs="*", help="task ids to check")
    args = parser.parse_args(argv)
    if args.list or not (args.ids or args.dmc18):
        print("\n".join(list_tasks()))
    if args.dmc18:
        for name, info in DMC18.items():
            print(f"{name:26s} obs {info.obs_dim:3d}  action {info.action_dim}")
    for name in args.ids:
        print(f"{name} -> {resolve_task(name)}")


if __name__ == "__main__":
    main()
