"""Environments registered in ding's ENV_REGISTRY on import."""
from lzero_ext.envs.atari_env import AtariMultiTaskEnv  # noqa: F401

REGISTERED_ENVS = ["atari_scalezero"]
