"""Reference numbers of the MinAtar suite, measured here (see docs/benchmarks.md, MinAtar section).

* ``RANDOM_RETURNS``: mean return of the uniformly random policy over all 6 actions, 50 episodes per
  game (seed 12345), sticky actions 0.1, episodes capped at 1,000 steps (the presets' cap);
* ``DPS_TARGETS``: the return at which Dynamic Parameter Scaling counts a game as solved (and the
  learning benchmark's "env steps to target"): clearly above random, within reach of the ``cpu``
  budget (docs/results/minatar_budget_notes.md).
"""
from types import MappingProxyType
from typing import Mapping

RANDOM_RETURNS: Mapping[str, float] = MappingProxyType({
    "Asterix": 0.50, "Breakout": 0.54, "Freeway": 0.04, "Seaquest": 0.06, "SpaceInvaders": 3.06,
})
DPS_TARGETS: Mapping[str, float] = MappingProxyType({
    "Asterix": 2.0, "Breakout": 2.0, "Freeway": 2.0, "Seaquest": 1.0, "SpaceInvaders": 8.0,
})
