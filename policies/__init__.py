"""Policies registered in ding's POLICY_REGISTRY on import: ``scalezero``, ``sampled_scalezero``, ``grid_unizero``."""
from policies.grid_unizero import GridUniZeroPolicy  # noqa: F401
from policies.scalezero import SampledScaleZeroPolicy, ScaleZeroPolicy  # noqa: F401

REGISTERED_POLICIES = ["scalezero", "sampled_scalezero", "grid_unizero"]
