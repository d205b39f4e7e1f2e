"""The ViT image encoder (lzero_ext/model/vit_encoder.py): shapes, the latent norm after it, one encoder shared
by tasks, the paper presets' sizes and bad configs."""
import numpy as np
import pytest
import torch

from lzero_ext.model.scalezero_model import ScaleZeroModel
from lzero_ext.model.vit_encoder import VIT_SIZES, ViTEncoder
from lzero_ext.model.world_model import TaskSwitch

TINY_VIT = dict(patch_size=8, width=24, depth=2, num_heads=2, mlp_dim=48)


def vit_model(num_tasks: int = 3, **overrides) -> ScaleZeroModel:
    cfg = dict(num_tasks=num_tasks, obs_type='image', embed_dim=32, num_heads=2, num_layers=1, env_num=2, max_blocks=4,
               max_tokens=8, context_length=4, encoder='vit', vit=dict(TINY_VIT),
               moe=dict(enabled=True, num_experts=2))
    cfg.update(overrides)
    return ScaleZeroModel(observation_shape=(3, 64, 64), action_space_size=18, world_model_cfg=cfg)


def test_vit_output_shape_and_patches():
    enc = ViTEncoder((3, 64, 64), 40, **TINY_VIT)
    x = torch.rand(5, 3, 64, 64)
    assert enc(x).shape == (5, 40)
    assert enc.vit(pixel_values=x).last_hidden_state.shape == (5, 1 + (64 // 8) ** 2, 24)  # class token + 64 patches
    assert enc.vit.embeddings.patch_embeddings.projection.kernel_size == (8, 8)


def test_encoder_output_goes_through_the_layernorm_latent():
    model = vit_model().eval()
    encoder = model.representation_network
    assert type(encoder.body) is ViTEncoder and isinstance(encoder.norm, torch.nn.LayerNorm)
    with torch.no_grad():
        z = encoder(torch.rand(6, 3, 64, 64))                                  # (6, 32)
        raw = encoder.body(torch.rand(6, 3, 64, 64))
    assert z.shape == (6, 32)
    torch.testing.assert_close(z.mean(-1), torch.zeros(6), atol=1e-5, rtol=0)  # LayerNorm: zero mean, unit variance
    torch.testing.assert_close(z.var(-1, unbiased=False), torch.ones(6), atol=1e-3, rtol=0)
    assert not torch.allclose(raw.var(-1, unbiased=False), torch.ones(6), atol=1e-3)  # the ViT alone is not normed
    obs = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model.initial_inference(torch.zeros(2, 3, 64, 64), [-1, -1], obs, np.zeros(2, dtype=int), task_id=1)
    torch.testing.assert_close(out.latent_state[:, 0], encoder(obs))


def test_one_vit_is_shared_by_three_tasks():
    model = vit_model(num_tasks=3)
    body = model.representation_network.body
    assert not isinstance(body, TaskSwitch) and sum(isinstance(m, ViTEncoder) for m in model.modules()) == 1
    obs = torch.rand(4, 3, 64, 64)
    latents = []
    for task_id in range(3):
        with model.bind_task(task_id), torch.no_grad():
            latents.append(model.representation_network(obs))
    torch.testing.assert_close(latents[0], latents[1])
    torch.testing.assert_close(latents[0], latents[2])
    # A batch of all three tasks' images (the batched multi-task path) gives each task's own rows.
    with torch.no_grad():
        batched = model.representation_network(torch.cat([obs[:1], obs[1:3], obs[3:]]))
    torch.testing.assert_close(batched, latents[0], rtol=1e-5, atol=1e-5)
    # Every task's loss reaches the one encoder: three tasks, three gradients on the same weights.
    patch = body.vit.embeddings.patch_embeddings.projection.weight
    with torch.no_grad():
        for p in model.world_model.head_value.parameters():  # lightzero zero-inits the heads' last layers
            p.normal_(0.0, 0.2)
    grads = []
    for task_id in range(3):
        model.zero_grad()
        with model.bind_task(task_id):
            value = model.world_model.head_value.current.head_module(model.representation_network(obs))  # task's head
        value.sum().backward()
        grads.append(patch.grad.clone())
    assert all(g.abs().sum() > 0 for g in grads) and not torch.allclose(grads[0], grads[1])


def test_paper_presets_use_the_papers_vit():
    from zoo.atari.config.scalezero_multitask_config import build_configs

    assert VIT_SIZES['small'] == dict(patch_size=8, width=768, depth=6, num_heads=6, mlp_dim=2048)
    assert VIT_SIZES['base'] == dict(VIT_SIZES['small'], depth=12)
    for preset, size in (('atari8', 'small'), ('atari26', 'base')):
        wm = build_configs(preset, cuda=False)[0][0].policy.model.world_model_cfg
        assert wm.encoder == 'vit' and dict(wm.vit) == VIT_SIZES[size]
    assert 'encoder' not in build_configs('smoke', cuda=False)[0][0].policy.model.world_model_cfg  # ResNet default


@pytest.mark.parametrize('overrides, match', [
    (dict(encoder='convnext'), 'encoder must be one of'),
    (dict(vit=dict(TINY_VIT, patch_size=7)), 'multiple of patch_size'),
    (dict(vit=dict(TINY_VIT, num_heads=5)), 'divisible by num_heads'),
    (dict(vit=dict(TINY_VIT, dim=3)), 'needs exactly the keys'),
])
def test_bad_vit_configs_are_one_clear_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        vit_model(**overrides)
