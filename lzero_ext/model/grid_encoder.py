"""Image encoders for small grids (e.g. MinAtar's 10x10 boards), on lightzero's UniZero encoder.

lightzero 0.2.0's ``RepresentationNetworkUniZero`` sizes its last linear layer only for 64x64 and
84/96-pixel inputs (after its /8 downsampling) and fails at the first forward on anything else.
:class:`GridRepresentationNetwork` is that network without downsampling (a stride-1 3x3 conv, norm,
activation, residual blocks: every cell keeps its own feature) and with the last linear layer sized
for the grid, ``num_channels * H * W -> embedding_dim``.

* :func:`image_representation_network` picks lightzero's network where it works and the grid one
  otherwise (the multi-task model's shared image encoder);
* :class:`GridUniZeroModel` (``MODEL_REGISTRY`` ``'GridUniZeroModel'``) is lightzero's single-task
  ``UniZeroModel`` with the grid encoder swapped in, for lightzero's own UniZero on small grids.
"""
from typing import Any

import torch
from ding.utils import MODEL_REGISTRY, SequenceType
from lzero.model.common import RepresentationNetworkUniZero
from lzero.model.unizero_model import UniZeroModel
from torch import nn

LIGHTZERO_IMAGE_SIZES = frozenset({64, 84, 96})  # input heights RepresentationNetworkUniZero sizes its last layer for


class GridRepresentationNetwork(RepresentationNetworkUniZero):
    """``RepresentationNetworkUniZero`` for a (C, H, W) grid of any size, without downsampling:
    ``(B, C, H, W) -> (B, embedding_dim)``, SimNorm'd as lightzero's (replace ``sim_norm`` to change that).

    Example:
        >>> net = GridRepresentationNetwork((10, 10, 10), num_channels=16, embedding_dim=32, norm_type='LN')
        >>> net(torch.rand(4, 10, 10, 10)).shape
        torch.Size([4, 32])
    """

    def __init__(self, observation_shape: SequenceType = (10, 10, 10), num_res_blocks: int = 1, num_channels: int = 32,
                 downsample: bool = False, *, activation: nn.Module = nn.GELU(approximate='tanh'), norm_type: str = 'LN',
                 embedding_dim: int = 256, group_size: int = 8) -> None:
        if downsample:
            raise ValueError("GridRepresentationNetwork keeps the grid's resolution: downsample must be False")
        super().__init__(observation_shape, num_res_blocks, num_channels, False, activation=activation,
                         norm_type=norm_type, embedding_dim=embedding_dim, group_size=group_size)
        _, height, width = observation_shape
        self.last_linear = nn.Linear(num_channels * height * width, embedding_dim, bias=False)  # (B, C*H*W) -> (B, D)


def image_representation_network(observation_shape: SequenceType, num_res_blocks: int, num_channels: int,
                                 downsample: bool, **kwargs: Any) -> RepresentationNetworkUniZero:
    """lightzero's ``RepresentationNetworkUniZero`` for the image sizes it supports (64, 84, 96 with
    downsampling), else a :class:`GridRepresentationNetwork` (which needs ``downsample=False``)."""
    height = observation_shape[1]
    if downsample and height in LIGHTZERO_IMAGE_SIZES:
        return RepresentationNetworkUniZero(observation_shape, num_res_blocks, num_channels, downsample, **kwargs)
    if downsample:
        raise ValueError(f"image observations of shape {tuple(observation_shape)}: lightzero's downsampling encoder "
                         f"supports heights {sorted(LIGHTZERO_IMAGE_SIZES)}; set model.downsample=False for small grids")
    return GridRepresentationNetwork(observation_shape, num_res_blocks, num_channels, False, **kwargs)


@MODEL_REGISTRY.register('GridUniZeroModel')
class GridUniZeroModel(UniZeroModel):
    """lightzero's ``UniZeroModel`` (``obs_type='image'``) with a :class:`GridRepresentationNetwork` as the
    encoder; everything else (world model, SimNorm latents, heads, inference) is lightzero's.

    It takes lightzero's full UniZero policy config (``policy.model`` with ``type='GridUniZeroModel'``,
    ``import_names=['lzero_ext.model.grid_encoder']``); ``lzero_ext.bench.learning_configs.run_configs``
    builds one, and ``tests/test_bench_learning_minatar.py`` trains it (arm ``unizero``).
    """

    def __init__(self, observation_shape: SequenceType = (10, 10, 10), action_space_size: int = 6,
                 num_res_blocks: int = 1, num_channels: int = 32, *, downsample: bool = False, norm_type: str = 'LN',
                 world_model_cfg: Any = None, **kwargs: Any) -> None:
        super().__init__(observation_shape=observation_shape, action_space_size=action_space_size,
                         num_res_blocks=num_res_blocks, num_channels=num_channels, downsample=downsample,
                         norm_type=norm_type, world_model_cfg=world_model_cfg, **kwargs)
        encoder = GridRepresentationNetwork(observation_shape, num_res_blocks, num_channels, False,
                                            activation=self.activation, norm_type=norm_type,
                                            embedding_dim=self.world_model.config.embed_dim,
                                            group_size=self.world_model.config.group_size)
        self.representation_network = encoder
        self.tokenizer.encoder = encoder  # the world model encodes observations through its tokenizer
