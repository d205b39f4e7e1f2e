"""ALE's Atari ids (``PongNoFrameskip-v4``, ``Breakout-v4``, ``ALE/Pong-v5``, ...) for gym 0.25.1.

ale-py 0.10 registers its games with gymnasium only, so ``gym.make('PongNoFrameskip-v4')`` in the
pinned gym 0.25.1 raises ``NameNotFound``, and lightzero's own Atari env (``AtariEnvLightZero``,
``atari_lightzero``), which builds its games with ``gym.make``, cannot run.
:func:`register_ale_ids` copies each of ale-py's gymnasium registrations into gym's registry with
the same kwargs (game, frame skip, sticky-action probability, frame cap), pointing at
:class:`ALEGymEnv`, a gym 0.25 adapter around ale-py's own ``AtariEnv``. Ids that gym already
knows are left alone. ``import lzero_ext`` (or ``lzero_ext.envs``) calls it once; lightzero's
subprocess env managers fork after that and inherit the registrations.

Example::

    >>> import gym
    >>> import lzero_ext.envs.ale_gym
    >>> env = gym.make('PongNoFrameskip-v4')
    >>> env.reset(seed=0).shape
    (210, 160, 3)
    >>> obs, reward, done, info = env.step(0)
"""
from typing import Any, Dict, List, Optional, Tuple, Union

import ale_py  # (importing it registers ALE's games with gymnasium)
import gym
import gymnasium
import numpy as np
from ale_py.env import AtariEnv

ALE_ENTRY_POINT = "ale_py.env:AtariEnv"
ENTRY_POINT = f"{__name__}:ALEGymEnv"


def _gym_space(space: gymnasium.spaces.Space) -> gym.spaces.Space:
    """The gym 0.25 twin of one of the gymnasium spaces that ``AtariEnv`` uses (Discrete, Box)."""
    if isinstance(space, gymnasium.spaces.Discrete):
        return gym.spaces.Discrete(int(space.n))
    if isinstance(space, gymnasium.spaces.Box):
        return gym.spaces.Box(low=space.low, high=space.high, shape=space.shape, dtype=space.dtype)
    raise TypeError(f"no gym 0.25 equivalent for ALE space {space!r}")


class ALEGymEnv(gym.Env):
    """ale-py's ``AtariEnv`` behind gym 0.25's ``Env`` API; ``gym.make`` turns its
    ``(obs, reward, terminated, truncated, info)`` steps into the old 4-tuple for callers that want it.

    Attributes that Atari wrappers reach through ``env.unwrapped`` are ale-py's own: ``ale``
    (the ``ALEInterface``, e.g. ``ale.lives()``), ``get_action_meanings()`` and ``np_random``.
    ``seed(s)`` takes effect at the next ``reset()``, as it did with atari-py.
    """

    metadata = {"render_modes": ["human", "rgb_array"]}

    def __init__(self, **kwargs: Any) -> None:
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # as AtariEnv does, but before its banner
        self.ale_env = AtariEnv(**kwargs)
        self.observation_space = _gym_space(self.ale_env.observation_space)
        self.action_space = _gym_space(self.ale_env.action_space)
        self.render_mode = kwargs.get("render_mode")
        self._next_seed: Optional[int] = None

    @property
    def ale(self) -> ale_py.ALEInterface:
        return self.ale_env.ale

    @property
    def np_random(self) -> np.random.Generator:
        return self.ale_env.np_random

    def get_action_meanings(self) -> List[str]:
        return self.ale_env.get_action_meanings()

    def seed(self, seed: Optional[int] = None) -> List[Optional[int]]:
        self._next_seed = seed
        return [seed]

    def reset(self, *, seed: Optional[int] = None, return_info: bool = False,
              options: Optional[Dict[str, Any]] = None) -> Union[np.ndarray, Tuple[np.ndarray, Dict[str, Any]]]:
        if seed is None:
            seed, self._next_seed = self._next_seed, None
        obs, info = self.ale_env.reset(seed=seed, options=options)
        return (obs, info) if return_info else obs

    def step(self, action: int) -> Tuple[np.ndarray, float, bool, bool, Dict[str, Any]]:
        return self.ale_env.step(action)

    def render(self, mode: str = "rgb_array") -> Optional[np.ndarray]:
        return self.ale_env.render()

    def close(self) -> None:
        self.ale_env.close()


def register_ale_ids() -> List[str]:
    """Registers every ALE id that gymnasium knows and gym does not; returns the ids added."""
    added = []
    for env_id, spec in gymnasium.registry.items():
        if spec.entry_point != ALE_ENTRY_POINT or env_id in gym.envs.registry:
            continue
        gym.register(id=env_id, entry_point=ENTRY_POINT, kwargs=dict(spec.kwargs),
                     max_episode_steps=spec.max_episode_steps, nondeterministic=spec.nondeterministic)
        added.append(env_id)
    return added


REGISTERED_ALE_IDS = register_ale_ids()
