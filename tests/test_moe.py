"""Tests of the MoE feed-forward layer (lzero_ext/model/moe.py): identities, routing, losses, statistics."""
import contextlib
import doctest
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lzero_ext.model import moe as moe_module
from lzero_ext.model.moe import (
    GELUExpert,
    MoEFeedForward,
    SwiGLUExpert,
    expert_token_counts,
    expert_usage_per_task,
    load_balancing_loss,
    moe_statistics,
    router_z_loss,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("expert_type, dense_cls", [("swiglu", SwiGLUExpert), ("gelu", GELUExpert)])
def test_one_expert_equals_dense_ffn(expert_type, dense_cls):
    dense = dense_cls(16, hidden_dim=24).eval()
    moe = MoEFeedForward(16, num_experts=1, top_k=1, num_shared_experts=0, expert_type=expert_type,
                         hidden_dim=24).eval()
    moe.experts[0].load_state_dict(dense.state_dict())
    x = torch.randn(3, 7, 16)
    out, logits = moe(x)
    assert out.shape == x.shape and logits.shape == (21, 1)
    torch.testing.assert_close(out, dense(x), rtol=1e-6, atol=1e-6)


def test_expert_linears_are_named_for_lora():
    names = {name for name, module in MoEFeedForward(8, num_experts=2).named_modules() if isinstance(module, nn.Linear)}
    assert {"gate", "experts.0.w1", "experts.0.w2", "experts.0.w3", "shared_experts.0.fc1"} <= names
    assert MoEFeedForward(8, num_experts=2).gate.bias is None
    gelu_names = {n for n, _ in MoEFeedForward(8, num_experts=2, expert_type="gelu").named_modules()}
    assert {"experts.1.fc1", "experts.1.fc2"} <= gelu_names


@pytest.mark.parametrize("top_k", [1, 2])
def test_router_gets_gradient(top_k):
    moe = MoEFeedForward(16, num_experts=4, top_k=top_k, num_shared_experts=1)
    out, _ = moe(torch.randn(32, 16))
    out.pow(2).sum().backward()
    assert moe.gate.weight.grad is not None
    assert moe.gate.weight.grad.abs().sum() > 0


def test_training_the_gate_changes_routing():
    """Expert 1 produces the target, expert 0 its negation; every token starts on expert 0.

    Minimising the MSE should move the tokens to expert 1 (only possible if the top-1 gate
    value depends on the router logits)."""
    dim = 4
    moe = MoEFeedForward(dim, num_experts=2, top_k=1, num_shared_experts=0, hidden_dim=8)
    with torch.no_grad():
        moe.experts[0].load_state_dict(moe.experts[1].state_dict())
        moe.experts[0].w2.weight.neg_()
        moe.gate.weight.zero_()
        moe.gate.weight[0, 0] = 1.0                     # logit of expert 0 = x[:, 0] = 1 > 0
    for param in moe.experts.parameters():
        param.requires_grad_(False)
    x = torch.randn(64, dim)
    x[:, 0] = 1.0
    target = moe.experts[1](x)

    def routing():
        _, logits = moe(x)
        return logits.argmax(-1), torch.softmax(logits, -1)[:, 1].mean().item()

    start_assign, start_prob = routing()
    assert (start_assign == 0).all()
    optimizer = torch.optim.Adam(moe.gate.parameters(), lr=0.05)
    for _ in range(60):
        out, _ = moe(x)
        loss = (out - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end_assign, end_prob = routing()
    assert end_prob > start_prob + 0.3
    assert (end_assign == 1).float().mean() > 0.9


def _hand_moe(top_k: int) -> MoEFeedForward:
    """D = 2, two SwiGLU experts with identity w1/w3 and w2 = c_e * I (c = 1, 2), identity gate."""
    moe = MoEFeedForward(2, num_experts=2, top_k=top_k, num_shared_experts=0, hidden_dim=2)
    eye = torch.eye(2)
    with torch.no_grad():
        moe.gate.weight.copy_(eye)
        for scale, expert in zip((1.0, 2.0), moe.experts):
            expert.w1.weight.copy_(eye)
            expert.w3.weight.copy_(eye)
            expert.w2.weight.copy_(scale * eye)
    return moe.eval()


def _silu_times_x(v: float) -> float:
    return v / (1.0 + math.exp(-v)) * v


@pytest.mark.parametrize("top_k", [1, 2])
def test_hand_computed_two_experts(top_k):
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    # Logits are x itself. Token 0: logits (1, -2) -> expert 0 with p = sigmoid(3);
    # token 1: logits (0.5, 3) -> expert 1 with p = sigmoid(2.5). Expert e gives c_e * silu(v) * v.
    p_tok0_e0 = 1.0 / (1.0 + math.exp(-3.0))
    p_tok1_e1 = 1.0 / (1.0 + math.exp(-2.5))
    f0 = [_silu_times_x(1.0), _silu_times_x(-2.0)]
    f1 = [_silu_times_x(0.5), _silu_times_x(3.0)]
    if top_k == 1:
        expected = [[p_tok0_e0 * 1.0 * f0[0], p_tok0_e0 * 1.0 * f0[1]],
                    [p_tok1_e1 * 2.0 * f1[0], p_tok1_e1 * 2.0 * f1[1]]]
    else:  # both experts, weights = the two softmax probs (already summing to 1)
        scale0 = p_tok0_e0 * 1.0 + (1.0 - p_tok0_e0) * 2.0
        scale1 = (1.0 - p_tok1_e1) * 1.0 + p_tok1_e1 * 2.0
        expected = [[scale0 * f0[0], scale0 * f0[1]], [scale1 * f1[0], scale1 * f1[1]]]
    out, logits = _hand_moe(top_k)(x)
    torch.testing.assert_close(logits, x)
    torch.testing.assert_close(out, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_top_k_weights_renormalised():
    moe = MoEFeedForward(8, num_experts=4, top_k=2)
    _, weights, expert_ids = moe.route(torch.randn(10, 8))
    torch.testing.assert_close(weights.sum(-1), torch.ones(10))
    assert expert_ids.shape == (10, 2) and (expert_ids[:, 0] != expert_ids[:, 1]).all()


def test_load_balancing_loss_uniform_balanced_and_collapsed():
    num_tokens, num_experts = 64, 4
    assert load_balancing_loss(torch.zeros(num_tokens, num_experts), top_k=1).item() == pytest.approx(1.0)
    # Confident but balanced routing: token t -> expert t % E.
    balanced = 30.0 * nn.functional.one_hot(torch.arange(num_tokens) % num_experts, num_experts).float()
    assert load_balancing_loss(balanced, top_k=1).item() == pytest.approx(1.0, abs=1e-4)
    collapsed = torch.zeros(num_tokens, num_experts)
    collapsed[:, 2] = 50.0
    assert load_balancing_loss(collapsed, top_k=1).item() == pytest.approx(num_experts, abs=1e-4)
    partly = torch.randn(num_tokens, num_experts)
    partly[:, 0] += 2.0
    assert load_balancing_loss(partly, top_k=1).item() > 1.2
    for top_k in (1, 2, 3):
        counts = expert_token_counts(torch.randn(num_tokens, num_experts), top_k)
        assert counts.shape == (num_experts,) and counts.sum().item() == num_tokens * top_k
    assert expert_token_counts(collapsed, top_k=1).tolist() == [0, 0, num_tokens, 0]


def test_load_balancing_loss_is_differentiable():
    logits = torch.randn(32, 4, requires_grad=True)
    load_balancing_loss(logits, top_k=2).backward()
    assert logits.grad.abs().sum() > 0


def test_router_z_loss_value():
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    expected = (math.log(2.0) ** 2 + math.log(math.exp(1.0) + math.exp(2.0)) ** 2) / 2
    assert router_z_loss(logits).item() == pytest.approx(expected, rel=1e-6)


def test_expert_usage_per_task_reflects_assignment():
    num_experts = 4
    # Task 0 (4 tokens): all on expert 0; task 1 (4 tokens): experts 1, 2, 2, 2; task 2 (2 tokens): expert 3.
    assignment = torch.tensor([0, 0, 0, 0, 1, 2, 2, 2, 3, 3])
    task_ids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    logits = 10.0 * nn.functional.one_hot(assignment, num_experts).float()
    usage = expert_usage_per_task(logits, 1, task_ids, num_tasks=3)
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.25, 0.75, 0.0], [0.0, 0.0, 0.0, 1.0]])
    torch.testing.assert_close(usage, expected)
    random_usage = expert_usage_per_task(torch.randn(50, num_experts), 2, torch.randint(0, 3, (50,)), num_tasks=3)
    torch.testing.assert_close(random_usage.sum(-1), torch.ones(3))
    with pytest.raises(ValueError, match="num_tasks"):
        expert_usage_per_task(logits, 1, task_ids, num_tasks=2)


