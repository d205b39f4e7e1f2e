"""lightzero's single-task UniZero for image observations of any size (e.g. MinAtar's 10x10 grids).

Registered in ding's ``POLICY_REGISTRY`` as ``'grid_unizero'``. lightzero 0.2.0's ``UniZeroPolicy``
starts its collect and eval modes with a (N, C, 64, 64) "previous observation" batch for conv
models, which the world model encodes at the first step; on other image sizes that fails. This
subclass only replaces that initial batch with zeros of the configured observation shape and uses
``GridUniZeroModel`` (lightzero's UniZero model with a grid encoder) as its default model;
everything else is lightzero's UniZero.
"""
from typing import List, Tuple

from ding.utils import POLICY_REGISTRY
from lzero.entry.utils import initialize_zeros_batch
from lzero.policy.unizero import UniZeroPolicy


@POLICY_REGISTRY.register('grid_unizero')
class GridUniZeroPolicy(UniZeroPolicy):
    """``UniZeroPolicy`` whose collect/eval start from a zero batch of the real observation shape."""

    def default_model(self) -> Tuple[str, List[str]]:
        return 'GridUniZeroModel', ['lzero_ext.model.grid_encoder']

    def _init_collect(self) -> None:
        super()._init_collect()
        self.last_batch_obs = initialize_zeros_batch(self._cfg.model.observation_shape, self.collector_env_num,
                                                     self._cfg.device)

    def _init_eval(self) -> None:
        super()._init_eval()
        self.last_batch_obs = initialize_zeros_batch(self._cfg.model.observation_shape, self.evaluator_env_num,
                                                     self._cfg.device)
