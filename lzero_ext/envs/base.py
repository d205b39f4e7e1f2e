"""What every ScaleZero env shares: ding's default-config convention, per-worker env configs, and
validation of positive-int and probability config values."""
import copy
from typing import Any, Dict, List

import numpy as np
from ding.envs import BaseEnv
from easydict import EasyDict


class ScaleZeroEnv(BaseEnv):
    """Base of the project's envs. Subclasses define ``config`` (every key documented once) and may set
    ``EVALUATOR_OVERRIDES``: keys the evaluator's copies change (e.g. Atari's raw rewards, full games)."""

    config: Dict[str, Any] = {}
    EVALUATOR_OVERRIDES: Dict[str, Any] = {}

    @classmethod
    def default_config(cls: type) -> EasyDict:
        """The default config, a deep copy of ``cls.config``."""
        cfg = EasyDict(copy.deepcopy(cls.config))
        cfg.cfg_type = cls.__name__ + 'Dict'
        return cfg

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
