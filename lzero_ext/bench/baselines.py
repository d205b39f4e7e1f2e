"""Returns of MinAtar's reference policies: the uniformly random policy and every constant action.

``python -m lzero_ext.bench baselines [--episodes 50] [--seed 12345] [--max-episode-steps 500] [--games ...]``

Each policy plays ``episodes`` episodes of a fresh ``minatar_scalezero`` env (``MinAtarEnv``: all 6 actions
legal, sticky actions 0.1) seeded with ``seed``, so every policy meets the same sequence of episode seeds.
The defaults are those of ``lzero_ext.envs.minatar_scores``, whose ``RANDOM_RETURNS`` and
``CONSTANT_ACTION_RETURNS`` are this command's output. A game counts as learned only above both
(``lzero_ext.bench.learning_report.learned``; docs/benchmarks.md, MinAtar section).

Example:
    >>> b = measure("Breakout", episodes=2, max_episode_steps=50)
    >>> sorted(b.constant) == list(range(6)) and b.best_action in b.constant
    True
"""
import argparse
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from tabulate import tabulate

from lzero_ext.envs.minatar_scores import (CONSTANT_ACTION_RETURNS, MEASURED_EPISODES, MEASURED_MAX_EPISODE_STEPS,
                                           MEASURED_SEED, MEASURED_STICKY_ACTION_PROB, RANDOM_RETURNS)

# MinAtar's action ids (minatar.Environment's action set 'n', 'l', 'u', 'r', 'd', 'f').
ACTION_NAMES = ("no-op", "left", "up", "right", "down", "fire")


@dataclass(frozen=True)
class Baselines:
    """Mean returns of one game's reference policies, with how they were measured."""

    game: str
    random: float  # uniformly random over the legal actions
    constant: Dict[int, float]  # action id -> mean return of always playing it
    episodes: int
    seed: int
    max_episode_steps: Optional[int]

    @property
    def best_action(self) -> int:
        """The constant action of the highest mean return (the lowest id of a tie)."""
        return max(self.constant, key=lambda a: (self.constant[a], -a))

    @property
    def best_constant(self) -> float:
        return self.constant[self.best_action]


def mean_return(env: Any, act: Callable[[], Any], *, episodes: int, seed: int) -> float:
    """Mean return of ``episodes`` episodes of ``env`` (a ScaleZero env, seeded with ``seed`` first), acting
    ``act()`` at every step."""
    env.seed(seed)
    returns = []
    for _ in range(episodes):
        env.reset()
        while True:
            timestep = env.step(act())
            if timestep.done:
                returns.append(float(timestep.info["eval_episode_return"]))
                break
    return statistics.fmean(returns)


def measure(game: str, *, episodes: int = MEASURED_EPISODES, seed: int = MEASURED_SEED,
            max_episode_steps: Optional[int] = MEASURED_MAX_EPISODE_STEPS,
            sticky_action_prob: float = MEASURED_STICKY_ACTION_PROB) -> Baselines:
    """The random policy's and every constant action's mean return on ``game``, each from a fresh env."""
    from lzero_ext.envs.minatar_env import MinAtarEnv

    def make() -> MinAtarEnv:
        return MinAtarEnv(dict(env_id=game, max_episode_steps=max_episode_steps, sticky_action_prob=sticky_action_prob))

    env = make()
    random = mean_return(env, env.random_action, episodes=episodes, seed=seed)
    constant = {}
    for action in env.legal_actions.tolist():
        env = make()
        constant[action] = mean_return(env, lambda: action, episodes=episodes, seed=seed)
    return Baselines(env.game, random, constant, episodes, seed, max_episode_steps)


def baseline_returns(game: str, *, max_episode_steps: Optional[int], sticky_action_prob: float) -> Tuple[float, float]:
    """(random, best constant action) mean returns of ``game``: the committed ``minatar_scores`` numbers where the
    env matches their measurement (cap and sticky actions), else measured now the same way (:func:`measure`)."""
    if max_episode_steps == MEASURED_MAX_EPISODE_STEPS and sticky_action_prob == MEASURED_STICKY_ACTION_PROB:
        return RANDOM_RETURNS[game], CONSTANT_ACTION_RETURNS[game].mean_return
    b = measure(game, max_episode_steps=max_episode_steps, sticky_action_prob=sticky_action_prob)
    return b.random, b.best_constant


def table(baselines: Sequence[Baselines]) -> str:
    """One row per game: the random policy, every constant action and the best of them."""
    rows = [[b.game, f"{b.random:.2f}"] + [f"{b.constant.get(a, float('nan')):.2f}" for a in range(len(ACTION_NAMES))]
            + [f"{b.best_constant:.2f} ({ACTION_NAMES[b.best_action]})"] for b in baselines]
    return tabulate(rows, headers=["game", "random"] + [f"always {name}" for name in ACTION_NAMES] + ["best constant"],
                    disable_numparse=True)


def main(argv: Optional[List[str]] = None) -> List[Baselines]:
    from lzero_ext.envs.minatar_env import list_games

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="+", default=list_games(), help="MinAtar games (default: all five)")
    parser.add_argument("--episodes", type=int, default=MEASURED_EPISODES, help="episodes per policy and game")
    parser.add_argument("--seed", type=int, default=MEASURED_SEED)
    parser.add_argument("--max-episode-steps", type=int, default=MEASURED_MAX_EPISODE_STEPS,
                        help="episode cap in agent steps (0: none)")
    parser.add_argument("--sticky-action-prob", type=float, default=MEASURED_STICKY_ACTION_PROB)
    args = parser.parse_args(argv)
    results = [measure(game, episodes=args.episodes, seed=args.seed, max_episode_steps=args.max_episode_steps or None,
                       sticky_action_prob=args.sticky_action_prob) for game in args.games]
    cap = f"cap {args.max_episode_steps} steps" if args.max_episode_steps else "no cap"
    print(f"MinAtar mean returns, {args.episodes} episodes per policy, seed {args.seed}, sticky actions "
          f"{args.sticky_action_prob}, {cap}\n\n{table(results)}")
    return results


if __name__ == "__main__":
    main()
