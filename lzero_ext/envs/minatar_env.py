"""MinAtar's five games (Young & Tian 2019; PyPI ``minatar``) for LightZero, multi-task ready.

Registered in DI-engine's ``ENV_REGISTRY`` as ``'minatar_scalezero'``. MinAtar plays miniature
Atari games on a 10x10 grid; its state is a (10, 10, C) boolean array, one channel per object kind,
with C per game (Asterix 4, Breakout 4, Freeway 7, Seaquest 10, SpaceInvaders 6). One agent step is
one game frame (there is no frame skip); sticky actions (MinAtar's default 0.1) repeat the previous
action. The ``minatar`` package (GPL-3.0) is used as a dependency only.

Observations are float32 (C, 10, 10). ``observation_shape=(10, 10, 10)`` zero-pads every game to
Seaquest's 10 channels, so that all five games share one observation shape and one image encoder
(the multi-task model's shared image encoder runs once over every task's rows). Every game shares
MinAtar's 6 actions (no-op, left, up, right, down, fire); ``minimal_action_set=True`` keeps that
6-action space and masks the actions a game ignores (Breakout: no-op, left, right), so the shared
action embedding and the policy head keep one layout.
"""
import functools
import re
from typing import Any, Dict, List, Optional, Tuple

import gym
import numpy as np
from ding.envs import BaseEnvTimestep
from ding.utils import ENV_REGISTRY, deep_merge_dicts
from easydict import EasyDict

from lzero_ext.envs.base import ScaleZeroEnv, positive_int, probability

# MinAtar module name -> (CamelCase name, channels). Channels are checked against the package at construction.
GAMES: Dict[str, Tuple[str, int]] = {
    'asterix': ('Asterix', 4),
    'breakout': ('Breakout', 4),
    'freeway': ('Freeway', 7),
    'seaquest': ('Seaquest', 10),
    'space_invaders': ('SpaceInvaders', 6),
}
GRID = 10  # MinAtar's board is 10 x 10 cells
CELL_PIXELS = 32  # a board cell in a watched frame
NUM_ACTIONS = 6  # every MinAtar game: no-op, left, up, right, down, fire
MAX_CHANNELS = max(channels for _, channels in GAMES.values())


def resolve_game(name: str) -> str:
    """MinAtar module name of ``name``: 'breakout', 'Breakout', 'SpaceInvaders', 'space_invaders',
    'MinAtar/Breakout-v1' all resolve; anything else is a clear error listing the games."""
    if not isinstance(name, str):
        raise ValueError(f"MinAtar game must be a string, got {name!r}")
    base = re.sub(r'-v\d+$', '', name.split('/')[-1])
    key = re.sub(r'(?<=[a-z])(?=[A-Z])', '_', base).lower()
    if key not in GAMES:
        raise ValueError(f"unknown MinAtar game {name!r}; choose from {[camel for camel, _ in GAMES.values()]}")
    return key


def game_name(name: str) -> str:
    """CamelCase name of a MinAtar game, e.g. 'space_invaders' -> 'SpaceInvaders'."""
    return GAMES[resolve_game(name)][0]


def list_games() -> List[str]:
    """The five games' CamelCase names."""
    return [camel for camel, _ in GAMES.values()]


FREEWAY_FRAMES = 2500  # Freeway ends itself after this many frames; the other games at game over


