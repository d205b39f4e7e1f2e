"""Environments registered in ding's ENV_REGISTRY on import; ALE's Atari ids also go into gym's registry
(``lzero_ext.envs.ale_gym``, for lightzero's own ``atari_lightzero`` env)."""
from lzero_ext.envs import ale_gym  # noqa: F401
from lzero_ext.envs.atari_env import AtariMultiTaskEnv  # noqa: F401
from lzero_ext.envs.classic_control_env import ClassicControlEnv  # noqa: F401
from lzero_ext.envs.dmc_env import DMCMultiTaskEnv  # noqa: F401
from lzero_ext.envs.jericho_env import JerichoMultiTaskEnv  # noqa: F401
from lzero_ext.envs.minatar_env import MinAtarEnv  # noqa: F401

REGISTERED_ENVS = ["atari_scalezero", "classic_control_scalezero", "dmc_scalezero", "jericho_scalezero", "minatar_scalezero"]
