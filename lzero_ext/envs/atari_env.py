"""Multi-task-ready Atari environment for LightZero, built directly on ``ale_py.ALEInterface``.

Registered in DI-engine's ``ENV_REGISTRY`` as ``'atari_scalezero'``. Follows the Atari100k protocol:
frame skip 4 with max-pooling of the last two emulator frames, no sticky actions, up to 30 random
no-ops at the start of a game, a 108k-frame game cap, and (for training only) life loss as
episode end and sign-clipped rewards. ``full_action_space=True`` gives every game the same 18
actions, so one multi-task model can act in all of them.
"""
from typing import Any, Dict, Optional, Tuple

import ale_py
import cv2
import gym
import numpy as np
from ale_py import roms
from ding.envs import BaseEnvTimestep
from ding.utils import ENV_REGISTRY, deep_merge_dicts
from easydict import EasyDict

from lzero_ext.envs.atari_games import action_set, game_name, list_games, resolve_game  # noqa: F401
from lzero_ext.envs.base import ScaleZeroEnv, positive_int, probability

NOOP = 0  # ALE action id of "do nothing"
SUPPORTED_CHANNELS = {1: "grayscale", 3: "RGB"}  # observation_shape[0] -> colour mode


FULL_GAME_FRAMES = 108_000  # the Atari100k protocol's cap: 30 minutes of play


