"""Small vector-observation control tasks with discrete actions for LightZero, multi-task ready.

Registered in DI-engine's ``ENV_REGISTRY`` as ``'classic_control_scalezero'``. Two sources of tasks:

* any gymnasium id with a ``Box`` or ``Discrete`` observation space (``Discrete`` observations become
  one-hot vectors), e.g. the classic-control tasks;
* ``'dmc:<domain>-<task>'``: a DeepMind Control task with state observations, through this project's
  ``DMCMultiTaskEnv`` (action repeat, episode cap and seeding as there).

Discrete action spaces are used as they are; a ``Box`` action space of d dimensions becomes
``continuous_action_bins ** d`` discrete actions, every combination of ``continuous_action_bins``
evenly spaced values per dimension (e.g. Pendulum with 5 bins: torques -2, -1, 0, 1, 2). For a
multi-task model that shares one discrete action space, ``action_space_size`` pads the action count:
the observation's ``action_mask`` marks the task's own actions as legal, the padding as illegal.
"""
import itertools
from typing import Any, Dict, List, Optional, Tuple

import gymnasium
import numpy as np
from ding.envs import BaseEnvTimestep
from ding.utils import ENV_REGISTRY, deep_merge_dicts
from easydict import EasyDict
from lzero_ext.envs.base import ScaleZeroEnv


