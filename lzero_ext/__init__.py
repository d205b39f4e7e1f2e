"""ScaleZero for LightZero: importing this package registers the project's envs, models and
policies in DI-engine's registries (``ENV_REGISTRY``, ``MODEL_REGISTRY``, ``POLICY_REGISTRY``).
"""
import logging
from typing import Dict, List

# lightzero's unizero world_model module sets the root logger to DEBUG when imported; import it
# first and undo that at once, before later imports (matplotlib, git, docker) log their debug noise.
import lzero.model.unizero_world_models.world_model  # noqa: F401,E402
logging.getLogger().setLevel(logging.INFO)

from ding.utils import ENV_REGISTRY, MODEL_REGISTRY, POLICY_REGISTRY  # noqa: E402

from lzero_ext import envs, model  # noqa: F401,E402  (registers envs and models)
import policies  # noqa: E402  (registers policies; imports lzero_ext.model, so it comes last)

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
