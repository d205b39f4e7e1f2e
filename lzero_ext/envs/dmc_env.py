"""DeepMind Control Suite environment for LightZero, built directly on ``dm_control.suite``.

Registered in DI-engine's ``ENV_REGISTRY`` as ``'dmc_scalezero'``. State observations only: the
task's observation dict flattened and concatenated, in the key order of its observation spec, as
float32 (e.g. cartpole 5, cheetah 17, walker 24 dims). Actions live in ``[-1, 1]^a`` and are mapped
affinely onto the action spec's bounds. One agent step repeats the action for ``action_repeat``
control steps (ScaleZero: 4, pendulum 8) and sums their rewards. ``dmc2gym`` (used by lightzero's
own DMC env) is not on PyPI, hence this env.

``MUJOCO_GL`` only matters for pixel rendering (the observations are states). Importing this module
leaves it alone; a run (``lzero_ext.entry.run_logging.run_console``) sets it to ``default_mujoco_gl()``
when unset and restores it afterwards, and ``dmc_tasks.load_suite`` defaults it for dm_control's first import only.
"""
import os
from typing import Any, Dict, Optional

import gym
import numpy as np
from ding.envs import BaseEnvTimestep
from ding.utils import ENV_REGISTRY, deep_merge_dicts
from easydict import EasyDict

from lzero_ext.envs.dmc_tasks import DMC18, default_action_repeat, default_mujoco_gl, load_suite, resolve_task  # noqa: F401
from lzero_ext.envs.base import ScaleZeroEnv, positive_int


DMC_EPISODE_CONTROL_STEPS = 1000  # dm_control.suite's time limit of every task used here


