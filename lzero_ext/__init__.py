"""ScaleZero for LightZero: importing this package registers the project's envs and models in
DI-engine's registries (``ENV_REGISTRY``, ``MODEL_REGISTRY``). The policies live one layer up, in the
``policies`` package (it imports this one, never the other way round): ``import policies``, or
``import lzero_ext.registry`` for everything at once.

Importing it changes nothing global: the banners and warnings that gym, DI-engine and lightzero
print on import are captured (``lzero_ext.import_scope.import_noise()``), and the root logger keeps
its level, handlers and filters (lightzero's world-model module sets it to DEBUG on import).
"""
from lzero_ext.import_scope import captured_imports

with captured_imports():
    import lzero.model.unizero_world_models.world_model  # noqa: F401  (sets the root logger to DEBUG; undone)

    from lzero_ext import envs, model  # noqa: F401  (registers envs and models)