def test_moe_statistics():
    collapsed = torch.zeros(12, 4)
    collapsed[:, 1] = 20.0
    logits = [torch.randn(12, 4), collapsed]
    stats = moe_statistics(logits, top_k=1, task_ids=torch.arange(12) % 3, num_tasks=3)
    assert stats["tokens_per_expert"].shape == (2, 4)
    assert stats["tokens_per_expert"][1].tolist() == [0, 12, 0, 0]
    assert stats["max_expert_fraction"] == pytest.approx(1.0)
    assert stats["usage_per_task"].shape == (2, 3, 4)
    expected_lb = (load_balancing_loss(logits[0], 1) + load_balancing_loss(logits[1], 1)).item() / 2
    assert stats["load_balance_loss"] == pytest.approx(expected_lb)
    assert "usage_per_task" not in moe_statistics(logits, top_k=1)


def test_shared_expert_is_the_authors_gelu_mlp_by_default():
    """Shared expert: Linear(D, 4D) -> GELU -> Linear(4D, D) with biases; routed experts stay SwiGLU."""
    dim = 256
    moe = MoEFeedForward(dim, num_experts=2)
    shared = moe.shared_experts[0]
    assert isinstance(shared, GELUExpert) and all(isinstance(e, SwiGLUExpert) for e in moe.experts)
    assert shared.fc1.weight.shape == (4 * dim, dim) and shared.fc2.weight.shape == (dim, 4 * dim)
    assert shared.fc1.bias.shape == (4 * dim,) and shared.fc2.bias.shape == (dim,)
    x = torch.randn(5, dim)
    torch.testing.assert_close(shared(x), shared.fc2(F.gelu(shared.fc1(x))))
    swiglu = MoEFeedForward(dim, num_experts=2, shared_expert_type="swiglu")
    assert isinstance(swiglu.shared_experts[0], SwiGLUExpert)
    count = lambda m: sum(p.numel() for p in m.shared_experts.parameters())  # noqa: E731
    assert count(swiglu) - count(moe) == 3 * dim * 4 * dim - (2 * dim * 4 * dim + 4 * dim + dim) == 260_864
    with pytest.raises(ValueError, match="shared_expert_type"):
        MoEFeedForward(8, shared_expert_type="relu")