@ENV_REGISTRY.register('classic_control_scalezero')
class ClassicControlEnv(ScaleZeroEnv):
    """A gymnasium or DMC task with LightZero's observation dict and a (padded) discrete action space.

    ``reset()`` returns ``{'observation': float32 (obs_dim,), 'action_mask': int8 (action_space_size,),
    'to_play': -1, 'timestep': agent steps since reset}``; ``step(action)`` returns a ``BaseEnvTimestep``
    whose reward is a 0-d float32 array. At the end of an episode ``info['eval_episode_return']``
    holds its return.

    Example:
        >>> env = ClassicControlEnv(dict(env_id='Acrobot-v1', action_space_size=4))
        >>> env.seed(0)
        >>> obs = env.reset()
        >>> obs['observation'].shape, obs['action_mask'].tolist()
        ((6,), [1, 1, 1, 0])
        >>> timestep = env.step(2)
        >>> float(timestep.reward), timestep.done
        (-1.0, False)
        >>> env.close()
    """
    config = dict(
        # (str) Gymnasium id, e.g. 'CartPole-v1' (obs 4, 2 actions), 'Acrobot-v1' (6, 3), 'Pendulum-v1' (3, continuous:
        # set continuous_action_bins), or 'dmc:<domain>-<task>' for a DeepMind Control task, e.g. 'dmc:cartpole-balance'.
        env_id='CartPole-v1',
        # (int|None) Size of the (shared) discrete action space; the task's own actions come first and the rest are
        # masked out. None: the task's own action count.
        action_space_size=None,
        # (int|None) For a Box action space: evenly spaced values per dimension from low to high; the actions are
        # all their combinations. Must be None for Discrete action spaces.
        continuous_action_bins=None,
        # (int|None) Cap on agent steps per episode (a truncation); None: the task's own time limit.
        max_episode_steps=None,
        # (dict) Extra keyword arguments of gymnasium.make, e.g. dict(is_slippery=False) for FrozenLake-v1 (gymnasium only).
        make_kwargs=dict(),
    )

    def __init__(self, cfg: dict) -> None:
        """Validates ``cfg`` (merged over ``default_config()``) against the task's spaces; the simulator itself
        starts in ``reset()``, so that the object pickles for subprocess env managers."""
        self._cfg = EasyDict(deep_merge_dicts(self.default_config(), cfg))
        max_steps = self._cfg.max_episode_steps
        if max_steps is not None and (not isinstance(max_steps, (int, np.integer)) or max_steps < 1):
            raise ValueError(f"max_episode_steps must be a positive int or None, got {max_steps!r}")
        self._task = _make_task(self._cfg)  # reads the spaces; the simulator itself starts in reset()
        self._obs_space = self._task.observation_space
        self._action_values = _action_values(self._cfg.env_id, self._task.action_space, self._cfg.continuous_action_bins)
        self._num_actions = len(self._action_values)
        size = self._cfg.action_space_size or self._num_actions
        if not isinstance(size, (int, np.integer)) or size < self._num_actions:
            raise ValueError(f"{self._cfg.env_id} has {self._num_actions} actions; action_space_size={size!r} "
                             f"must be an int >= {self._num_actions}")
        self._mask = np.zeros(int(size), dtype=np.int8)
        self._mask[:self._num_actions] = 1
        if isinstance(self._obs_space, gymnasium.spaces.Discrete):
            obs_dim = int(self._obs_space.n)
        elif isinstance(self._obs_space, gymnasium.spaces.Box) and len(self._obs_space.shape) == 1:
            obs_dim = int(self._obs_space.shape[0])
        else:
            raise ValueError(f"{self._cfg.env_id}: observation space {self._obs_space} is neither Discrete nor a 1-D Box")

        self._observation_space = gymnasium.spaces.Box(-np.inf, np.inf, shape=(obs_dim, ), dtype=np.float32)
        self._action_space = gymnasium.spaces.Discrete(int(size))
        self._reward_space = gymnasium.spaces.Box(-np.inf, np.inf, shape=(1, ), dtype=np.float32)
        self._done = True
        self._timestep = 0
        self._episode_return = 0.
        self.seed(0)

    # ------------------------------------------------------------------ BaseEnv API

    def seed(self, seed: int, dynamic_seed: bool = True) -> None:
        """Seeds the episodes: with ``dynamic_seed`` (ding's convention, collectors) episode k starts from
        ``seed + 100 * randint(1, 1000)`` drawn from a generator seeded with ``seed``; without it (evaluators)
        every episode starts from ``seed`` itself. Either way the same seed gives the same episodes."""
        self._seed = int(seed)
        self._dynamic_seed = dynamic_seed
        self._seed_rng = np.random.RandomState(self._seed)
        self._action_rng = np.random.RandomState(self._seed)

    def reset(self) -> Dict[str, Any]:
        episode_seed = self._seed + 100 * self._seed_rng.randint(1, 1000) if self._dynamic_seed else self._seed
        obs = self._task.reset(int(episode_seed % 2**31))
        self._done = False
        self._timestep = 0
        self._episode_return = 0.
        return self._observe(obs)

    def step(self, action: Any) -> BaseEnvTimestep:
        """Plays ``action``, an index among the task's own actions (an int or a one-element array)."""
        if self._done:
            raise RuntimeError(f"{self!r}: step() called on a finished episode, call reset() first")
        index = int(np.asarray(action).reshape(-1)[0])
        if not 0 <= index < self._num_actions:
            raise ValueError(f"action {index} is not legal in {self._cfg.env_id}: expected 0..{self._num_actions - 1} "
                             f"(actions {self._num_actions}..{len(self._mask) - 1} are padding)")
        obs, reward, terminated, truncated = self._task.step(self._action_values[index])
        self._done = bool(terminated or truncated)
        self._timestep += 1
        self._episode_return += float(reward)
        info: Dict[str, Any] = {}
        if self._done:
            info['TimeLimit.truncated'] = bool(truncated and not terminated)
            info['eval_episode_return'] = self._episode_return
        return BaseEnvTimestep(self._observe(obs), np.array(reward, dtype=np.float32), self._done, info)

    def close(self) -> None:
        self._task.close()
        self._done = True

    def random_action(self) -> np.ndarray:
        """A uniformly random legal action (seeded by ``seed()``)."""
        return np.array(self._action_rng.randint(self._num_actions), dtype=np.int64)

    @property
    def legal_actions(self) -> np.ndarray:
        return np.arange(self._num_actions)

    def __repr__(self) -> str:
        return (f"ClassicControlEnv({self._cfg.env_id}, obs={self._observation_space.shape[0]}, "
                f"actions={self._num_actions}/{len(self._mask)})")

    # ------------------------------------------------------------------ helpers

    def _observe(self, obs: Any) -> Dict[str, Any]:
        if isinstance(self._obs_space, gymnasium.spaces.Discrete):
            vector = np.zeros(self._observation_space.shape, dtype=np.float32)
            vector[int(obs)] = 1.
        else:
            vector = np.asarray(obs, dtype=np.float32)
        return {'observation': vector, 'action_mask': self._mask.copy(), 'to_play': -1, 'timestep': self._timestep}


