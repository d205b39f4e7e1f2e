"""Policies registered in ding's POLICY_REGISTRY on import: ``scalezero``, ``sampled_scalezero``."""
# Defined before the import below: ``import policies.scalezero`` in a fresh interpreter (what ding's
# ``import_names`` does) imports lzero_ext, which reads this name from the half-initialised package.
REGISTERED_POLICIES = ["scalezero", "sampled_scalezero"]

from policies.scalezero import SampledScaleZeroPolicy, ScaleZeroPolicy  # noqa: E402,F401
