"""ScaleZero policies: lightzero's UniZero policies serving many tasks with one model.

Registered in ding's ``POLICY_REGISTRY`` as ``scalezero`` (discrete actions, MCTS with lightzero's
``UniZeroMCTSCtree``) and ``sampled_scalezero`` (continuous actions, sampled MCTS). Everything
multi-task lives in :class:`policies.multitask.MultiTaskPolicyMixin`; this module holds the
registered classes and their default configs (every new key documented once, here).

Example::

    >>> from ding.policy import create_policy
    >>> cfg = ScaleZeroPolicy.default_config()            # then compile_config(...) as usual
    >>> cfg.type, cfg.task_num
    ('scalezero', 1)
"""
import copy
from typing import List, Tuple

from ding.utils import POLICY_REGISTRY, deep_merge_dicts
from lzero.policy.sampled_unizero import SampledUniZeroPolicy
from lzero.policy.unizero import UniZeroPolicy

from lzero_ext.model.world_model import MultiTaskWorldModel
from policies.multitask import MultiTaskPolicyMixin

MULTITASK_POLICY_KEYS = dict(
    # (int) Number of tasks the one shared model serves; task ids are 0..task_num-1.
    task_num=1,
    # (int) The task this config describes. Single-task pipelines (e.g. lightzero's own entries) use it
    # for every call; the multi-task entry sets it per task.
    task_id=0,
    # (list[float] | None) Per-task weights of the summed loss; None weighs every task 1.
    task_loss_weights=None,
)

# The world model's own keys (num_tasks, moe, share_heads, task_embed_option, latent_norm, ...) are
# documented once, in MultiTaskWorldModel.config, and merged into ``model.world_model_cfg`` here.
SCALEZERO_WORLD_MODEL_KEYS = MultiTaskWorldModel.config


def _scalezero_config(parent: dict, policy_type: str) -> dict:
    config = deep_merge_dicts(copy.deepcopy(parent), dict(type=policy_type, **MULTITASK_POLICY_KEYS))
    config["model"]["world_model_cfg"] = deep_merge_dicts(config["model"]["world_model_cfg"], SCALEZERO_WORLD_MODEL_KEYS)
    # (str) Encoder normalisation: LayerNorm, since BatchNorm statistics would mix tasks (and differ across ranks).
    config["model"]["norm_type"] = "LN"
    return config


@POLICY_REGISTRY.register("scalezero")
class ScaleZeroPolicy(MultiTaskPolicyMixin, UniZeroPolicy):
    """UniZero with the ScaleZero world model (MoE transformer, per-task heads), trained on many tasks."""

    config = _scalezero_config(UniZeroPolicy.config, "scalezero")

    def default_model(self) -> Tuple[str, List[str]]:
        return "ScaleZeroModel", ["lzero_ext.model.scalezero_model"]


@POLICY_REGISTRY.register("sampled_scalezero")
class SampledScaleZeroPolicy(MultiTaskPolicyMixin, SampledUniZeroPolicy):
    """Sampled UniZero (continuous actions, K sampled actions per node) with the ScaleZero world model."""

    _continuous_actions = True
    config = _scalezero_config(SampledUniZeroPolicy.config, "sampled_scalezero")

    def default_model(self) -> Tuple[str, List[str]]:
        return "SampledScaleZeroModel", ["lzero_ext.model.scalezero_model"]
