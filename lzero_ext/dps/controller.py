"""Curriculum controller of Dynamic Parameter Scaling (DPS, docs/dps.md). Pure Python.

The controller decides *when* to enter the next stage; ``lzero_ext.dps.lora.set_dps_stage`` does it.

Rules, with S = ``num_stages`` and the current stage s (0-based):

* **solved**: a task is solved once an evaluation mean return reaches its target
  (``return >= target``); solved is sticky, a later lower return does not unsolve it.
* **no switch before** ``min_stage0_iters`` train iterations (counted from iteration 0), and
  never past the last stage S - 1.
* otherwise switch to s + 1 at the first ``update`` where either
  ``newly_solved >= max(1, ceil(unsolved_at_last_switch / remaining_stages))`` or
  ``train_iter - last_switch_iter >= max_stage_iters``, with

  - ``unsolved_at_last_switch``: tasks not solved when stage s began (all tasks for s = 0);
  - ``newly_solved``: tasks solved since stage s began;
  - ``remaining_stages = S - 1 - s``: switches still available, so the unsolved tasks are spread
    evenly over the adapters that are left (at s = S - 2 every remaining task must be solved);
  - ``last_switch_iter``: iteration of the last switch, 0 for stage 0. So with the presets
    (``min_stage0_iters >= max_stage_iters``) the timeout is already due when stage 0's minimum
    ends: stage 0 lasts exactly until the first update at or after ``min_stage0_iters``.

* once every task is solved no further switch happens (there is nothing left to learn). At
  s = S - 2 the threshold is every remaining task, so there only the timeout can switch.

At most one switch per ``update``. Given the same sequence of ``update`` calls the controller is
deterministic, so DDP ranks fed the same gathered returns agree.
"""
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Set

# Target returns that count a task as solved (docs/dps.md). "(sic)" values are kept
# exactly as upstream uses them, even where they are not the human score.
ATARI_DPS_TARGETS: Dict[str, float] = {
    'Pong': 20.0, 'MsPacman': 6951.6, 'Seaquest': 42054.7, 'Boxing': 12.1, 'Alien': 7127.7,
    'ChopperCommand': 7387.8, 'Hero': 30826.4, 'RoadRunner': 7845.0, 'Amidar': 100.5,  # (sic)
    'Assault': 742.0, 'Asterix': 1503.3,  # (sic)
    'BankHeist': 753.1, 'BattleZone': 12187.5,  # (sic)
    'CrazyClimber': 15829.4,  # (sic)
    'DemonAttack': 1971.0, 'Freeway': 29.6, 'Frostbite': 334.7,  # (sic)
    'Gopher': 2412.5, 'Jamesbond': 302.8, 'Kangaroo': 3035.0, 'Krull': 2665.5, 'KungFuMaster': 12736.3,  # (sic)
    'PrivateEye': 1001.3,  # (sic)
    'UpNDown': 11693.2, 'Qbert': 13455.0, 'Breakout': 30.5,  # (sic): not the human score, upstream's choice
}
DMC_DPS_TARGETS: Dict[str, float] = {
    'acrobot-swingup': 500.0, 'cartpole-balance': 900.0, 'cartpole-balance_sparse': 950.0,
    'cartpole-swingup': 750.0, 'cartpole-swingup_sparse': 750.0, 'cheetah-run': 550.0,
    'ball_in_cup-catch': 950.0, 'finger-spin': 800.0, 'finger-turn_easy': 950.0, 'finger-turn_hard': 950.0,
    'hopper-hop': 150.0, 'hopper-stand': 600.0, 'pendulum-swingup': 800.0, 'reacher-easy': 900.0,
    'reacher-hard': 900.0, 'walker-run': 500.0, 'walker-stand': 900.0, 'walker-walk': 900.0,
}