DMC_PREFIX = 'dmc:'


class _GymnasiumTask:
    """A gymnasium env (created at the first reset, so the ding env pickles) behind one small interface."""

    def __init__(self, env_id: str, max_episode_steps: Optional[int], make_kwargs: Dict[str, Any]) -> None:
        try:
            gymnasium.spec(env_id)
        except gymnasium.error.Error as err:
            raise ValueError(f"unknown gymnasium env id {env_id!r}: {err}") from None
        self._make = dict(id=env_id, max_episode_steps=max_episode_steps, **make_kwargs)
        probe = gymnasium.make(**self._make)
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        probe.close()
        self._env: Optional[gymnasium.Env] = None

    def reset(self, seed: int) -> Any:
        if self._env is None:
            self._env = gymnasium.make(**self._make)
        return self._env.reset(seed=seed)[0]

    def step(self, action: Any) -> Tuple[Any, float, bool, bool]:
        obs, reward, terminated, truncated, _ = self._env.step(action)
        return obs, float(reward), bool(terminated), bool(truncated)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
        self._env = None


class _DMCTask:
    """A DeepMind Control task through ``DMCMultiTaskEnv`` (its actions in [-1, 1]^d), same interface."""

    def __init__(self, task: str, max_episode_steps: Optional[int]) -> None:
        from lzero_ext.envs.dmc_env import DMCMultiTaskEnv  # dm_control is imported only for DMC tasks

        self._env = DMCMultiTaskEnv(dict(env_id=task, max_episode_steps=max_episode_steps))
        shape = self._env.observation_space.shape
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, shape=shape, dtype=np.float32)
        self.action_space = gymnasium.spaces.Box(-1., 1., shape=self._env.action_space.shape, dtype=np.float32)

    def reset(self, seed: int) -> Any:
        self._env.seed(seed, dynamic_seed=False)  # this episode's initial state depends on ``seed`` only
        return self._env.reset()['observation']

    def step(self, action: Any) -> Tuple[Any, float, bool, bool]:
        timestep = self._env.step(action)
        truncated = bool(timestep.info.get('TimeLimit.truncated', False))
        return timestep.obs['observation'], float(timestep.reward), timestep.done and not truncated, truncated

    def close(self) -> None:
        self._env.close()


def _make_task(cfg: EasyDict) -> Any:
    if cfg.env_id.startswith(DMC_PREFIX):
        if cfg.make_kwargs:
            raise ValueError(f"make_kwargs are gymnasium.make arguments; {cfg.env_id} is a DMC task")
        return _DMCTask(cfg.env_id[len(DMC_PREFIX):], cfg.max_episode_steps)
    return _GymnasiumTask(cfg.env_id, cfg.max_episode_steps, dict(cfg.make_kwargs))


def _action_values(env_id: str, space: gymnasium.Space, bins: Optional[int]) -> List[Any]:
    """What each discrete action index plays in the task: the Discrete action itself, or for a Box one
    combination of per-dimension values (the last dimension varies fastest)."""
    if isinstance(space, gymnasium.spaces.Discrete):
        if bins is not None:
            raise ValueError(f"{env_id} has discrete actions; continuous_action_bins must be None, got {bins!r}")
        return [int(space.start) + i for i in range(int(space.n))]
    if isinstance(space, gymnasium.spaces.Box) and len(space.shape) == 1:
        if not isinstance(bins, (int, np.integer)) or bins < 2:
            raise ValueError(f"{env_id} has continuous actions in {space}: set continuous_action_bins to an int >= 2, "
                             f"got {bins!r}")
        per_dim = [np.linspace(low, high, int(bins)) for low, high in zip(space.low, space.high)]
        return [np.array(combo, dtype=space.dtype) for combo in itertools.product(*per_dim)]
    raise ValueError(f"{env_id}: action space {space} is neither Discrete nor a one-dimensional Box")
