"""What every ScaleZero env shares: ding's default-config convention, per-worker env configs, and
validation of positive-int and probability config values."""
import copy
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
from ding.envs import BaseEnv
from ding.utils import deep_merge_dicts
from easydict import EasyDict


class ScaleZeroEnv(BaseEnv):
    """Base of the project's envs. Subclasses define ``config`` (their own keys, each documented once; they may
    replace a key of ``ScaleZeroEnv.config``) and may set ``EVALUATOR_OVERRIDES``: keys the evaluator's copies
    change (e.g. Atari's raw rewards, full games)."""

    # The keys every env shares: env counts, evaluation and the env manager (read by lightzero's entries).
    config: Dict[str, Any] = dict(
        # (int) Number of collector env instances (read by create_collector_env_cfg).
        collector_env_num=8,
        # (int) Number of evaluator env instances (read by create_evaluator_env_cfg).
        evaluator_env_num=3,
        # (int) Episodes per evaluation.
        n_evaluator_episode=3,
        # (float) Evaluation return at which lightzero's entries stop training.
        stop_value=int(1e6),
        # (dict) Env manager settings; observations are dicts, so no shared memory.
        manager=dict(shared_memory=False, ),
    )
    EVALUATOR_OVERRIDES: Dict[str, Any] = {}

    @classmethod
    def default_config(cls: type) -> EasyDict:
        """The default config: ``ScaleZeroEnv.config`` with the subclass's ``config`` merged over it (a deep copy)."""
        cfg = EasyDict(deep_merge_dicts(ScaleZeroEnv.config, cls.config))
        cfg.cfg_type = cls.__name__ + 'Dict'
        return cfg

    @classmethod
    def episode_cap(cls, cfg: Mapping[str, Any]) -> Optional[str]:
        """How an env of config ``cfg`` cuts episodes shorter than its benchmark plays them, e.g.
        ``'200 frames (full games: up to 108,000)'``, so scores can be marked; None when it does not."""
        return None

    def frame(self) -> Optional[np.ndarray]:
        """The current picture as uint8 ``(H, W, 3)`` for watching an episode; None for envs without one (text)."""
        return None

    # Spaces set by each subclass's constructor (``_observation_space``, ``_action_space``, ``_reward_space``).
    @property
    def observation_space(self) -> Any:
        return self._observation_space

    @property
    def action_space(self) -> Any:
        return self._action_space

    @property
    def reward_space(self) -> Any:
        return self._reward_space

    @staticmethod
    def _copies(cfg: dict, count_key: str, overrides: Dict[str, Any]) -> List[dict]:
        cfg = copy.deepcopy(cfg)
        env_num = cfg.pop(count_key)
        cfg.update(overrides)
        return [copy.deepcopy(cfg) for _ in range(env_num)]

    @classmethod
    def create_collector_env_cfg(cls, cfg: dict) -> List[dict]:
        """``collector_env_num`` copies of ``cfg``."""
        return cls._copies(cfg, 'collector_env_num', {})

    @classmethod
    def create_evaluator_env_cfg(cls, cfg: dict) -> List[dict]:
        """``evaluator_env_num`` copies of ``cfg`` with ``EVALUATOR_OVERRIDES`` applied."""
        return cls._copies(cfg, 'evaluator_env_num', cls.EVALUATOR_OVERRIDES)


def positive_int(key: str, value: Any) -> int:
    """``value`` as a positive int; a clear error names ``key`` otherwise."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key} must be a positive int, got {value!r}")
    return int(value)


def probability(key: str, value: Any) -> float:
    """``value`` as a float in [0, 1]; a clear error names ``key`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0. <= value <= 1.:
        raise ValueError(f"{key} must be a probability in [0, 1], got {value!r}")
    return float(value)
