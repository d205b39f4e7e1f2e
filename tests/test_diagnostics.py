"""Tests of the training diagnostics: gradient conflict, dormant neurons, latent norm, expert usage, summary."""
import copy
import json
import math
from typing import Any, Dict

import pytest
import torch
from ding.utils import deep_merge_dicts
from torch import nn

from lzero_ext.diagnostics import (
    DormantNeuronProbe, dormant_ratio, expert_usage_log, expert_usage_metrics, ffn_hidden_modules,
    gradient_conflict, latent_state_norm, shared_backbone_parameters, summarize_diagnostics,
)
from lzero_ext.model.moe import MoEFeedForward
from lzero_ext.model.scalezero_model import ScaleZeroModel

B, T, SUPPORT = 2, 4, 101


# ---------------------------------------------------------------- small world model (as in test_world_model.py)
def small_model(moe: bool) -> ScaleZeroModel:
    cfg = dict(num_tasks=2, obs_type='vector', observation_shape_list=[4, 6], embed_dim=32, num_heads=2,
               num_layers=2, env_num=B, max_blocks=5, max_tokens=10, context_length=10, num_unroll_steps=T,
               num_simulations=4, embed_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0,
               moe=dict(enabled=moe, num_experts=4, top_k=1))
    model = ScaleZeroModel(observation_shape=4, action_space_size=3, world_model_cfg=deep_merge_dicts(cfg, {}))
    with torch.no_grad():  # lightzero zero-inits the last head layers; random weights give non-trivial gradients
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.2)
    model.world_model.precompute_pos_emb_diff_kv()
    return model.train()


