"""Policies registered in ding's POLICY_REGISTRY on import: ``scalezero``, ``sampled_scalezero``."""
from policies.scalezero import SampledScaleZeroPolicy, ScaleZeroPolicy  # noqa: F401

REGISTERED_POLICIES = ["scalezero", "sampled_scalezero"]