@ENV_REGISTRY.register('minatar_scalezero')
class MinAtarEnv(ScaleZeroEnv):
    """A MinAtar game with LightZero's observation dict.

    ``reset()`` returns ``{'observation': float32 (C, 10, 10) in {0, 1}, 'action_mask': int8 (6,),
    'to_play': -1, 'timestep': agent steps since reset}``; ``step(action)`` returns a
    ``BaseEnvTimestep`` whose reward is a 0-d float32 array (MinAtar's raw reward). At the end of an
    episode ``info['eval_episode_return']`` holds its return.

    Example:
        >>> env = MinAtarEnv(dict(env_id='Breakout', observation_shape=(10, 10, 10), minimal_action_set=True))
        >>> env.seed(0)
        >>> obs = env.reset()
        >>> obs['observation'].shape, obs['action_mask'].tolist()
        ((10, 10, 10), [1, 1, 0, 1, 0, 0])
        >>> timestep = env.step(3)
        >>> float(timestep.reward), timestep.done
        (0.0, False)
        >>> env.close()
    """
    config = dict(
        # (str) Game: 'Asterix', 'Breakout', 'Freeway', 'Seaquest', 'SpaceInvaders' (also 'space_invaders' or
        # 'MinAtar/Breakout-v1').
        env_id='Breakout',
        # (tuple|None) Observation shape (C, 10, 10). None: the game's own channels. A C above the game's own count
        # pads with zero channels (10 fits every game: one shape for a shared encoder); below it is an error.
        observation_shape=None,
        # (bool) Mask the actions the game ignores (the space stays MinAtar's 6 actions); False: all 6 legal.
        minimal_action_set=False,
        # (int|None) Width of the action space: above 6, the extra actions are masked (illegal), so MinAtar shares one
        # action space with games of more actions in one model (e.g. Atari's 18); None: MinAtar's 6.
        action_space_size=None,
        # (float) Probability that the game repeats the previous action instead of the chosen one (MinAtar's 0.1).
        sticky_action_prob=0.1,
        # (bool) MinAtar's difficulty ramping (games speed up as the episode goes on).
        difficulty_ramping=True,
        # (int|None) Cap on agent steps (= game frames) per episode, a truncation; None: the game's own end only
        # (Freeway ends itself after 2,500 frames; the others at game over).
        max_episode_steps=10_000,
    )

    @classmethod
    def episode_cap(cls, cfg: Dict[str, Any]) -> Optional[str]:
        """The step cap when the game would run longer (MinAtar games end at game over; Freeway after 2,500 frames)."""
        steps = cfg.get('max_episode_steps')
        own_end = FREEWAY_FRAMES if game_name(cfg['env_id']) == 'Freeway' else None
        if steps is None or (own_end is not None and steps >= own_end):
            return None
        return f"{steps:,} steps (the game's own end: {'game over' if own_end is None else f'{own_end:,} frames'})"

    def __init__(self, cfg: dict) -> None:
        """Validates ``cfg`` (merged over ``default_config()``) and starts the game (plain numpy, it pickles)."""
        import minatar  # GPL-3.0 dependency; imported here so that importing this module stays cheap

        self._cfg = EasyDict(deep_merge_dicts(self.default_config(), cfg))
        self._game = resolve_game(self._cfg.env_id)
        self._sticky = probability('sticky_action_prob', self._cfg.sticky_action_prob)
        cap = self._cfg.max_episode_steps
        self._max_steps = None if cap is None else positive_int('max_episode_steps', cap)
        self._env = minatar.Environment(self._game, sticky_action_prob=self._sticky,
                                        difficulty_ramping=bool(self._cfg.difficulty_ramping))
        self._channels = int(self._env.state_shape()[2])
        self._obs_shape = _validate_observation(self._cfg.observation_shape, game_name(self._game), self._channels)
        width = NUM_ACTIONS if self._cfg.action_space_size is None else positive_int('action_space_size',
                                                                                      self._cfg.action_space_size)
        if width < NUM_ACTIONS:
            raise ValueError(f"action_space_size={width}: MinAtar has {NUM_ACTIONS} actions, the space cannot be smaller")
        self._mask = np.zeros(width, dtype=np.int8)
        self._mask[self._env.minimal_action_set() if self._cfg.minimal_action_set else np.arange(NUM_ACTIONS)] = 1
        self._legal = np.flatnonzero(self._mask)
        self._observation_space = gym.spaces.Box(low=0., high=1., shape=self._obs_shape, dtype=np.float32)
        self._action_space = gym.spaces.Discrete(width)
        self._reward_space = gym.spaces.Box(low=-np.inf, high=np.inf, shape=(1, ), dtype=np.float32)
        self._done = True
        self._timestep = 0
        self._episode_return = 0.
        self.seed(0)

    # ------------------------------------------------------------------ BaseEnv API

    def seed(self, seed: int, dynamic_seed: bool = True) -> None:
        """Seeds the episodes: with ``dynamic_seed`` (ding's convention, collectors) episode k gets seed
        ``seed + 100 * randint(1, 1000)`` drawn from a generator seeded with ``seed``; without it (evaluators)
        every episode uses ``seed`` itself. The episode seed drives the game's randomness and the sticky actions,
        so the same seed and actions replay the same episodes."""
        self._seed = int(seed)
        self._dynamic_seed = dynamic_seed
        self._seed_rng = np.random.RandomState(self._seed)
        self._action_rng = np.random.RandomState(self._seed)

    def reset(self) -> Dict[str, Any]:
        episode_seed = self._seed + 100 * self._seed_rng.randint(1, 1000) if self._dynamic_seed else self._seed
        self._env.seed(int(episode_seed % 2**31))
        self._env.last_action = 0  # MinAtar keeps the previous episode's last action for its sticky repeat
        self._env.reset()
        self._done = False
        self._timestep = 0
        self._episode_return = 0.
        return self._observe()

    def step(self, action: Any) -> BaseEnvTimestep:
        """Plays ``action``, one of MinAtar's 6 action ids (an int or a one-element array) that the mask allows."""
        if self._done:
            raise RuntimeError(f"{self!r}: step() called on a finished episode, call reset() first")
        index = int(np.asarray(action).reshape(-1)[0])
        if not 0 <= index < len(self._mask) or not self._mask[index]:
            raise ValueError(f"action {index} is not legal in {game_name(self._game)}: legal actions are "
                             f"{self._legal.tolist()}")
        reward, terminal = self._env.act(index)
        self._timestep += 1
        self._episode_return += float(reward)
        truncated = not terminal and self._max_steps is not None and self._timestep >= self._max_steps
        self._done = bool(terminal or truncated)
        info: Dict[str, Any] = {}
        if self._done:
            info['TimeLimit.truncated'] = bool(truncated)
            info['eval_episode_return'] = self._episode_return
        return BaseEnvTimestep(self._observe(), np.array(reward, dtype=np.float32), self._done, info)

    def close(self) -> None:
        self._done = True

    def random_action(self) -> np.ndarray:
        """A uniformly random legal action (seeded by ``seed()``)."""
        return np.array(self._legal[self._action_rng.randint(len(self._legal))], dtype=np.int64)

    def frame(self) -> np.ndarray:
        """The board in colour, (320, 320, 3): each cell in the colour of its highest set channel, black when empty
        (MinAtar's own display: matplotlib's cubehelix, one colour per channel of the game)."""
        state = self._env.state()                                                    # (10, 10, C) bool
        cell = np.max(state * np.arange(1, self._channels + 1), axis=2)              # (10, 10), 0 = empty
        picture = channel_palette(self._channels)[cell]                               # (10, 10, 3)
        return np.repeat(np.repeat(picture, CELL_PIXELS, axis=0), CELL_PIXELS, axis=1)  # (320, 320, 3)

    @property
    def legal_actions(self) -> np.ndarray:
        return self._legal.copy()

    @property
    def game(self) -> str:
        """CamelCase game name, e.g. 'SpaceInvaders'."""
        return game_name(self._game)

    def __repr__(self) -> str:
        return f"MinAtarEnv(game={self.game}, obs={self._obs_shape}, legal actions={self._legal.tolist()})"

    # ------------------------------------------------------------------ helpers

    def _observe(self) -> Dict[str, Any]:
        obs = np.zeros(self._obs_shape, dtype=np.float32)                     # (C_out, 10, 10)
        obs[:self._channels] = self._env.state().transpose(2, 0, 1)           # (10, 10, C) -> (C, 10, 10)
        return {'observation': obs, 'action_mask': self._mask.copy(), 'to_play': -1, 'timestep': self._timestep}


