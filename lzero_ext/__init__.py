"""ScaleZero for LightZero: importing this package registers the project's envs, models and
policies in DI-engine's registries (``ENV_REGISTRY``, ``MODEL_REGISTRY``, ``POLICY_REGISTRY``).

Importing it changes nothing global: the banners and warnings that gym, DI-engine and lightzero
print on import are captured (``lzero_ext.import_scope.import_noise()``), and the root logger keeps
its level, handlers and filters (lightzero's world-model module sets it to DEBUG on import).
"""
from typing import Dict, List

from lzero_ext.import_scope import captured_imports

with captured_imports():
    import lzero.model.unizero_world_models.world_model  # noqa: F401  (sets the root logger to DEBUG; undone)
    from ding.utils import ENV_REGISTRY, MODEL_REGISTRY, POLICY_REGISTRY

    from lzero_ext import envs, model  # noqa: F401  (registers envs and models)
    import policies  # (registers policies; imports lzero_ext.model, so it comes last)

# Names this project adds to each ding registry; tests check they are all present.
REGISTERED: Dict[str, List[str]] = {
    "env": envs.REGISTERED_ENVS,
    "model": model.REGISTERED_MODELS,
    "policy": policies.REGISTERED_POLICIES,
}


def registered_names() -> Dict[str, List[str]]:
    """The project's names found in ding's registries, per registry."""
    registries = {"env": ENV_REGISTRY, "model": MODEL_REGISTRY, "policy": POLICY_REGISTRY}
    return {kind: [name for name in names if name in registries[kind]] for kind, names in REGISTERED.items()}
