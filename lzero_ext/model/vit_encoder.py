"""Vision Transformer image encoder, the paper's Atari encoder: 64x64 RGB cut into 8x8 patches.

Built on Hugging Face ``transformers``' ``ViTModel`` (already pinned for the text encoder). timm's
``VisionTransformer`` was the first choice, but timm 1.0 imports torchvision at ``import timm``,
and PyPI's torchvision does not load beside the project's CPU torch wheel; torchvision's own ViT
is out for the same reason.

The encoder maps ``(B, C, H, W)`` images to ``(B, latent_dim)``: patch embedding, class token,
``depth`` pre-norm transformer layers, final LayerNorm, the class token's state, and a linear
projection to the world model's latent width. The world model's shared latent norm (LayerNorm by
default) follows it in :class:`lzero_ext.model.scalezero_model.ObservationEncoder`.

Sizes (``VIT_SIZES``, after the paper): ``small`` (width 768, depth 6, 6 heads, MLP 2048) for up
to 8 tasks and ``base`` (depth 12) for 26 tasks.
"""
from typing import Any, Dict, FrozenSet, Mapping, Sequence

from torch import Tensor, nn

# The keys of ``world_model_cfg.vit`` (defaults and meaning: ``MultiTaskWorldModel.config``).
VIT_KEYS: FrozenSet[str] = frozenset({'patch_size', 'width', 'depth', 'num_heads', 'mlp_dim'})
VIT_SIZES: Dict[str, Dict[str, int]] = {
    'small': dict(patch_size=8, width=768, depth=6, num_heads=6, mlp_dim=2048),  # <= 8 tasks
    'base': dict(patch_size=8, width=768, depth=12, num_heads=6, mlp_dim=2048),  # 26 tasks
}


class ViTEncoder(nn.Module):
    """``ViTModel`` over the image, class-token output projected to ``latent_dim``.

    Arguments:
        observation_shape: ``(C, H, W)``; H and W must be multiples of ``patch_size``.
        latent_dim: output width (the world model's embed_dim, less a 'concat' task embedding).
        patch_size, width, depth, num_heads, mlp_dim: the ViT's sizes (``VIT_SIZES``).

    Example:
        >>> import torch
        >>> enc = ViTEncoder((3, 16, 16), 32, patch_size=8, width=24, depth=1, num_heads=2, mlp_dim=48)
        >>> enc(torch.rand(5, 3, 16, 16)).shape
        torch.Size([5, 32])
    """

    def __init__(self, observation_shape: Sequence[int], latent_dim: int, *, patch_size: int, width: int,
                 depth: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        from transformers import ViTConfig, ViTModel  # heavy import, only when a ViT is built

        if len(observation_shape) != 3:
            raise ValueError(f"the ViT encoder needs (C, H, W) image observations, got shape {tuple(observation_shape)}")
        channels, height, width_px = (int(n) for n in observation_shape)
        if height != width_px or height % patch_size:
            raise ValueError(f"the ViT encoder needs square images whose side is a multiple of patch_size={patch_size}, "
                             f"got {height}x{width_px}")
        if min(patch_size, width, depth, num_heads, mlp_dim, latent_dim) < 1 or width % num_heads:
            raise ValueError(f"ViT sizes must be >= 1 with width divisible by num_heads, got width={width}, "
                             f"depth={depth}, num_heads={num_heads}, mlp_dim={mlp_dim}, patch_size={patch_size}")
        config = ViTConfig(image_size=height, patch_size=patch_size, num_channels=channels, hidden_size=width,
                           num_hidden_layers=depth, num_attention_heads=num_heads, intermediate_size=mlp_dim,
                           hidden_act='gelu', hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.projection = nn.Linear(width, latent_dim)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.vit(pixel_values=x).last_hidden_state  # (B, 1 + num_patches, width), final LayerNorm applied
        return self.projection(hidden[:, 0])                  # (B, latent_dim): the class token


def build_vit_encoder(observation_shape: Sequence[int], latent_dim: int, vit_cfg: Mapping[str, Any]) -> ViTEncoder:
    """A :class:`ViTEncoder` from ``world_model_cfg.vit``; unknown or missing keys are one clear error."""
    unknown, missing = set(vit_cfg) - VIT_KEYS, VIT_KEYS - set(vit_cfg)
    if unknown or missing:
        raise ValueError(f"world_model_cfg.vit needs exactly the keys {sorted(VIT_KEYS)}; "
                         f"unknown {sorted(unknown)}, missing {sorted(missing)}")
    return ViTEncoder(observation_shape, latent_dim, **{key: int(vit_cfg[key]) for key in VIT_KEYS})
