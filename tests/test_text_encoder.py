"""The pretrained text encoder (offline MiniLM): shapes, pooling, frozen vs fine-tuned training, the
embedding cache, errors, and the world model's ``obs_type='text'`` branch."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may touch the network (transformers reads it at import)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lzero_ext.model.text_encoder import TextEncoder, default_model_path, load_tokenizer, masked_mean  # noqa: E402

TEXTS = ["West of House. You are standing in an open field west of a white house.",
         "You are in the Chief's office. There is a piece of white paper here.",
         "It is pitch black. You are likely to be eaten by a grue."]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    os.environ["HF_HUB_OFFLINE"] = "1"
    return TextEncoder(16, cache_size=0)


def token_ids(texts, length: int = 48) -> torch.Tensor:
    return load_tokenizer()(texts, padding="max_length", max_length=length, truncation=True,
                            return_tensors="pt")["input_ids"]


def test_default_model_is_the_packaged_minilm():
    path = default_model_path()
    assert path.name == "model" and (path / "model.safetensors").is_file()
    assert load_tokenizer().pad_token_id == 0


def test_output_shape_and_distinct_latents(encoder):
    ids = token_ids(TEXTS)
    z = encoder(ids)
    assert z.shape == (3, 16) and torch.isfinite(z).all()
    assert torch.cdist(z, z)[~torch.eye(3, dtype=torch.bool)].min() > 1e-3  # different texts, different latents
    assert torch.allclose(encoder(ids.float()), z, atol=1e-6)  # the replay buffer hands over float token ids


def test_padding_does_not_change_the_embedding(encoder):
    short, long = token_ids(TEXTS, 40), token_ids(TEXTS, 128)
    assert torch.allclose(encoder(short), encoder(long), atol=1e-5)
    empty = torch.zeros(2, 40, dtype=torch.long)  # lightzero's zero "last observation": all padding
    assert torch.isfinite(encoder(empty)).all()


def test_masked_mean_is_mean_pooling():
    hidden = torch.arange(12.).reshape(1, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0]])
    assert masked_mean(hidden, mask).tolist() == [[1.5, 2.5, 3.5]]
    assert masked_mean(hidden, torch.zeros(1, 4)).tolist() == [[0., 0., 0.]]


def test_frozen_mode_trains_only_the_projection(encoder):
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert trainable == {"projection.weight", "projection.bias"}
    encoder.train()
    assert not encoder.pretrained.training and encoder.projection.training  # no dropout in the frozen encoder
    before = {name: p.detach().clone() for name, p in encoder.named_parameters()}
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.1)
    loss = encoder(token_ids(TEXTS)).pow(2).sum()
    loss.backward()
    assert all(p.grad is None for p in encoder.pretrained.parameters())
    optimizer.step()
    after = dict(encoder.named_parameters())
    assert not torch.equal(before["projection.weight"], after["projection.weight"])
    assert all(torch.equal(before[n], after[n]) for n in before if n.startswith("pretrained."))
    encoder.eval()


def test_finetune_mode_trains_the_pretrained_weights():
    encoder = TextEncoder(8, freeze=False)
    assert encoder.cache_size == 0 and all(p.requires_grad for p in encoder.parameters())
    encoder(token_ids(TEXTS[:2])).sum().backward()
    grads = [p.grad for n, p in encoder.named_parameters() if n.startswith("pretrained.encoder.layer.5.")]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_cache_gives_the_same_embeddings_and_is_bounded(encoder):
    cached = TextEncoder(16, cache_size=2)
    cached.load_state_dict(encoder.state_dict())
    ids = token_ids(TEXTS)
    assert torch.allclose(cached(ids), encoder(ids), atol=1e-6)
    assert len(cached._cache) == 2  # least recently used evicted
    assert torch.allclose(cached(ids[:1]), encoder(ids[:1]), atol=1e-6)
    cached.load_state_dict(cached.state_dict())
    assert len(cached._cache) == 0  # new weights: cache cleared


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "no-model")):
        TextEncoder(8, model_path=tmp_path / "no-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        TextEncoder(8, model_path=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="offline"):
        TextEncoder(8, model_path="someone/not-a-cached-model")


def test_world_model_text_branch():
    from lzero_ext.model.scalezero_model import ScaleZeroModel
    from lzero_ext.model.world_model import MultiTaskWorldModel

    cfg = dict(num_tasks=2, obs_type="text", embed_dim=32, num_heads=2, num_layers=1, env_num=2, max_blocks=4,
               max_tokens=8, context_length=4, moe=dict(enabled=True, num_experts=2))
    model = ScaleZeroModel(observation_shape=48, action_space_size=12, world_model_cfg=cfg).eval()
    body = model.representation_network.body
    assert isinstance(body, TextEncoder)  # one encoder for every task
    fresh = TextEncoder(32).pretrained.state_dict()  # lightzero's init_weights pass must not touch MiniLM
    assert all(torch.equal(fresh[k], v) for k, v in body.pretrained.state_dict().items())
    ids = token_ids(TEXTS[:2])
    for task_id in (0, 1):
        out = model.initial_inference(torch.zeros(2, 48), [-1, -1], ids, np.zeros(2, dtype=int), task_id=task_id)
        assert out.policy_logits.shape == (2, 12) and out.latent_state.shape == (2, 1, 32)
    latents = model.tokenizer.encode_to_obs_embeddings(ids.float().reshape(1, 2, 48))  # (B, T, L) training layout
    assert latents.shape == (2, 1, 32)
    assert torch.allclose(latents.mean(-1), torch.zeros(2, 1), atol=1e-5)  # followed by the latent LayerNorm
    with pytest.raises(ValueError, match="unknown text_encoder keys"):
        MultiTaskWorldModel.resolve_config(dict(obs_type="text", text_encoder=dict(model_dir="x")))


def test_frozen_pretrained_state_keys_name_only_frozen_encoders():
    from torch import nn

    from lzero_ext.model.text_encoder import TextEncoder, frozen_pretrained_state_keys

    frozen = nn.Sequential(TextEncoder(8))
    keys = frozen_pretrained_state_keys(frozen)
    assert keys and all(k.startswith("0.pretrained.") for k in keys)
    assert set(keys) == {k for k in frozen.state_dict() if k.startswith("0.pretrained.")}
    assert frozen_pretrained_state_keys(nn.Sequential(TextEncoder(8, freeze=False))) == []


def test_off_the_cpu_the_forward_reads_no_token_ids_on_the_host(monkeypatch):
    """On a GPU neither the padding cut nor the cache may read the ids back: with the encoder told its tensors
    are not on the host, the forward makes no host read of our own and gives the same latents."""
    from lzero_ext.model import text_encoder as module

    cached = TextEncoder(16, cache_size=8)
    ids = token_ids(TEXTS)
    with torch.no_grad():
        expected = cached(ids)
    monkeypatch.setattr(module, "_host_reads_are_free", lambda tensor: False, raising=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("host read of the token ids")

    with torch.no_grad(), monkeypatch.context() as patch:
        for name in ("tolist", "item", "numpy", "cpu", "__int__"):
            patch.setattr(torch.Tensor, name, forbidden)
        out = cached(ids)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