@ENV_REGISTRY.register('atari_scalezero')
class AtariMultiTaskEnv(ScaleZeroEnv):
    """Any ALE game with LightZero's observation dict, for single- and multi-task training.

    ``reset()`` returns ``{'observation': float32 (C, H, W) in [0, 1], 'action_mask': int8 ones,
    'to_play': -1, 'timestep': agent steps since reset}``; ``step(action)`` returns a
    ``BaseEnvTimestep`` whose reward is a 0-d float32 array (as LightZero's Atari env). At the end
    of an episode ``info['eval_episode_return']`` holds the raw (unclipped) return of that episode.

    Training episodes (``episode_life=True``) end at a life loss; the next ``reset()`` then carries
    on with the same game, which only restarts after game over or the frame cap.

    Example:
        >>> env = AtariMultiTaskEnv(dict(env_id='MsPacmanNoFrameskip-v4', full_action_space=True))
        >>> env.seed(0)
        >>> obs = env.reset()
        >>> obs['observation'].shape, obs['action_mask'].shape
        ((3, 64, 64), (18,))
        >>> timestep = env.step(3)
        >>> float(timestep.reward), timestep.done
        (0.0, False)
        >>> env.close()
    """
    # Evaluation plays full games with raw rewards (no life-loss ends, no clipping).
    EVALUATOR_OVERRIDES = dict(episode_life=False, clip_rewards=False)

    config = dict(
        # (str) Game: gym/LightZero id ('PongNoFrameskip-v4', 'ALE/Pong-v5'), name ('MsPacman') or ROM id
        # ('ms_pacman'). See lzero_ext.envs.atari_games.list_games().
        env_id='PongNoFrameskip-v4',
        # (tuple) Observation shape (C, H, W): C=3 for RGB, C=1 for grayscale; frames are resized to H x W.
        observation_shape=(3, 64, 64),
        # (bool) Grayscale observations; must agree with observation_shape[0] (1 if True, 3 if False).
        gray_scale=False,
        # (bool) Use all 18 ALE actions (shared by every game, for multi-task) instead of the game's minimal set.
        full_action_space=False,
        # (int|None) Width of the action space: above the game's action count the extra actions are masked (illegal),
        # so Atari shares one action space with tasks of more actions in one model (e.g. text games); None: the count.
        action_space_size=None,
        # (int) Emulator frames per agent step; the observation is the max over the last two frames.
        frame_skip=4,
        # (float) Probability that the emulator repeats the previous action (sticky actions); 0 in Atari100k.
        repeat_action_probability=0.0,
        # (int) Most random no-op frames played at the start of each game (uniform in [1, noop_max]); 0 disables.
        noop_max=30,
        # (int) Game length cap in emulator frames, no-ops included (108k frames = 27k agent steps at frame skip 4).
        max_episode_frames=108_000,
        # (bool) A life loss ends the episode (training only; evaluator envs set False).
        episode_life=True,
        # (bool) Rewards are clipped to their sign (training only; evaluator envs set False).
        clip_rewards=True,
    )

    @classmethod
    def episode_cap(cls, cfg: Dict[str, Any]) -> Optional[str]:
        """The frame cap when it is below the Atari100k protocol's 108,000 frames."""
        frames = cfg.get('max_episode_frames')
        return f"{frames:,} frames (full games: up to {FULL_GAME_FRAMES:,})" if frames and frames < FULL_GAME_FRAMES else None

    def frame(self) -> Optional[np.ndarray]:
        """The emulator's RGB screen, (210, 160, 3); None before the first ``reset()``."""
        return None if self._ale is None else self._ale.getScreenRGB()

    def __init__(self, cfg: dict) -> None:
        """Validates ``cfg`` (merged over ``default_config()``); the emulator itself starts in ``reset()``."""
        self._cfg = EasyDict(deep_merge_dicts(self.default_config(), cfg))
        self._rom_id = resolve_game(self._cfg.env_id)
        self._gray_scale = bool(self._cfg.gray_scale)
        self._obs_shape = _validate_observation(self._cfg.observation_shape, self._gray_scale)
        self._frame_skip = positive_int('frame_skip', self._cfg.frame_skip)
        self._max_episode_frames = positive_int('max_episode_frames', self._cfg.max_episode_frames)
        self._noop_max = _non_negative_int('noop_max', self._cfg.noop_max)
        self._repeat_action_probability = probability('repeat_action_probability', self._cfg.repeat_action_probability)
        self._episode_life = bool(self._cfg.episode_life)
        self._clip_rewards = bool(self._cfg.clip_rewards)
        self._action_set = action_set(self._rom_id, bool(self._cfg.full_action_space))

        self._observation_space = gym.spaces.Box(low=0., high=1., shape=self._obs_shape, dtype=np.float32)
        width = len(self._action_set) if self._cfg.action_space_size is None else \
            positive_int('action_space_size', self._cfg.action_space_size)
        if width < len(self._action_set):
            raise ValueError(f"action_space_size={width} is below {self.game}'s {len(self._action_set)} actions")
        self._action_mask = (np.arange(width) < len(self._action_set)).astype(np.int8)  # the game's actions first
        self._action_space = gym.spaces.Discrete(width)
        reward_bound = 1. if self._clip_rewards else np.inf
        self._reward_space = gym.spaces.Box(low=-reward_bound, high=reward_bound, shape=(1, ), dtype=np.float32)

        self._ale: Optional[ale_py.ALEInterface] = None  # created lazily so the env pickles
        self._screens: Optional[np.ndarray] = None  # (2, 210, 160[, 3]) uint8: the last two emulator frames
        self._episode_frames = 0  # emulator frames since the game (re)started
        self._lives = 0
        self._continue_game = False  # last episode ended by a life loss: reset() keeps the game going
        self._done = True
        self._timestep = 0
        self._episode_return = 0.
        self.seed(0)

    # ------------------------------------------------------------------ BaseEnv API

    def seed(self, seed: int, dynamic_seed: bool = True) -> None:
        """Seeds the emulator and the no-op draws; the seed is used from the next game restart on.

        With ``dynamic_seed`` (ding's convention) every game gets seed ``seed + 100 * randint(1, 1000)``,
        drawn from a generator seeded with ``seed``; otherwise every game uses ``seed`` itself.
        Either way the same seed gives the same games.
        """
        self._seed = int(seed)
        self._dynamic_seed = dynamic_seed
        self._seed_rng = np.random.RandomState(self._seed)
        self._action_rng = np.random.RandomState(self._seed)
        self._continue_game = False

    def reset(self) -> Dict[str, Any]:
        """Starts an episode: a new game, or, after a life-loss episode end, the rest of the same game."""
        if self._ale is None:
            self._ale = _make_ale(self._repeat_action_probability)
        if not self._continue_game:
            self._start_game()
        self._continue_game = False
        self._done = False
        self._timestep = 0
        self._episode_return = 0.
        return self._observe()

    def step(self, action: Any) -> BaseEnvTimestep:
        """Plays ``action`` (an index into the action set) for ``frame_skip`` frames."""
        if self._done:
            raise RuntimeError(f"{self!r}: step() called on a finished episode, call reset() first")
        raw_reward = self._repeat_action(self._action_set[self._action_index(action)])
        lives = self._ale.lives()
        life_lost = 0 < lives < self._lives
        self._lives = lives
        game_over = self._ale.game_over()
        truncated = not game_over and self._episode_frames >= self._max_episode_frames
        self._continue_game = self._episode_life and life_lost and not (game_over or truncated)
        self._done = game_over or truncated or self._continue_game
        self._timestep += 1
        self._episode_return += raw_reward
        reward = np.sign(raw_reward) if self._clip_rewards else raw_reward
        info = dict(
            raw_reward=raw_reward,
            lives=lives,
            episode_frames=self._episode_frames,
            game_over=game_over,
        )
        if self._done:
            info['TimeLimit.truncated'] = truncated
            info['eval_episode_return'] = self._episode_return
        return BaseEnvTimestep(self._observe(), np.array(reward, dtype=np.float32), self._done, info)

    def close(self) -> None:
        """Releases the emulator; a later ``reset()`` starts a new one."""
        self._ale = None
        self._screens = None
        self._continue_game = False
        self._done = True

    def random_action(self) -> np.ndarray:
        """A uniformly random legal action index (seeded by ``seed()``)."""
        return np.array(self._action_rng.randint(len(self._action_set)), dtype=np.int64)

    @property
    def legal_actions(self) -> np.ndarray:
        return np.arange(len(self._action_set))

    @property
    def game(self) -> str:
        """CamelCase game name, e.g. 'MsPacman'."""
        return game_name(self._rom_id)

    def __repr__(self) -> str:
        mode = 'train' if self._episode_life or self._clip_rewards else 'eval'
        return (
            f"AtariMultiTaskEnv(game={self.game}, obs={self._obs_shape}, actions={self._action_space.n}, "
            f"mode={mode})"
        )

    # ------------------------------------------------------------------ emulator helpers

    def _start_game(self) -> None:
        """Reloads the ROM with this game's seed, then plays the random no-ops."""
        game_seed = self._seed + 100 * self._seed_rng.randint(1, 1000) if self._dynamic_seed else self._seed
        self._ale.setInt('random_seed', int(game_seed % 2**31))
        self._ale.loadROM(roms.get_rom_path(self._rom_id))  # applies the seed; also resets the game
        height, width = self._ale.getScreenDims()
        self._screens = np.zeros((2, height, width) if self._gray_scale else (2, height, width, 3), np.uint8)
        self._episode_frames = 0
        self._grab_screen(self._screens[0])
        self._grab_screen(self._screens[1])
        noops = np.random.RandomState(game_seed).randint(1, self._noop_max + 1) if self._noop_max > 0 else 0
        for _ in range(noops):
            self._emulate(NOOP)
            if self._ale.game_over():
                self._ale.reset_game()
        self._lives = self._ale.lives()

    def _repeat_action(self, ale_action: int) -> float:
        """Repeats an ALE action for ``frame_skip`` frames (fewer if the game ends); returns the summed raw reward."""
        reward = 0.
        for _ in range(self._frame_skip):
            reward += self._emulate(ale_action)
            if self._ale.game_over() or self._episode_frames >= self._max_episode_frames:
                break
        return reward

    def _emulate(self, ale_action: int) -> float:
        """Advances one emulator frame, keeping its screen as one of the last two (the slots alternate)."""
        reward = self._ale.act(ale_action)
        self._episode_frames += 1
        self._grab_screen(self._screens[self._episode_frames % 2])
        return float(reward)

    def _grab_screen(self, out: np.ndarray) -> None:
        if self._gray_scale:
            self._ale.getScreenGrayscale(out)
        else:
            self._ale.getScreenRGB(out)

    def _observe(self) -> Dict[str, Any]:
        """LightZero's observation dict of the max over the last two frames, resized to (C, H, W) in [0, 1]."""
        frame = np.maximum(self._screens[0], self._screens[1])  # (210, 160[, 3]): removes sprite flicker
        channels, height, width = self._obs_shape
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)  # (H, W[, 3])
        frame = frame.reshape(height, width, channels).transpose(2, 0, 1)  # (C, H, W)
        return {
            'observation': frame.astype(np.float32) / 255.,
            'action_mask': self._action_mask.copy(),
            'to_play': -1,
            'timestep': self._timestep,
        }

    def _action_index(self, action: Any) -> int:
        """Accepts an int, a numpy integer or a one-element array."""
        index = int(np.asarray(action).reshape(-1)[0]) if np.ndim(action) else int(action)
        if not 0 <= index < len(self._action_set):
            raise ValueError(f"action {index} is out of range for {self.game}: expected 0..{len(self._action_set) - 1}")
        return index


