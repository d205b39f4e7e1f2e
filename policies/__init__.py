"""Policies registered in ding's POLICY_REGISTRY on import: ``scalezero``, ``sampled_scalezero``.

They build on ``lzero_ext`` (model, search, DPS), so importing this package registers the envs and models
too; ``lzero_ext`` never imports it at package level.
"""
from lzero_ext.import_scope import captured_imports

with captured_imports():  # lightzero's policy modules print on first import
    from policies.scalezero import SampledScaleZeroPolicy, ScaleZeroPolicy  # noqa: F401

REGISTERED_POLICIES = ["scalezero", "sampled_scalezero"]
