"""Model components of the ScaleZero world model (MoE feed-forward layer, ...)."""
# Importing these modules registers 'ScaleZeroModel' and 'SampledScaleZeroModel' in ding's MODEL_REGISTRY.
from lzero_ext.model.scalezero_model import SampledScaleZeroModel, ScaleZeroModel  # noqa: F401
from lzero_ext.model.world_model import MultiTaskWorldModel  # noqa: F401
from lzero_ext.model.grid_encoder import GridUniZeroModel  # noqa: F401  (registers 'GridUniZeroModel')

REGISTERED_MODELS = ["ScaleZeroModel", "SampledScaleZeroModel", "GridUniZeroModel"]