@functools.lru_cache(maxsize=None)
def channel_palette(channels: int) -> np.ndarray:
    """``(channels + 1, 3)`` uint8 colours: black for an empty cell, then one cubehelix colour per channel."""
    from matplotlib import colormaps

    colours = colormaps["cubehelix"](np.linspace(0., 1., channels + 2)[1:-1])[:, :3]  # no black, no white
    return (np.concatenate([np.zeros((1, 3)), colours]) * 255).round().astype(np.uint8)


def _validate_observation(shape: Optional[Any], game: str, channels: int) -> Tuple[int, int, int]:
    """``observation_shape`` as (C, 10, 10) with C >= the game's channel count (None: the game's own)."""
    if shape is None:
        return channels, GRID, GRID
    if (not isinstance(shape, (tuple, list)) or len(shape) != 3
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shape)):
        raise ValueError(f"observation_shape must be (channels, 10, 10) ints, got {shape!r}")
    if tuple(shape[1:]) != (GRID, GRID):
        raise ValueError(f"MinAtar observations are {GRID}x{GRID} grids: observation_shape must be (C, {GRID}, {GRID}), "
                         f"got {tuple(shape)!r}")
    if shape[0] < channels:
        raise ValueError(f"{game} has {channels} observation channels; observation_shape {tuple(shape)!r} has "
                         f"{shape[0]} (use >= {channels}; {MAX_CHANNELS} fits every game)")
    return int(shape[0]), GRID, GRID