@ENV_REGISTRY.register('dmc_scalezero')
class DMCMultiTaskEnv(ScaleZeroEnv):
    """Any ``dm_control.suite`` domain-task with state observations and LightZero's observation dict.

    ``reset()`` returns ``{'observation': float32 (obs_dim,), 'action_mask': None, 'to_play': -1,
    'timestep': agent steps since reset}`` (``action_mask`` is None for continuous actions, as in
    lightzero's DMC env); ``step(action)`` takes a float vector in ``[-1, 1]^action_dim`` and returns a
    ``BaseEnvTimestep`` whose reward is a 0-d float32 array (the sum over the repeated control steps).
    At the end of an episode ``info['eval_episode_return']`` holds that episode's return.

    Example:
        >>> env = DMCMultiTaskEnv(dict(env_id='cheetah-run'))
        >>> env.seed(0)
        >>> obs = env.reset()
        >>> obs['observation'].shape, env.action_space.shape
        ((17,), (6,))
        >>> timestep = env.step(np.zeros(6, dtype=np.float32))
        >>> timestep.reward.dtype, timestep.done
        (dtype('float32'), False)
        >>> env.close()
    """
    config = dict(
        # (str) Task id '<domain>-<task>' with dm_control's names, e.g. 'cartpole-swingup', 'ball_in_cup-catch'.
        # See lzero_ext.envs.dmc_tasks.list_tasks().
        env_id='cartpole-swingup',
        # (int|None) Control steps per agent step (the action is repeated, rewards summed); None: the ScaleZero
        # default of the domain (8 for pendulum, 4 otherwise).
        action_repeat=None,
        # (int|None) Cap on agent steps per episode; None: dm_control's own time limit (1000 control steps).
        max_episode_steps=None,
    )

    @classmethod
    def episode_cap(cls, cfg: Dict[str, Any]) -> Optional[str]:
        """The agent-step cap when it ends episodes before dm_control's 1,000 control steps."""
        steps = cfg.get('max_episode_steps')
        repeat = cfg.get('action_repeat') or default_action_repeat(cfg['env_id'])
        if steps is None or steps * repeat >= DMC_EPISODE_CONTROL_STEPS:
            return None
        return f"{steps * repeat} control steps (full episodes: {DMC_EPISODE_CONTROL_STEPS:,})"

    def __init__(self, cfg: dict) -> None:
        """Validates ``cfg`` (merged over ``default_config()``) and reads the task's specs; physics starts in ``reset()``."""
        self._cfg = EasyDict(deep_merge_dicts(self.default_config(), cfg))
        self._domain, self._task = resolve_task(self._cfg.env_id)
        repeat = self._cfg.action_repeat
        self._action_repeat = default_action_repeat(self._cfg.env_id) if repeat is None else positive_int('action_repeat', repeat)
        cap = self._cfg.max_episode_steps
        self._max_episode_steps = None if cap is None else positive_int('max_episode_steps', cap)

        # The task's RandomState is created here and passed to dm_control, which keeps using this very object:
        # reseeding it in place before each reset makes the episode's initial state depend on our seed only.
        self._task_rng = np.random.RandomState(0)
        self._env = None  # dm_control Environment, created lazily so the env pickles
        env = self._load()  # read the specs once; the physics is recreated in reset()
        obs_spec, action_spec = env.observation_spec(), env.action_spec()
        self._obs_keys = tuple(obs_spec)  # fixed flattening order: the task's observation-spec order
        obs_dim = int(sum(np.prod(spec.shape, dtype=int) for spec in obs_spec.values()))
        self._action_low = np.asarray(action_spec.minimum, np.float32) * np.ones(action_spec.shape, np.float32)
        self._action_high = np.asarray(action_spec.maximum, np.float32) * np.ones(action_spec.shape, np.float32)
        env.close()

        self._observation_space = gym.spaces.Box(low=-np.inf, high=np.inf, shape=(obs_dim, ), dtype=np.float32)
        self._action_space = gym.spaces.Box(low=-1., high=1., shape=action_spec.shape, dtype=np.float32)
        # dm_control suite rewards lie in [0, 1] per control step.
        self._reward_space = gym.spaces.Box(low=0., high=float(self._action_repeat), shape=(1, ), dtype=np.float32)

        self._done = True
        self._timestep = 0
        self._episode_return = 0.
        self.seed(0)

    # ------------------------------------------------------------------ BaseEnv API

    def seed(self, seed: int, dynamic_seed: bool = True) -> None:
        """Seeds the episodes' initial states and ``random_action``.

        With ``dynamic_seed`` (ding's convention) every episode gets seed ``seed + 100 * randint(1, 1000)``,
        drawn from a generator seeded with ``seed``; otherwise every episode uses ``seed`` itself.
        Either way the same seed gives the same episodes.
        """
        self._seed = int(seed)
        self._dynamic_seed = dynamic_seed
        self._seed_rng = np.random.RandomState(self._seed)
        self._action_rng = np.random.RandomState(self._seed)

    def reset(self) -> Dict[str, Any]:
        """Starts an episode from a seeded initial state."""
        if self._env is None:
            self._env = self._load()
        episode_seed = self._seed + 100 * self._seed_rng.randint(1, 1000) if self._dynamic_seed else self._seed
        self._task_rng.seed(episode_seed % 2**32)
        time_step = self._env.reset()
        self._done = False
        self._timestep = 0
        self._episode_return = 0.
        return self._observe(time_step.observation)

    def step(self, action: Any) -> BaseEnvTimestep:
        """Plays ``action`` (in ``[-1, 1]^action_dim``) for ``action_repeat`` control steps."""
        if self._done:
            raise RuntimeError(f"{self!r}: step() called on a finished episode, call reset() first")
        scaled = self._scale_action(action)
        reward = 0.
        for _ in range(self._action_repeat):
            time_step = self._env.step(scaled)
            reward += time_step.reward or 0.
            if time_step.last():
                break
        self._timestep += 1
        self._episode_return += reward
        capped = self._max_episode_steps is not None and self._timestep >= self._max_episode_steps
        self._done = time_step.last() or capped
        info: Dict[str, Any] = {}
        if self._done:
            # dm_control suite episodes end by their time limit (discount stays 1), or by our step cap.
            info['TimeLimit.truncated'] = capped or (time_step.last() and time_step.discount > 0)
            info['eval_episode_return'] = self._episode_return
        return BaseEnvTimestep(self._observe(time_step.observation), np.array(reward, dtype=np.float32), self._done, info)

    def close(self) -> None:
        """Releases the physics; a later ``reset()`` creates it again."""
        if self._env is not None:
            self._env.close()
        self._env = None
        self._done = True

    def random_action(self) -> np.ndarray:
        """A uniformly random action in ``[-1, 1]^action_dim`` (seeded by ``seed()``)."""
        return self._action_rng.uniform(-1., 1., size=self._action_space.shape).astype(np.float32)

    @property
    def action_repeat(self) -> int:
        return self._action_repeat

    @property
    def physics(self) -> Any:
        """The dm_control ``Physics`` of the running episode (None before the first ``reset()``)."""
        return None if self._env is None else self._env.physics

    def frame(self) -> Optional[np.ndarray]:
        """The scene rendered by MuJoCo, (240, 320, 3); None before the first ``reset()``. A machine without OpenGL
        raises ``RuntimeError`` naming ``MUJOCO_GL`` (``egl`` or ``osmesa`` on a headless machine)."""
        if self.physics is None:
            return None
        try:
            return self.physics.render(height=240, width=320, camera_id=0)
        except Exception as error:  # dm_control raises several GL error types
            raise RuntimeError(f"MuJoCo cannot render (MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}): "
                               f"{type(error).__name__}: {str(error).splitlines()[0][:120]}") from None

    def __repr__(self) -> str:
        return (f"DMCMultiTaskEnv({self._domain}-{self._task}, obs={self._observation_space.shape[0]}, "
                f"actions={self._action_space.shape[0]}, action_repeat={self._action_repeat})")

    # ------------------------------------------------------------------ helpers

    def _load(self) -> Any:
        return load_suite().load(self._domain, self._task, task_kwargs={'random': self._task_rng})

    def _observe(self, observation: Dict[str, Any]) -> Dict[str, Any]:
        """LightZero's observation dict of the flattened state observation."""
        flat = np.concatenate([np.asarray(observation[key], dtype=np.float32).reshape(-1) for key in self._obs_keys])
        return {'observation': flat, 'action_mask': None, 'to_play': -1, 'timestep': self._timestep}

    def _scale_action(self, action: Any) -> np.ndarray:
        """``[-1, 1]^a`` -> the action spec's ``[minimum, maximum]`` (values outside are clipped first)."""
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape != self._action_space.shape:
            raise ValueError(f"{self!r} expects an action of shape {self._action_space.shape}, got {action.shape}")
        action = np.clip(action, -1., 1.)
        return self._action_low + (action + 1.) * 0.5 * (self._action_high - self._action_low)


