"""The parameter report (lzero_ext/param_count.py) against a hand count of a tiny model."""
import pytest

from lzero_ext.dps import apply_staged_lora, set_dps_stage
from lzero_ext.param_count import PARTS, count_parameters, format_parameter_table, main
from lzero_ext.model.scalezero_model import ScaleZeroModel

D, HIDDEN, VIT_W, VIT_MLP, TASKS, EXPERTS, ACTIONS, TOKENS, SUPPORT = 16, 64, 8, 16, 2, 4, 3, 8, 101


def tiny_model() -> ScaleZeroModel:
    cfg = dict(num_tasks=TASKS, obs_type='image', embed_dim=D, num_heads=2, num_layers=1, env_num=1, max_blocks=4,
               max_tokens=TOKENS, context_length=4, encoder='vit',
               vit=dict(patch_size=8, width=VIT_W, depth=1, num_heads=2, mlp_dim=VIT_MLP),
               moe=dict(enabled=True, num_experts=EXPERTS, top_k=1, num_shared_experts=1))
    return ScaleZeroModel(observation_shape=(3, 16, 16), action_space_size=ACTIONS, world_model_cfg=cfg)


def linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def layer_norm(n: int) -> int:
    return 2 * n


# Hand count of tiny_model(), part by part.
VIT_LAYER = 4 * linear(VIT_W, VIT_W) + 2 * layer_norm(VIT_W) + linear(VIT_W, VIT_MLP) + linear(VIT_MLP, VIT_W)
ENCODER = (3 * 8 * 8 * VIT_W + VIT_W) + VIT_W + (4 + 1) * VIT_W + VIT_LAYER + layer_norm(VIT_W) \
    + linear(VIT_W, D) + layer_norm(D)          # patch conv, class token, positions, 1 layer, final LN, projection, latent LN
EMBEDDINGS = TOKENS * D + ACTIONS * D            # position table, action table
ATTENTION = 4 * linear(D, D)                     # Q, K, V, output projection
NORMS = 3 * layer_norm(D)                        # ln1, ln2, ln_f
ROUTER = linear(D, EXPERTS, bias=False)
ROUTED = EXPERTS * 3 * linear(D, HIDDEN, bias=False)   # SwiGLU w1, w3, w2
SHARED = linear(D, HIDDEN) + linear(HIDDEN, D)   # the GELU MLP
HEADS_PER_TASK = 2 * (linear(D, D) + linear(D, SUPPORT)) + (linear(D, D) + linear(D, ACTIONS)) \
    + (linear(D, D) + linear(D, D) + layer_norm(D))  # value, reward, policy, next latent


def test_counts_match_a_hand_count():
    counts = count_parameters(tiny_model())
    expected = dict(encoder=(ENCODER, ENCODER), embeddings=(EMBEDDINGS, EMBEDDINGS), attention=(ATTENTION, ATTENTION),
                    norms=(NORMS, NORMS), ffn=(0, 0), router=(ROUTER, ROUTER), routed_experts=(ROUTED, ROUTED / EXPERTS),
                    shared_experts=(SHARED, SHARED), heads=(TASKS * HEADS_PER_TASK, HEADS_PER_TASK), adapters=(0, 0))
    for part, (stored, active) in expected.items():
        assert (counts[part]['total'], counts[part]['active']) == (stored, pytest.approx(active)), part
    assert counts['all']['total'] == sum(p.numel() for p in tiny_model().parameters()) == sum(s for s, _ in expected.values())
    assert counts['transformer']['total'] == ATTENTION + NORMS + ROUTER + ROUTED + SHARED
    table = format_parameter_table(counts)
    assert all(part in table for part in PARTS) and f"{ROUTED / 1e6:.3f}" in table


def test_dps_adapters_count_by_stage():
    model = tiny_model()
    apply_staged_lora(model, num_stages=3, rank=2, alpha=4.0)  # 2 adapters + 3 scales per wrapped linear

    def lora(n_in: int, n_out: int, adapters: int, scales: int) -> int:
        return adapters * 2 * (n_in + n_out) + scales

    stored = 4 * lora(D, D, 2, 3) + EXPERTS * (2 * lora(D, HIDDEN, 2, 3) + lora(HIDDEN, D, 2, 3))
    assert count_parameters(model)['adapters'] == dict(total=stored, active=0.0)  # stage 0: base layers only
    set_dps_stage(model, 1)  # adapter 1 and scales a_0, a_1; a token runs 1 of the 4 experts
    active = 4 * lora(D, D, 1, 2) + EXPERTS * (2 * lora(D, HIDDEN, 1, 2) + lora(HIDDEN, D, 1, 2)) / EXPERTS
    counts = count_parameters(model)
    assert counts['adapters']['total'] == stored and counts['adapters']['active'] == pytest.approx(active)
    assert counts['routed_experts']['total'] == ROUTED  # base weights keep their part


def test_command_prints_the_table_of_a_preset(capsys):
    main(['--preset', 'smoke'])
    out = capsys.readouterr().out
    assert 'atari preset smoke' in out and 'routed_experts' in out and 'all' in out
    with pytest.raises(SystemExit):
        main(['--preset', 'no-such-preset'])