def test_shared_expert_is_added():
    with_shared = MoEFeedForward(16, num_experts=4, top_k=2, num_shared_experts=1).eval()
    without_shared = MoEFeedForward(16, num_experts=4, top_k=2, num_shared_experts=0).eval()
    missing = without_shared.load_state_dict(with_shared.state_dict(), strict=False)
    assert all(key.startswith("shared_experts.") for key in missing.unexpected_keys)
    x = torch.randn(2, 5, 16)
    difference = with_shared(x)[0] - without_shared(x)[0]
    torch.testing.assert_close(difference, with_shared.shared_experts[0](x), rtol=1e-5, atol=1e-5)


def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"top_k.*num_experts=2.*top_k=3"):
        MoEFeedForward(8, num_experts=2, top_k=3)
    with pytest.raises(ValueError, match=r"top_k.*top_k=0"):
        MoEFeedForward(8, num_experts=2, top_k=0)
    with pytest.raises(ValueError, match=r"unknown expert_type 'relu'.*gelu.*swiglu"):
        MoEFeedForward(8, expert_type="relu")
    with pytest.raises(ValueError, match="num_shared_experts"):
        MoEFeedForward(8, num_shared_experts=-1)
    with pytest.raises(ValueError, match="num_experts"):
        MoEFeedForward(8, num_experts=0)


def test_docstring_examples():
    result = doctest.testmod(moe_module)
    assert result.attempted > 0 and result.failed == 0


