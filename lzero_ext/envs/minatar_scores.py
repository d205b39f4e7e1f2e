"""Reference numbers of the MinAtar suite, measured here (docs/benchmarks.md, MinAtar section).

* ``RANDOM_RETURNS``: mean return of the uniformly random policy over all 6 actions, 50 episodes per
  game (seed 12345), sticky actions 0.1, episodes capped at 500 steps (the ``cpu`` preset's and the
  learning benchmark's cap). The benchmark re-measures its own (20 episodes) at run time.
* ``CONSTANT_ACTION_RETURNS``: per game the best constant-action policy (always the same action id, all 6
  tried) and its mean return, measured like ``RANDOM_RETURNS`` (50 episodes per action, seed 12345, sticky
  actions 0.1, cap 500). Ties go to the lowest action id. A game counts as learned only when the 95%
  confidence interval of the final return lies above both these and ``RANDOM_RETURNS``
  (``lzero_ext.bench.learning_report.learned``). Both tables are the output of
  ``python -m lzero_ext.bench baselines`` (``lzero_ext.bench.baselines``), which prints every action's return.
* ``DPS_TARGETS``: the return at which Dynamic Parameter Scaling counts a game as solved (and the
  learning benchmark's "env steps to target"). Each lies clearly above max(random, best constant action),
  so that no trivial policy counts as solved: Asterix 2 (bar 0.66, "always left"), Breakout 2 (bar 0.54,
  random), Freeway 8 (bar 5.06, "always up"), Seaquest 1 (bar 0.06, random), SpaceInvaders 8 (bar 3.06,
  random; the scripted "left, fire, right, fire" cycle returns 4.80, measured like the tables above).
"""
from types import MappingProxyType
from typing import Mapping, NamedTuple


class ConstantAction(NamedTuple):
    """The best constant-action policy of a game: its MinAtar action id and name, and its mean return."""

    action: int
    name: str
    mean_return: float


# How RANDOM_RETURNS and CONSTANT_ACTION_RETURNS were measured (lzero_ext.bench.baselines' defaults).
MEASURED_EPISODES = 50  # per policy and game
MEASURED_SEED = 12345
MEASURED_STICKY_ACTION_PROB = 0.1
MEASURED_MAX_EPISODE_STEPS = 500

RANDOM_RETURNS: Mapping[str, float] = MappingProxyType({
    "Asterix": 0.50, "Breakout": 0.54, "Freeway": 0.02, "Seaquest": 0.06, "SpaceInvaders": 3.06,
})
CONSTANT_ACTION_RETURNS: Mapping[str, ConstantAction] = MappingProxyType({
    "Asterix": ConstantAction(1, "left", 0.66), "Breakout": ConstantAction(0, "no-op", 0.52),
    "Freeway": ConstantAction(2, "up", 5.06), "Seaquest": ConstantAction(0, "no-op", 0.00),
    "SpaceInvaders": ConstantAction(5, "fire", 3.00),
})
DPS_TARGETS: Mapping[str, float] = MappingProxyType({
    "Asterix": 2.0, "Breakout": 2.0, "Freeway": 8.0, "Seaquest": 1.0, "SpaceInvaders": 8.0,
})
