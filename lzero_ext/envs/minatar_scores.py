"""Reference numbers of the MinAtar suite, measured here (docs/benchmarks.md, MinAtar section).

* ``RANDOM_RETURNS``: mean return of the uniformly random policy over all 6 actions, 50 episodes per
  game (seed 12345), sticky actions 0.1, episodes capped at 500 steps (the ``cpu`` preset's and the
  learning benchmark's cap). The benchmark re-measures its own (20 episodes) at run time.
* ``DPS_TARGETS``: the return at which Dynamic Parameter Scaling counts a game as solved (and the
  learning benchmark's "env steps to target"). Each is well above random and at or above a fixed
  scripted policy measured the same way (20 episodes, cap 500): Freeway "always up" 4.55 (target 2:
  any policy that learned to cross), SpaceInvaders "left, fire, right, fire" 5.55 (target 8),
  Asterix "always left" 0.70 (target 2), Breakout "no-op" 0.60 (target 2), Seaquest "always fire"
  0.00 (target 1).
"""
from types import MappingProxyType
from typing import Mapping

RANDOM_RETURNS: Mapping[str, float] = MappingProxyType({
    "Asterix": 0.50, "Breakout": 0.54, "Freeway": 0.02, "Seaquest": 0.06, "SpaceInvaders": 3.06,
})
DPS_TARGETS: Mapping[str, float] = MappingProxyType({
    "Asterix": 2.0, "Breakout": 2.0, "Freeway": 2.0, "Seaquest": 1.0, "SpaceInvaders": 8.0,
})