DPS_SUITES: FrozenSet[str] = frozenset({'atari', 'dmc'})
DPS_TARGETS: Dict[str, Dict[str, float]] = {'atari': ATARI_DPS_TARGETS, 'dmc': DMC_DPS_TARGETS}
DPS_PRESETS: Dict[str, Dict[str, Any]] = {
    'atari': dict(
        # (int) Stages S: stage 0 trains the whole model, stages 1..S-1 each train one new LoRA adapter.
        num_stages=5,
        # (int) Train iterations before the first switch is allowed.
        min_stage0_iters=50_000,
        # (int) Train iterations after which a stage ends even if too few tasks were newly solved.
        max_stage_iters=20_000,
        # (int) LoRA rank r of every adapter.
        rank=64,
        # (float) lora_alpha: adapters are scaled by lora_alpha / r.
        alpha=32.0,
        # (float) Dropout on the adapter input.
        dropout=0.1,
    ),
    'dmc': dict(num_stages=5, min_stage0_iters=10_000, max_stage_iters=5_000, rank=64, alpha=1.0, dropout=0.0),
}
CONTROLLER_KEYS = ('num_stages', 'min_stage0_iters', 'max_stage_iters')
LORA_KEYS = ('num_stages', 'rank', 'alpha', 'dropout')  # apply_staged_lora(model, **{k: preset[k] ...})


def dps_preset(suite: str) -> Dict[str, Any]:
    """A copy of ``DPS_PRESETS[suite]`` (``'atari'`` or ``'dmc'``).

    Example:
        >>> preset = dps_preset('dmc')
        >>> preset['alpha'], preset['min_stage0_iters']
        (1.0, 10000)
    """
    if suite not in DPS_SUITES:
        raise ValueError(f"unknown DPS suite {suite!r}; expected one of {sorted(DPS_SUITES)}")
    return dict(DPS_PRESETS[suite])


# gym / ALE ids of Atari games: 'PongNoFrameskip-v4', 'ALE/Pong-v5' -> 'Pong'.
_ATARI_ID = re.compile(r'^(?:ALE/)?(?P<game>.+?)(?:NoFrameskip|Deterministic)?(?:-v\d+)?$')


def _key(name: str) -> str:
    match = _ATARI_ID.match(name.strip())
    return re.sub(r'[^a-z0-9]', '', (match.group('game') if match else name).lower())


def resolve_targets(task_names: Sequence[str], table: Mapping[str, float],
                    overrides: Optional[Mapping[str, float]] = None) -> Dict[str, float]:
    """Target of each task: ``overrides`` by exact name first, then ``table`` by exact name, then by
    game name ('PongNoFrameskip-v4' and 'ALE/Pong-v5' find 'Pong'). Raises naming every task without one.

    Example:
        >>> resolve_targets(['PongNoFrameskip-v4', 'Boxing'], ATARI_DPS_TARGETS, overrides={'Boxing': 50})
        {'PongNoFrameskip-v4': 20.0, 'Boxing': 50.0}
    """
    overrides = dict(overrides or {})
    by_key = {_key(name): float(value) for name, value in table.items()}
    targets, missing = {}, []
    for name in task_names:
        if name in overrides:
            targets[name] = float(overrides[name])
        elif name in table:
            targets[name] = float(table[name])
        elif _key(name) in by_key:
            targets[name] = by_key[_key(name)]
        else:
            missing.append(name)
    if missing:
        raise ValueError(f"no DPS target return for task(s) {missing}: give them in dps.targets (on a zoo config's "
                         f"command line: --dps-target NAME=SCORE)")
    return targets