def loss_batch(obs_dim: int, seed: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    one_hot = torch.zeros(B, T, SUPPORT)
    one_hot[..., SUPPORT // 2] = 1.0
    return dict(observations=torch.randn(B, T, obs_dim, generator=g), actions=torch.randint(0, 3, (B, T), generator=g),
                timestep=torch.arange(T).repeat(B, 1), rewards=one_hot.clone(),
                mask_padding=torch.ones(B, T, dtype=torch.bool), ends=torch.zeros(B, T, dtype=torch.long),
                target_value=one_hot.clone(), target_policy=torch.softmax(torch.randn(B, T, 3, generator=g), dim=-1))


def task_losses(model: ScaleZeroModel) -> Dict[int, Any]:
    """compute_loss of task 0 (obs dim 4) and task 1 (obs dim 6), as _forward_learn calls it."""
    wm, target = model.world_model, copy.deepcopy(model.world_model.tokenizer)
    return {t: wm.compute_loss(loss_batch(d, seed=t), target, None, task_id=t) for t, d in enumerate((4, 6))}


# ---------------------------------------------------------------- gradient conflict
def _linear_losses(coefs: Dict[int, list]):
    """Loss_t = <c_t, w> on one shared w: gradient of task t is exactly c_t."""
    w = nn.Parameter(torch.randn(len(next(iter(coefs.values())))))
    return w, {t: (torch.tensor(c) * w).sum() for t, c in coefs.items()}


def test_identical_gradients_give_cosine_one_and_no_conflict():
    w, losses = _linear_losses({0: [1.0, -2.0, 3.0], 1: [2.0, -4.0, 6.0]})  # same direction, other scale
    res = gradient_conflict(losses, [w])
    torch.testing.assert_close(res.matrix, torch.ones(2, 2, dtype=torch.float64))
    assert res.mean_cosine == pytest.approx(1.0) and res.negative_fraction == 0.0
    assert res.per_task_grad_norm[1] == pytest.approx(2 * math.sqrt(14))


def test_opposite_gradients_give_minus_one_and_full_conflict():
    w, losses = _linear_losses({0: [1.0, 2.0], 1: [-3.0, -6.0]})
    res = gradient_conflict(losses, [w])
    assert res.matrix[0, 1] == pytest.approx(-1.0) and res.mean_cosine == pytest.approx(-1.0)
    assert res.negative_fraction == 1.0


def test_orthogonal_gradients_give_zero_and_zero_is_not_a_conflict():
    w, losses = _linear_losses({3: [1.0, 0.0], 5: [0.0, -2.0]})
    res = gradient_conflict(losses, [w])
    assert res.task_ids == [3, 5]
    assert res.mean_cosine == pytest.approx(0.0, abs=1e-12) and res.negative_fraction == 0.0


def test_three_tasks_over_two_params_with_an_unused_param_give_the_exact_matrix():
    a, b = nn.Parameter(torch.tensor(0.5)), nn.Parameter(torch.tensor(-1.0))
    # gradients (on [a, b]): task 0 (1, 0) (b unused -> zeros), task 1 (1, 1), task 2 (0, -2) (a unused)
    losses = {0: a * 1.0, 1: a + b, 2: -2.0 * b}
    res = gradient_conflict(losses, [a, b])
    r = 1 / math.sqrt(2)
    expected = torch.tensor([[1.0, r, 0.0], [r, 1.0, -r], [0.0, -r, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(res.matrix, expected)
    assert res.mean_cosine == pytest.approx(0.0, abs=1e-12)
    assert res.negative_fraction == pytest.approx(1 / 3)
    assert res.per_task_grad_norm == pytest.approx({0: 1.0, 1: math.sqrt(2), 2: 2.0})
    log = res.as_log()
    assert log["diag/grad_neg_frac"] == pytest.approx(1 / 3) and log["diag/grad_norm/task2"] == pytest.approx(2.0)


def test_zero_gradient_and_single_task_are_nan_not_zero():
    w, losses = _linear_losses({0: [1.0, 0.0], 1: [-1.0, 1.0], 2: [0.0, 0.0]})
    losses[3] = torch.tensor(1.0)  # a loss without graph (no data reaching the backbone)
    res = gradient_conflict(losses, [w])
    assert torch.isnan(res.matrix[2]).all() and torch.isnan(res.matrix[:, 3]).all()
    assert res.matrix[0, 1] == pytest.approx(-1 / math.sqrt(2))
    assert res.mean_cosine == pytest.approx(-1 / math.sqrt(2)) and res.negative_fraction == 1.0  # one valid pair
    assert res.per_task_grad_norm[2] == 0.0 and res.per_task_grad_norm[3] == 0.0
    single = gradient_conflict({0: losses[0]}, [w])
    assert single.matrix.tolist() == [[1.0]]
    assert math.isnan(single.mean_cosine) and math.isnan(single.negative_fraction)


def test_grad_is_untouched_and_backward_still_works_afterwards():
    lin = nn.Linear(3, 2)
    sentinel = torch.full_like(lin.weight, 7.0)
    lin.weight.grad = sentinel.clone()
    x = torch.randn(5, 3)
    out = lin(x)
    losses = {0: out[:, 0].pow(2).mean(), 1: out[:, 1].sum()}
    gradient_conflict(losses, lin.parameters())
    assert torch.equal(lin.weight.grad, sentinel) and lin.bias.grad is None
    (losses[0] + losses[1]).backward()  # graph retained
    assert lin.bias.grad is not None


def test_world_model_learn_step_with_diagnostics_matches_one_without():
    """The lead's integration: probe around the task losses, conflict on the backbone, then backward."""
    model = small_model(moe=True)
    params = shared_backbone_parameters(model)
    transformer_params = {id(p) for p in model.world_model.transformer.parameters()}
    assert params and all(id(p) in transformer_params for p in params)
    assert len(params) < len(list(model.parameters()))  # heads / encoders excluded

    reference = small_model(moe=True)
    reference.load_state_dict(model.state_dict())
    ref_losses = task_losses(reference)
    sum(l.loss_total for l in ref_losses.values()).backward()

    with DormantNeuronProbe.for_transformer(model) as probe:
        losses = task_losses(model)
    res = gradient_conflict({t: l.loss_total for t, l in losses.items()}, params)
    assert all(p.grad is None for p in model.parameters())
    assert res.matrix.shape == (2, 2) and torch.isfinite(res.matrix).all()
    assert -1.0 <= res.mean_cosine <= 1.0 and res.per_task_grad_norm[0] > 0 and res.per_task_grad_norm[1] > 0
    assert 0.0 <= probe.result().overall <= 1.0

    sum(l.loss_total for l in losses.values()).backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, msg=name)


# ---------------------------------------------------------------- dormant neurons
def test_dead_relu_layer_is_fully_dormant():
    layer = nn.Sequential(nn.Linear(3, 8), nn.ReLU())
    with torch.no_grad():
        layer[0].weight.zero_()
        layer[0].bias.fill_(-1.0)  # every pre-activation is -1
    out = layer(torch.randn(10, 3))
    assert dormant_ratio(out) == 1.0
    with DormantNeuronProbe({"relu": layer[1]}, capture="output") as probe:
        layer(torch.randn(4, 3))
    assert probe.result().overall == 1.0 and probe.result().per_layer == {"relu": 1.0}


def test_equal_activations_give_zero_and_a_known_mix_the_exact_fraction():
    assert dormant_ratio(torch.full((4, 5, 16), -0.3)) == 0.0
    acts = torch.ones(6, 8)
    acts[:, :3] = 0.0  # 3 of 8 neurons silent
    assert dormant_ratio(acts) == 3 / 8
    # per-neuron mean |a| = [x, 1, 1, 1]: score 4x / (x + 3) is 0.013 (dormant) for x = 0.01, 0.040 (not) for x = 0.03
    signs = torch.tensor([[1.0], [-1.0]])  # |a| is averaged, so signs must not cancel
    assert dormant_ratio(signs * torch.tensor([0.01, 1.0, 1.0, 1.0])) == 0.25
    assert dormant_ratio(signs * torch.tensor([0.03, 1.0, 1.0, 1.0])) == 0.0
    assert dormant_ratio(signs * torch.tensor([0.03, 1.0, 1.0, 1.0]), threshold=0.05) == 0.25
    # a neuron active on one of many samples is not dormant: the mean is taken over all samples
    sparse = torch.ones(100, 2)
    sparse[1:, 0] = 0.0
    sparse[0, 0] = 100.0
    assert dormant_ratio(sparse) == 0.0


def test_probe_pools_calls_and_units_of_a_layer():
    relu_a, relu_b = nn.ReLU(), nn.ReLU()
    with DormantNeuronProbe({"L": {"a": relu_a, "b": relu_b}}, capture="output") as probe:
        relu_a(torch.tensor([[1.0, -1.0]]))   # neuron 1 of a is zero on this call ...
        relu_a(torch.tensor([[1.0, 1.0]]))    # ... but not on this one: mean |a| = [1, 0.5]
        relu_b(torch.tensor([[-1.0, 2.0, 2.0, 2.0]]))  # neuron 0 of b dead
    res = probe.result()
    assert res.per_unit == {"L/a": 0.0, "L/b": 0.25} and res.samples == {"L/a": 2, "L/b": 1}
    assert res.per_layer["L"] == pytest.approx(1 / 6) and res.overall == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="capture"):
        DormantNeuronProbe({"L": relu_a}, capture="weights")


@pytest.mark.parametrize("moe", [False, True])
def test_probe_on_world_model_reports_every_block_and_removes_its_hooks(moe):
    model = small_model(moe=moe)
    hooked = [m for units in ffn_hidden_modules(model).values() for m in units.values()]
    assert len(hooked) == (2 * 5 if moe else 2)  # per block: 4 routed + 1 shared expert, or the dense MLP
    assert all(isinstance(m, nn.Linear) and m.in_features == 4 * 32 for m in hooked)  # input = hidden activation
    with torch.no_grad():
        plain = task_losses(model)
        with DormantNeuronProbe.for_transformer(model.world_model) as probe:
            assert all(len(m._forward_pre_hooks) == 1 for m in hooked)
            probed = task_losses(model)
    assert all(len(m._forward_pre_hooks) == 0 for m in model.modules())
    for t in plain:  # hooks only read activations (hooked MoE experts run as module calls: equal up to rounding)
        assert float(probed[t].loss_total) == pytest.approx(float(plain[t].loss_total), rel=1e-6)

    res = probe.result()
    assert set(res.per_layer) == {"block0", "block1"}
    assert all(0.0 <= r <= 1.0 for r in res.per_layer.values()) and 0.0 <= res.overall <= 1.0
    tokens = 2 * B * T * 2  # two tasks, (obs, action) tokens per step
    if moe:
        assert all(isinstance(b.mlp, MoEFeedForward) for b in model.world_model.transformer.blocks)
        for block in ("block0", "block1"):  # each token goes to one routed expert and the shared one
            assert sum(res.samples[f"{block}/experts.{e}"] for e in range(4)) == tokens
            assert res.samples[f"{block}/shared_experts.0"] == tokens
        routed = [r for name, r in res.per_unit.items() if res.samples[name] > 0]
        assert all(0.0 <= r <= 1.0 for r in routed)
    else:
        assert res.samples == {"block0/mlp": tokens, "block1/mlp": tokens}
    assert set(res.as_log()) == {"diag/dormant_ratio", "diag/dormant_ratio/block0", "diag/dormant_ratio/block1"}


# ---------------------------------------------------------------- latent norm, expert usage
def test_latent_state_norm_is_mean_row_norm():
    assert latent_state_norm(torch.tensor([[[3.0, 4.0]], [[0.0, 0.0]]])) == 2.5
    z = nn.LayerNorm(16, elementwise_affine=False)(torch.randn(8, 16))
    assert latent_state_norm(z) == pytest.approx(4.0, rel=1e-3)


def test_expert_usage_metrics_from_known_usage_and_from_router_stats():
    usage = torch.tensor([[[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
                          [[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])  # (L=2, T=3, E=4)
    m = expert_usage_metrics(usage)
    assert sorted(m) == [0, 1]  # task 2 routed no tokens
    assert m[0].entropy == pytest.approx((math.log(4) + math.log(2)) / 2)
    assert m[0].normalized_entropy == pytest.approx(0.75) and m[0].max_share == pytest.approx(0.375)
    assert m[1].normalized_entropy == 0.0 and m[1].max_share == 1.0
    assert expert_usage_log(m)["diag/expert_max_share/task1"] == 1.0

    model = small_model(moe=True)
    with torch.no_grad():
        stats = {t: l.router_stats for t, l in task_losses(model).items()}
    merged = {}
    for t, s in stats.items():
        merged.update(expert_usage_metrics(s["usage_per_task"]))
    assert sorted(merged) == [0, 1]
    assert all(0.0 <= u.normalized_entropy <= 1.0 and 0.25 <= u.max_share <= 1.0 for u in merged.values())


# ---------------------------------------------------------------- summary
def test_summarize_diagnostics_skips_nan_and_is_json_safe():
    history = [
        {"train_iter": 0, "diag/grad_cos_mean": 0.2, "diag/grad_neg_frac": 0.5, "diag/dormant_ratio": 0.1,
         "loss": 3.0},
        {"train_iter": 50, "diag/grad_cos_mean": float("nan"), "diag/grad_neg_frac": float("nan")},
        {"train_iter": 100, "diag/grad_cos_mean": torch.tensor(-0.4), "diag/grad_neg_frac": 1.0,
         "diag/dormant_ratio": 0.3, "diag/latent_norm": float("inf")},
    ]
    s = summarize_diagnostics(history)
    assert s["records"] == 3 and s["train_iter"] == {"first": 0, "last": 100}
    assert s["grad_cos_mean"] == pytest.approx({"mean": -0.1, "first": 0.2, "last": -0.4, "n": 2})
    assert s["grad_neg_frac"]["mean"] == pytest.approx(0.75)
    assert s["dormant_ratio"]["last"] == 0.3 and s["dormant_ratio"]["n"] == 2
    assert s["latent_norm"] == {"mean": None, "first": None, "last": None, "n": 0}
    assert "loss" not in s
    json.dumps(s, allow_nan=False)
    assert summarize_diagnostics([]) == {"records": 0}
