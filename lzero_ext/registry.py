"""Every name this project adds to ding's registries. Importing this module registers them all: the
envs and models (``import lzero_ext``) and the policies (``import policies``, which builds on lzero_ext).

Example::

    >>> from lzero_ext.registry import REGISTERED, registered_names
    >>> registered_names() == REGISTERED
    True
"""
from typing import Dict, List

from ding.utils import ENV_REGISTRY, MODEL_REGISTRY, POLICY_REGISTRY

import policies
from lzero_ext import envs, model

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