def test_benchmark_entry_point_smoke(capsys):
    from lzero_ext.bench.__main__ import BENCHMARKS, main

    assert BENCHMARKS["moe"] == "lzero_ext.bench.moe"
    assert main(["--help"]) == 0
    assert "moe" in capsys.readouterr().out
    assert main(["no-such-bench"]) == 2
    assert main(["moe", "--dim", "8", "--tokens", "32", "--warmup", "0", "--repeats", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "MoE/dense" in out and "target" in out


@pytest.mark.parametrize("expert_type", sorted(moe_module.EXPERT_TYPES))
@pytest.mark.parametrize("num_tokens", [1, 2, 5, moe_module.FEW_TOKENS])
def test_few_token_inference_path_matches_sorted_dispatch(expert_type, num_tokens):
    """The eval/no-grad lean path (one expert call per token) must give the training path's output."""
    moe = MoEFeedForward(16, num_experts=4, top_k=1, num_shared_experts=1, expert_type=expert_type).eval()
    x = torch.randn(num_tokens, 16) * 3
    with torch.no_grad():
        lean, lean_logits = moe(x)
    reference, _ = moe(x)  # autograd on: the sorted dispatch
    torch.testing.assert_close(lean, reference.detach(), rtol=1e-5, atol=1e-6)
    assert lean_logits.shape == (num_tokens, 4)


def test_few_token_path_is_taken_and_covers_mixed_and_shared_routing(monkeypatch):
    moe = MoEFeedForward(8, num_experts=2, top_k=1, num_shared_experts=1).eval()
    with torch.no_grad():
        moe.gate.weight.copy_(torch.tensor([[1.0] + [0.0] * 7, [-1.0] + [0.0] * 7]))
    sorted_calls = []
    original = MoEFeedForward._sorted_dispatch
    monkeypatch.setattr(MoEFeedForward, "_sorted_dispatch",
                        lambda self, *a: sorted_calls.append(1) or original(self, *a))
    same = torch.tensor([[1.0] + [0.5] * 7, [2.0] + [0.1] * 7])    # both tokens -> expert 0
    mixed = torch.tensor([[1.0] + [0.5] * 7, [-2.0] + [0.1] * 7])  # one token per expert
    for x in (same, mixed):
        with torch.no_grad():
            lean, _ = moe(x)
        assert not sorted_calls
        torch.testing.assert_close(lean, moe(x)[0].detach(), rtol=1e-5, atol=1e-6)
        sorted_calls.clear()


def test_few_token_path_respects_hooks_and_wrapped_linears():
    """Forward hooks (the dormant-neuron probe) and LoRA wrappers must still run in eval/no-grad."""
    moe = MoEFeedForward(8, num_experts=2, top_k=1, num_shared_experts=1).eval()
    seen = []
    handles = [linear.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].shape[0]))
               for linear in [*(expert.w2 for expert in moe.experts), moe.shared_experts[0].fc2]]
    with torch.no_grad():
        moe(torch.randn(2, 8))
    assert sum(seen) == 4  # 2 tokens through the shared expert + 2 through routed experts
    for handle in handles:
        handle.remove()

    class Doubling(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    expert = moe.experts[0]
    doubled = Doubling(expert.w2.in_features, 8, bias=False)
    doubled.weight = nn.Parameter(expert.w2.weight.detach().clone())
    x = torch.randn(2, 8)
    with torch.no_grad():
        before = expert.inference_forward(x)
        expert.w2 = doubled
        after = expert.inference_forward(x)
    torch.testing.assert_close(after, 2 * before)


# ------------------------------------------------------------------ no host reads in the forward
HOST_READS = ("tolist", "item", "numpy", "nonzero", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def forbid_host_reads(monkeypatch):
    """Every Tensor method that copies a value to the host (a device sync on a GPU) raises inside the block."""
    def forbidden(name):
        def read(self, *args, **kwargs):
            raise AssertionError(f"host read in the MoE forward: Tensor.{name}")
        return read

    with monkeypatch.context() as patch:
        for name in HOST_READS:
            patch.setattr(torch.Tensor, name, forbidden(name))
        patch.setattr(torch, "nonzero", forbidden("torch.nonzero"))
        yield


def _reference(moe, x):
    """Token by token through the expert modules: shared experts + gate-weighted chosen experts."""
    flat = x.reshape(-1, moe.embed_dim)
    _, weights, ids = moe.route(flat)
    rows = []
    for token, token_weights, token_ids in zip(flat, weights, ids):
        row = sum(shared(token[None]) for shared in moe.shared_experts)
        for w, e in zip(token_weights.tolist(), token_ids.tolist()):
            row = row + w * moe.experts[e](token[None])
        rows.append(row)
    return torch.cat(rows).reshape(x.shape)


@pytest.mark.parametrize("expert_type", sorted(moe_module.EXPERT_TYPES))
@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("num_tokens", [1, 8, 40, 100])  # 100: above SYNC_FREE_TOKENS
def test_eval_forward_reads_nothing_on_the_host(monkeypatch, expert_type, top_k, num_tokens):
    """MCTS-sized calls (dense path) and larger no-grad batches (grouped matmuls) never read a tensor's value."""
    moe = MoEFeedForward(16, num_experts=4, top_k=top_k, num_shared_experts=1, expert_type=expert_type).eval()
    x = torch.randn(num_tokens, 16) * 3
    with torch.no_grad(), forbid_host_reads(monkeypatch):
        out, logits = moe(x)
    with torch.no_grad():
        torch.testing.assert_close(out, _reference(moe, x), rtol=1e-5, atol=1e-5)
    assert logits.shape == (num_tokens, 4)


@pytest.mark.parametrize("expert_type", sorted(moe_module.EXPERT_TYPES))
@pytest.mark.parametrize("top_k", [1, 2])
def test_train_forward_and_backward_read_nothing_on_the_host(monkeypatch, expert_type, top_k):
    """The learn step's path (grouped matmuls with on-device offsets) gives the module calls' output and gradients."""
    moe = MoEFeedForward(16, num_experts=4, top_k=top_k, num_shared_experts=1, expert_type=expert_type).train()
    x = torch.randn(3, 30, 16)
    with forbid_host_reads(monkeypatch):
        out, _ = moe(x)
        out.pow(2).sum().backward()
    grads = {name: p.grad.clone() for name, p in moe.named_parameters()}
    moe.zero_grad(set_to_none=True)
    monkeypatch.setattr(moe_module, "_grouped_mm", None)  # the expert-module path
    reference, _ = moe(x)
    reference.pow(2).sum().backward()
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    for name, p in moe.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_dense_path_sees_weights_changed_in_place_or_replaced():
    moe = MoEFeedForward(8, num_experts=2, top_k=1, num_shared_experts=1).eval()
    x = torch.randn(4, 8)
    with torch.no_grad():
        moe(x)                                                   # builds the stacked-weight cache
        for expert in moe.experts:
            expert.w2.weight.mul_(2.0)                           # an optimizer step: in place
        torch.testing.assert_close(moe(x)[0], _reference(moe, x), rtol=1e-5, atol=1e-6)
        for expert in moe.experts:
            replacement = nn.Linear(expert.w1.in_features, expert.w1.out_features, bias=False)
            expert.w1 = replacement                              # a module swapped in (e.g. a LoRA wrapper)
        torch.testing.assert_close(moe(x)[0], _reference(moe, x), rtol=1e-5, atol=1e-6)
    assert "_stacked_cache" not in moe.state_dict()


@pytest.mark.parametrize("expert_type", sorted(moe_module.EXPERT_TYPES))
@pytest.mark.parametrize("top_k", [1, 2])
def test_inference_fn_matches_the_training_path_below_and_above_the_dense_limit(expert_type, top_k):
    """A search's MoE function (weights looked up once) gives the sorted dispatch's output whether the tokens go
    through every expert (few tokens) or to their chosen experts only (more than the CPU's dense limit)."""
    moe = MoEFeedForward(16, num_experts=4, top_k=top_k, num_shared_experts=1, expert_type=expert_type).eval()
    limit = moe._dense_token_limit("cpu")
    fn = moe.inference_fn()
    for num_tokens in (1, limit, limit + 1, 3 * limit):
        x = torch.randn(num_tokens, 1, 16) * 3
        with torch.no_grad():
            lean = fn(x)
        reference, _ = moe(x)  # autograd on: the sorted dispatch
        assert lean.shape == x.shape
        torch.testing.assert_close(lean, reference.detach(), rtol=1e-5, atol=1e-5)


def test_inference_fn_above_the_dense_limit_calls_only_the_chosen_experts(monkeypatch):
    moe = MoEFeedForward(8, num_experts=4, top_k=1, num_shared_experts=0, hidden_dim=2 ** 14).eval()
    assert moe._dense_token_limit("cpu") < 5  # a layer too large for the dense path on this many tokens
    with torch.no_grad():
        moe.gate.weight.zero_()
        moe.gate.weight[2, 0] = 10.0                                # every token with x[0] > 0 -> expert 2
    calls = {i: [] for i in range(4)}
    original = SwiGLUExpert.inference_fn

    def counted(expert):
        index, fn = list(moe.experts).index(expert), original(expert)
        return lambda x: calls[index].append(x.shape[0]) or fn(x)
    monkeypatch.setattr(SwiGLUExpert, "inference_fn", counted)
    x = torch.rand(5, 8) + 0.1
    with torch.no_grad():
        out = moe.inference_fn()(x)
    assert calls == {0: [], 1: [], 2: [5], 3: []}
    torch.testing.assert_close(out, moe(x)[0].detach(), rtol=1e-5, atol=1e-5)