@dataclass
class DPSController:
    """When to enter the next DPS stage; the rules are in the module docstring.

    Arguments:
        task_names: the tasks, in a fixed order (the names ``update`` receives returns for).
        targets: target return of every task (``resolve_targets`` builds one from a table).
        num_stages: S; stages are 0..S-1.
        min_stage0_iters: no switch before this train iteration.
        max_stage_iters: a stage ends after this many train iterations at the latest.

    Example:
        >>> ctrl = DPSController(['Pong', 'Boxing'], targets={'Pong': 20, 'Boxing': 12.1}, num_stages=3,
        ...                      min_stage0_iters=100, max_stage_iters=50)
        >>> ctrl.update(10, {'Pong': 21.0, 'Boxing': 3.0}) is None  # solved, but too early
        True
        >>> ctrl.update(100, {'Boxing': 5.0})  # 1 newly solved >= ceil(2 unsolved / 2 stages left)
        1
        >>> ctrl.stage, sorted(ctrl.solved), ctrl.unsolved
        (1, ['Pong'], ['Boxing'])
        >>> ctrl.update(150, {'Boxing': 1.0})  # timeout: 50 iterations since the switch
        2
        >>> ctrl.update(10_000, {'Boxing': 1.0}) is None  # last stage reached
        True
    """

    task_names: Sequence[str]
    targets: Mapping[str, float]
    num_stages: int = 5
    min_stage0_iters: int = 50_000
    max_stage_iters: int = 20_000
    stage: int = field(default=0, init=False)
    solved: Set[str] = field(default_factory=set, init=False)
    last_switch_iter: int = field(default=0, init=False)
    unsolved_at_last_switch: int = field(default=0, init=False)
    solved_at_last_switch: Set[str] = field(default_factory=set, init=False)
    last_iter: int = field(default=0, init=False)
    history: List[Dict[str, Any]] = field(default_factory=list, init=False)  # one entry per switch

    def __post_init__(self) -> None:
        self.task_names = list(self.task_names)
        if not self.task_names or len(set(self.task_names)) != len(self.task_names):
            raise ValueError(f"task_names must be non-empty and unique, got {self.task_names}")
        missing = [name for name in self.task_names if name not in self.targets]
        if missing:
            raise ValueError(f"no DPS target return for task(s) {missing}")
        self.targets = {name: float(self.targets[name]) for name in self.task_names}
        if self.num_stages < 1:
            raise ValueError(f"num_stages must be >= 1, got {self.num_stages}")
        if self.min_stage0_iters < 0 or self.max_stage_iters < 1:
            raise ValueError("min_stage0_iters must be >= 0 and max_stage_iters >= 1, got "
                             f"{self.min_stage0_iters} and {self.max_stage_iters}")
        self.unsolved_at_last_switch = len(self.task_names)

    @classmethod
    def from_preset(cls, suite: str, task_names: Sequence[str], *,
                    targets: Optional[Mapping[str, float]] = None, **overrides: Any) -> 'DPSController':
        """Controller with ``dps_preset(suite)`` values and the suite's targets; ``targets`` overrides
        single tasks' targets, ``overrides`` the preset's controller keys (``CONTROLLER_KEYS``)."""
        unknown = set(overrides) - set(CONTROLLER_KEYS)
        if unknown:
            raise ValueError(f"unknown controller keys {sorted(unknown)}; expected {list(CONTROLLER_KEYS)}")
        config = {key: dps_preset(suite)[key] for key in CONTROLLER_KEYS}
        config.update(overrides)
        return cls(task_names, resolve_targets(task_names, DPS_TARGETS[suite], targets), **config)

    # ------------------------------------------------------------------ views
    @property
    def last_stage(self) -> int:
        return self.num_stages - 1

    @property
    def unsolved(self) -> List[str]:
        """Unsolved tasks, in ``task_names`` order."""
        return [name for name in self.task_names if name not in self.solved]

    @property
    def all_solved(self) -> bool:
        return len(self.solved) == len(self.task_names)

    @property
    def newly_solved(self) -> int:
        """Tasks solved since the current stage began."""
        return len(self.solved - self.solved_at_last_switch)

    @property
    def switch_threshold(self) -> int:
        """Newly solved tasks that end the current stage (meaningless at the last stage)."""
        remaining_stages = max(1, self.last_stage - self.stage)
        return max(1, math.ceil(self.unsolved_at_last_switch / remaining_stages))

    def log_vars(self) -> Dict[str, float]:
        """Scalars for logging (same keys on every call)."""
        return {'dps_stage': float(self.stage), 'dps_num_solved': float(len(self.solved)),
                'dps_newly_solved': float(self.newly_solved), 'dps_switch_threshold': float(self.switch_threshold)}

    # ------------------------------------------------------------------ update
    def update(self, train_iter: int, latest_returns: Mapping[str, float]) -> Optional[int]:
        """Record the latest evaluation mean returns (any subset of tasks) at ``train_iter``; return
        the new stage if this call switched, else None."""
        if train_iter < self.last_iter:
            raise ValueError(f"train_iter went backwards: {train_iter} < {self.last_iter}")
        unknown = [name for name in latest_returns if name not in self.targets]
        if unknown:
            raise ValueError(f"returns for unknown task(s) {unknown}; tasks are {self.task_names}")
        self.last_iter = int(train_iter)
        for name, value in latest_returns.items():
            if float(value) >= self.targets[name]:  # NaN never solves
                self.solved.add(name)

        if self.stage >= self.last_stage or self.all_solved:
            return None
        if self.stage == 0 and train_iter < self.min_stage0_iters:
            return None
        if self.newly_solved >= self.switch_threshold:
            reason = 'solved'
        elif train_iter - self.last_switch_iter >= self.max_stage_iters:
            reason = 'timeout'
        else:
            return None
        self.history.append(dict(train_iter=int(train_iter), stage=self.stage + 1, reason=reason,
                                 newly_solved=self.newly_solved, threshold=self.switch_threshold))
        self.stage += 1
        self.last_switch_iter = int(train_iter)
        self.solved_at_last_switch = set(self.solved)
        self.unsolved_at_last_switch = len(self.unsolved)
        return self.stage

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> Dict[str, Any]:
        """Plain JSON-able state (sets as sorted lists)."""
        return dict(task_names=list(self.task_names), num_stages=self.num_stages, stage=self.stage,
                    solved=sorted(self.solved), last_switch_iter=self.last_switch_iter,
                    unsolved_at_last_switch=self.unsolved_at_last_switch,
                    solved_at_last_switch=sorted(self.solved_at_last_switch), last_iter=self.last_iter,
                    history=[dict(entry) for entry in self.history])

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()`` output; task names and ``num_stages`` must match this controller."""
        if list(state['task_names']) != self.task_names or state['num_stages'] != self.num_stages:
            raise ValueError(f"DPS state is for tasks {state['task_names']} with {state['num_stages']} stages; "
                             f"this controller has {self.task_names} with {self.num_stages}")
        if not 0 <= state['stage'] < self.num_stages:
            raise ValueError(f"stage {state['stage']} out of range for num_stages={self.num_stages}")
        self.stage = int(state['stage'])
        self.solved = set(state['solved'])
        self.last_switch_iter = int(state['last_switch_iter'])
        self.unsolved_at_last_switch = int(state['unsolved_at_last_switch'])
        self.solved_at_last_switch = set(state['solved_at_last_switch'])
        self.last_iter = int(state['last_iter'])
        self.history = [dict(entry) for entry in state['history']]


# Keys of the policy's ``dps`` config block (documented in ScaleZeroPolicy's default config).
DPS_CONFIG: Dict[str, Any] = dict(enabled=False, suite='atari', num_stages=None, min_stage0_iters=None,
                                  max_stage_iters=None, rank=None, alpha=None, dropout=None, targets=None)


def resolve_dps_config(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """The policy's ``dps`` block with every ``None`` filled from ``DPS_PRESETS[suite]``.

    ``suite`` may be None (e.g. Jericho): then every preset key and the per-task ``targets`` must be given.

    Example:
        >>> resolve_dps_config(dict(DPS_CONFIG, enabled=True, suite='dmc', num_stages=3))['alpha']
        1.0
    """
    unknown = set(cfg) - set(DPS_CONFIG)
    if unknown:
        raise ValueError(f"unknown dps keys {sorted(unknown)}; expected {sorted(DPS_CONFIG)}")
    values = dict(DPS_CONFIG, **cfg)
    suite = values['suite']
    if suite is not None and suite not in DPS_SUITES:
        raise ValueError(f"dps.suite must be one of {sorted(DPS_SUITES)} or None, got {suite!r}")
    preset = dps_preset(suite) if suite is not None else {}
    for key in set(LORA_KEYS) | set(CONTROLLER_KEYS):
        if values[key] is None:
            if key not in preset:
                raise ValueError(f"dps.{key} must be set when dps.suite is None")
            values[key] = preset[key]
    return values


def controller_from_config(cfg: Mapping[str, Any], task_names: Sequence[str]) -> 'DPSController':
    """A :class:`DPSController` for ``task_names`` from the policy's ``dps`` block."""
    values = resolve_dps_config(cfg)
    table = DPS_TARGETS.get(values['suite'], {})
    targets = resolve_targets(task_names, table, values['targets'])
    return DPSController(task_names, targets, **{key: values[key] for key in CONTROLLER_KEYS})