def _make_ale(repeat_action_probability: float) -> ale_py.ALEInterface:
    """A quiet ALE with one frame per ``act`` (frame skip is done here) and the given sticky-action rate."""
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.setInt('frame_skip', 1)
    ale.setFloat('repeat_action_probability', repeat_action_probability)
    return ale


def _validate_observation(shape: Any, gray_scale: bool) -> Tuple[int, int, int]:
    """Checks ``observation_shape`` = (C, H, W) with C in SUPPORTED_CHANNELS matching ``gray_scale``."""
    if not isinstance(shape, (tuple, list)) or len(shape) != 3:
        raise ValueError(f"observation_shape must be (channels, height, width), got {shape!r}")
    if not all(isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0 for size in shape):
        raise ValueError(f"observation_shape must hold positive ints, got {tuple(shape)!r}")
    channels = int(shape[0])
    if channels not in SUPPORTED_CHANNELS:
        raise ValueError(
            f"observation_shape[0] (channels) must be one of {sorted(SUPPORTED_CHANNELS)} "
            f"(1 grayscale, 3 RGB), got {channels} in {tuple(shape)!r}"
        )
    expected = 1 if gray_scale else 3
    if channels != expected:
        raise ValueError(
            f"observation_shape {tuple(shape)!r} does not match gray_scale={gray_scale}: "
            f"expected {expected} channel(s) ({SUPPORTED_CHANNELS[expected]})"
        )
    return channels, int(shape[1]), int(shape[2])




def _non_negative_int(key: str, value: Any) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} must be a non-negative int, got {value!r}")
    return int(value)
