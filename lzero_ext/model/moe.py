"""Mixture-of-Experts feed-forward layer for the ScaleZero world model.

The FFN sublayer of every transformer block becomes ``num_experts`` routed experts plus
``num_shared_experts`` always-on experts (the ScaleZero paper). Routing is Switch style:

* a bias-free ``gate = nn.Linear(D, E)`` gives router logits (no task id in the gate);
* routed experts are SwiGLU (bias-free); the shared expert is, as the authors built it, a GELU
  MLP ``Linear(D, 4D) -> GELU -> Linear(4D, D)`` with biases (``shared_expert_type``; SwiGLU is
  an option);
* softmax over **all** experts in float32, *then* top-k, so the gate value of the chosen expert
  depends on the logits and the router is trained even at k = 1 (docs/architecture.md,
  "Pitfalls of the authors' code avoided"); for k > 1 the k weights are renormalised to sum to 1;
* tokens are sorted by expert once, each expert runs on one contiguous slice, and results are
  combined with ``index_add_``;
* in eval mode without autograd and for at most ``SYNC_FREE_TOKENS`` tokens (MCTS collection and
  evaluation: 1-2 tokens per env per call) every routed expert runs on every token as two batched
  matmuls over the experts' stacked weights, and the routing weights (zero for experts a token did not
  choose) combine them. Nothing in it reads a tensor on the host (no ``.tolist()``, ``.item()``, or
  data-dependent shapes), so a GPU search loop never waits for the device here and ``torch.compile``
  traces it without a graph break. The stacked weights are cached and rebuilt when a weight changes
  (its version counter or identity; see :meth:`MoEFeedForward._stacked_weights`). On the CPU, where a
  host read is no device sync, a layer too large for that (``CPU_DENSE_MACS``) calls the chosen
  experts one token at a time instead (up to ``FEW_TOKENS`` tokens).

The sorted dispatch (training, large no-grad batches such as reanalysis) runs each expert role as one
``F.grouped_mm`` over the sorted tokens, with the per-expert offsets computed on the device: no host
read either. Where ``grouped_mm`` cannot serve it calls each expert module on its slice, which needs the
per-expert counts on the host (one read per layer per learn step, never in the search loop): an expert
linear with hooks (the dormant-neuron probe, at the diagnostics cadence), LoRA adapters in training, expert
dropout, rows not 16-byte aligned, or a device and dtype the kernel rejects (torch documents bf16 as the
CUDA kernel's input type, so an fp32 learn step on a GPU most likely takes the module calls, and under
``torch.compile`` only bf16 is traced through ``grouped_mm``).

The layer returns its router logits and holds no loss weights: the world model collects the
logits of every MoE layer and adds ``load_balancing_loss`` / ``router_z_loss`` itself (pitfall 2:
without them and without ``moe_statistics`` experts can collapse unseen).

Expert linears are plain ``nn.Linear`` modules named ``w1``/``w2``/``w3`` (SwiGLU) or
``fc1``/``fc2`` (GELU) so a LoRA pass can wrap them by name; the router is named ``gate`` and the
always-on experts live in ``shared_experts`` so the same pass can exclude them.
"""
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EXPERT_TYPES: FrozenSet[str] = frozenset({"swiglu", "gelu"})
# Eval/no-grad calls with at most this many tokens take the sync-free dense path (MCTS: 1-2 tokens per env).
SYNC_FREE_TOKENS = 64
# On the CPU, where reading a tensor is no device sync, the dense path runs while it costs at most this many
# multiply-adds (E * N * per-token expert cost: ~0.1 ms of one core); larger layers keep sparse expert calls. Measured
# on the MinAtar cpu preset's layer (4 SwiGLU experts, D=64): per-expert calls win from about 10 tokens on.
CPU_DENSE_MACS = 2 ** 21
# Top-1 eval/no-grad calls on the CPU with at most this many tokens, too large for the dense path, call the
# chosen experts one token at a time.
FEW_TOKENS = 8


class SwiGLUExpert(nn.Module):
    """SwiGLU feed-forward expert ``w2(silu(w1 x) * w3 x)``, bias-free, hidden ``4 * D`` by default.

    Example:
        >>> expert = SwiGLUExpert(16)
        >>> expert(torch.randn(3, 5, 16)).shape
        torch.Size([3, 5, 16])
        >>> expert.w1.weight.shape
        torch.Size([64, 16])
    """

    def __init__(self, embed_dim: int, *, hidden_dim: Optional[int] = None, dropout: float = 0.0) -> None:
        super().__init__()
        hidden_dim = 4 * embed_dim if hidden_dim is None else hidden_dim
        self.w1 = nn.Linear(embed_dim, hidden_dim, bias=False)  # gate branch
        self.w3 = nn.Linear(embed_dim, hidden_dim, bias=False)  # value branch
        self.w2 = nn.Linear(hidden_dim, embed_dim, bias=False)  # output projection
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))

    def inference_forward(self, x: Tensor) -> Tensor:
        """``forward`` in eval mode without module dispatch; falls back to ``self(x)`` (see :func:`inference_weight`)."""
        return self.inference_fn()(x)

    def inference_fn(self) -> Callable[[Tensor], Tensor]:
        """:meth:`inference_forward` with the weights looked up now (for a search's many calls)."""
        w1, w3, w2 = inference_weight(self.w1), inference_weight(self.w3), inference_weight(self.w2)
        if w1 is None or w3 is None or w2 is None or not _has_no_hooks(self):
            return self
        return lambda x: F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)


class GELUExpert(nn.Module):
    """Linear-GELU-Linear feed-forward expert (with biases, as the dense UniZero MLP).

    Example:
        >>> expert = GELUExpert(16, hidden_dim=32)
        >>> expert(torch.randn(4, 16)).shape
        torch.Size([4, 16])
    """

    def __init__(self, embed_dim: int, *, hidden_dim: Optional[int] = None, dropout: float = 0.0) -> None:
        super().__init__()
        hidden_dim = 4 * embed_dim if hidden_dim is None else hidden_dim
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(F.gelu(self.fc1(x))))

    def inference_forward(self, x: Tensor) -> Tensor:
        """``forward`` in eval mode without module dispatch; falls back to ``self(x)`` (see :func:`inference_weight`)."""
        return self.inference_fn()(x)

    def inference_fn(self) -> Callable[[Tensor], Tensor]:
        """:meth:`inference_forward` with the weights looked up now (for a search's many calls)."""
        w1, w2 = inference_weight(self.fc1), inference_weight(self.fc2)
        if w1 is None or w2 is None or not _has_no_hooks(self):
            return self
        b1, b2 = self.fc1.bias, self.fc2.bias
        return lambda x: F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)


def _has_no_hooks(module: nn.Module) -> bool:
    return not (module._forward_hooks or module._forward_pre_hooks)


def inference_weight(linear: nn.Module) -> Optional[Tensor]:
    """The weight ``W`` with ``F.linear(x, W, linear.bias) == linear(x)`` in eval mode, or None when the
    module must be called: a hooked linear (the dormant-neuron probe) or a subclass without an
    ``inference_weight()`` answer (e.g. a LoRA layer in train mode)."""
    if linear._forward_hooks or linear._forward_pre_hooks:
        return None
    if type(linear) is nn.Linear:
        return linear._parameters["weight"]
    inference_weight = getattr(linear, "inference_weight", None)  # e.g. StagedLoRALinear (lzero_ext.dps)
    return inference_weight() if callable(inference_weight) else None


_EXPERT_CLASSES = {"swiglu": SwiGLUExpert, "gelu": GELUExpert}
_EXPERT_ROLES = {"swiglu": ("w1", "w3", "w2"), "gelu": ("fc1", "fc2")}  # the linears of each expert type
_grouped_mm = getattr(F, "grouped_mm", None)  # torch >= 2.9: one matmul over jagged per-expert slices
# (device type, dtype, D, H) whose grouped_mm call raised (e.g. a GPU kernel that takes bf16 only): module calls there
_GROUPED_MM_UNSUPPORTED: set = set()


def make_expert(expert_type: str, embed_dim: int, *, hidden_dim: Optional[int] = None,
                dropout: float = 0.0) -> nn.Module:
    """Build one expert of ``expert_type`` (one of ``EXPERT_TYPES``)."""
    if expert_type not in EXPERT_TYPES:
        raise ValueError(f"unknown expert_type {expert_type!r}; expected one of {sorted(EXPERT_TYPES)}")
    return _EXPERT_CLASSES[expert_type](embed_dim, hidden_dim=hidden_dim, dropout=dropout)


class MoEFeedForward(nn.Module):
    """Routed experts plus always-on shared experts; returns ``(output, router_logits)``.

    Arguments:
        embed_dim: model width ``D``.
        num_experts: number of routed experts ``E``.
        top_k: experts per token, ``1 <= top_k <= num_experts``.
        num_shared_experts: always-on experts whose output is added to every token (0 allowed).
        expert_type: ``"swiglu"`` or ``"gelu"`` (see ``EXPERT_TYPES``), the routed experts' type.
        shared_expert_type: the always-on experts' type, ``"gelu"`` (the authors' D->4D->D MLP with
            biases) or ``"swiglu"``.
        hidden_dim: expert hidden width, default ``4 * embed_dim``.
        dropout: dropout on each expert's output.

    ``forward(x)`` takes ``x`` of shape ``(..., D)`` and returns the output, same shape, and the
    raw router logits ``(N, E)`` with ``N = x.numel() // D`` (in ``x``'s dtype), for
    ``load_balancing_loss``, ``router_z_loss`` and ``moe_statistics``.

    Example:
        >>> moe = MoEFeedForward(32, num_experts=4, top_k=1, num_shared_experts=1)
        >>> out, logits = moe(torch.randn(2, 10, 32))
        >>> out.shape, logits.shape
        (torch.Size([2, 10, 32]), torch.Size([20, 4]))
        >>> aux = load_balancing_loss(logits, top_k=1) + 1e-3 * router_z_loss(logits)
        >>> int(expert_token_counts(logits, top_k=1).sum())
        20
    """

    def __init__(self, embed_dim: int, *, num_experts: int = 8, top_k: int = 1, num_shared_experts: int = 1,
                 expert_type: str = "swiglu", shared_expert_type: str = "gelu", hidden_dim: Optional[int] = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must satisfy 1 <= top_k <= num_experts={num_experts}, got top_k={top_k}")
        if num_shared_experts < 0:
            raise ValueError(f"num_shared_experts must be >= 0, got {num_shared_experts}")
        for key, value in (("expert_type", expert_type), ("shared_expert_type", shared_expert_type)):
            if value not in EXPERT_TYPES:
                raise ValueError(f"unknown {key} {value!r}; expected one of {sorted(EXPERT_TYPES)}")
        if hidden_dim is not None and hidden_dim < 1:
            raise ValueError(f"hidden_dim must be >= 1 or None (4 * embed_dim), got {hidden_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.embed_dim = embed_dim
        self.num_experts = num_experts
        self.top_k = top_k
        self.expert_type, self.shared_expert_type = expert_type, shared_expert_type
        self.gate = nn.Linear(embed_dim, num_experts, bias=False)
        self.experts = nn.ModuleList(
            make_expert(expert_type, embed_dim, hidden_dim=hidden_dim, dropout=dropout) for _ in range(num_experts))
        self.shared_experts = nn.ModuleList(
            make_expert(shared_expert_type, embed_dim, hidden_dim=hidden_dim, dropout=dropout)
            for _ in range(num_shared_experts))

    def route(self, flat: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Router for flat tokens ``(N, D)``: logits ``(N, E)``, float32 top-k weights and expert ids ``(N, k)``."""
        router_logits = self.gate(flat)                                  # (N, E)
        return (router_logits, *self._top_k(router_logits))

    def _top_k(self, router_logits: Tensor) -> Tuple[Tensor, Tensor]:
        """Float32 top-k weights and expert ids ``(N, k)`` of router logits ``(N, E)``."""
        probs = torch.softmax(router_logits.float(), dim=-1)             # (N, E) float32, over all experts
        weights, expert_ids = probs.topk(self.top_k, dim=-1)             # (N, k), (N, k)
        if self.top_k > 1:
            weights = weights / weights.sum(dim=-1, keepdim=True)        # (N, k), rows sum to 1
        return weights, expert_ids

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """``x (..., D)`` -> ``(output (..., D), router_logits (N_tokens, E))``; output includes shared experts."""
        flat = x.reshape(-1, self.embed_dim)                             # (N, D)
        router_logits, weights, expert_ids = self.route(flat)            # (N, E), (N, k), (N, k)
        num_tokens = flat.shape[0]
        inference = num_tokens > 0 and not (self.training or torch.is_grad_enabled())
        stacked = self._stacked_weights() if inference and self._dense_fits(flat) else None
        if stacked is not None:
            output = self._dense_inference(flat, weights, expert_ids, stacked)
        elif inference and self.top_k == 1 and num_tokens <= FEW_TOKENS and flat.device.type == "cpu":
            output = self._few_tokens_inference(flat, weights, expert_ids)
        else:
            output = self._sorted_dispatch(flat, weights, expert_ids)
        return output.reshape(x.shape), router_logits                    # (..., D), (N, E)

    def _shared_output(self, flat: Tensor, inference: bool) -> Tensor:
        """Sum of the always-on experts, ``(N, D)`` (zeros without shared experts)."""
        if not self.shared_experts:
            return torch.zeros_like(flat)
        outputs = [shared.inference_forward(flat) if inference else shared(flat) for shared in self.shared_experts]
        output = outputs[0]
        for extra in outputs[1:]:
            output = output + extra
        return output

    def _sorted_dispatch(self, flat: Tensor, weights: Tensor, expert_ids: Tensor,
                         experts: Optional[Sequence[Callable[[Tensor], Tensor]]] = None,
                         shared: Optional[Tensor] = None) -> Tensor:
        """Training / large-batch path: sort assignments by expert, one contiguous slice per expert. ``experts``: the
        experts' functions, each called on its slice (None: ``F.grouped_mm`` where it serves, else the modules);
        ``shared``: the shared experts' output, when already computed."""
        flat_expert_ids = expert_ids.reshape(-1)                         # (N*k,)
        order = torch.argsort(flat_expert_ids, stable=True)              # (N*k,) assignment ids, grouped by expert
        token_ids = order // self.top_k                                  # (N*k,) token of each sorted assignment
        sorted_weights = weights.reshape(-1)[order].unsqueeze(-1)        # (N*k, 1)
        sorted_tokens = flat.index_select(0, token_ids)                  # (N*k, D)
        routed = None if experts is not None else self._grouped_experts(sorted_tokens, flat_expert_ids, order)
        if routed is None:
            routed = self._expert_slices(sorted_tokens, flat_expert_ids, experts)
        routed = routed * sorted_weights.to(routed.dtype)                # (N*k, D), gate-weighted
        output = self._shared_output(flat, inference=not (self.training or torch.is_grad_enabled())) \
            if shared is None else shared                                # (N, D)
        output.index_add_(0, token_ids, routed.to(output.dtype))         # (N, D), adds the k experts of each token
        return output

    def _grouped_experts(self, sorted_tokens: Tensor, flat_expert_ids: Tensor, order: Tensor) -> Optional[Tensor]:
        """Every expert on its slice of the expert-sorted tokens ``(N*k, D)`` as ``F.grouped_mm`` calls whose
        offsets stay on the device, ``(N*k, D)``; None when an expert must be called as a module (see the
        module docstring) or the kernel rejects this device and dtype."""
        tokens = sorted_tokens
        device_type = tokens.device.type
        if torch.is_autocast_enabled(device_type):  # as F.linear would compute under autocast
            tokens = tokens.to(torch.get_autocast_dtype(device_type))
        hidden_dim = self.experts[0]._modules[_EXPERT_ROLES[self.expert_type][0]].out_features
        key = (device_type, tokens.dtype, self.embed_dim, hidden_dim)
        if _grouped_mm is None or key in _GROUPED_MM_UNSUPPORTED or (self.training and self._has_dropout()):
            return None
        compiling = torch.compiler.is_compiling()
        if compiling and tokens.dtype != torch.bfloat16:
            return None  # the kernel's traced (meta) form takes bf16 only: --compile with --amp bf16
        if (self.embed_dim * tokens.element_size()) % 16 or (hidden_dim * tokens.element_size()) % 16:
            return None  # the kernel wants 16-byte aligned rows
        if torch.is_grad_enabled() or compiling:
            sources = self._expert_sources()
            stacked = None if sources is None else self._stack(sources)  # autograd reaches the weights
        else:
            stacked = self._stacked_weights()                            # cached: large no-grad batches
        if stacked is None:
            return None
        stacked = [w.to(tokens.dtype) for w in stacked]
        counts = torch.zeros(self.num_experts, dtype=torch.int64, device=flat_expert_ids.device)
        counts.scatter_add_(0, flat_expert_ids, torch.ones_like(flat_expert_ids))  # (E,); bincount's shape is data-dependent
        offsets = counts.cumsum(0).to(torch.int32)                       # (E,) end of each expert's slice
        if compiling:
            return self._grouped_roles(tokens, stacked, offsets, flat_expert_ids[order])
        try:
            return self._grouped_roles(tokens, stacked, offsets, flat_expert_ids[order])
        except RuntimeError:  # a device / dtype / size the grouped kernel does not take: module calls from now on
            _GROUPED_MM_UNSUPPORTED.add(key)
            return None

    def _grouped_roles(self, tokens: Tensor, stacked: List[Tensor], offsets: Tensor, sorted_ids: Tensor) -> Tensor:
        """The experts' matmuls over expert-sorted rows ``tokens (N*k, D)``, slices ending at ``offsets (E,)``,
        ``sorted_ids (N*k,)`` the expert of each row, ``stacked`` as :meth:`_stack` builds it -> ``(N*k, D)``."""
        with torch.autocast(tokens.device.type, enabled=False):  # operands already in the autocast dtype
            if self.expert_type == "swiglu":
                w13, w2 = stacked                                        # (E, D, 2H), (E, H, D)
                gate, value = _grouped_mm(tokens, w13, offs=offsets).chunk(2, dim=-1)  # (N*k, H) each
                return _grouped_mm(F.silu(gate) * value, w2, offs=offsets)  # (N*k, D)
            w1, w2, b1, b2 = stacked                                     # (E, D, H), (E, H, D), (E, 1, H), (E, 1, D)
            hidden = F.gelu(_grouped_mm(tokens, w1, offs=offsets) + b1.squeeze(1).index_select(0, sorted_ids))
            return _grouped_mm(hidden, w2, offs=offsets) + b2.squeeze(1).index_select(0, sorted_ids)  # (N*k, D)

    def _has_dropout(self) -> bool:
        return any(isinstance(m, nn.Dropout) and m.p > 0 for m in self.experts.modules())

    @torch.compiler.disable  # split sizes are data: traced, every new set of counts would recompile
    def _expert_slices(self, sorted_tokens: Tensor, flat_expert_ids: Tensor,
                       experts: Optional[Sequence[Callable[[Tensor], Tensor]]] = None) -> Tensor:
        """Each expert module (or its function in ``experts``) on its contiguous slice of the sorted tokens,
        ``(N*k, D)``. Reads the per-expert counts on the host (``torch.split`` sizes); runs eagerly under
        ``torch.compile``."""
        counts = torch.bincount(flat_expert_ids, minlength=self.num_experts).tolist()  # E ints, sum N*k
        experts = self.experts if experts is None else experts

        # torch.split (not slicing) so that backward concatenates the slice grads once instead of
        # scattering each into an (N*k, D) zero tensor.
        expert_outputs = [expert(tokens)                                 # (count_e, D)
                          for expert, tokens in zip(experts, sorted_tokens.split(counts)) if tokens.shape[0]]
        if not expert_outputs:
            return sorted_tokens                                         # (0, D): no tokens at all
        return torch.cat(expert_outputs, dim=0)                          # (N*k, D), still sorted by expert

    def _dense_fits(self, flat: Tensor) -> bool:
        """Whether the sync-free dense path serves these ``(N, D)`` tokens (see :meth:`_dense_token_limit`)."""
        return flat.shape[0] <= self._dense_token_limit(flat.device.type)

    def _dense_token_limit(self, device_type: str) -> int:
        """The most tokens the sync-free dense path serves: ``SYNC_FREE_TOKENS``, and on the CPU at most
        ``CPU_DENSE_MACS`` multiply-adds for all experts."""
        if device_type != "cpu":
            return SYNC_FREE_TOKENS
        first = self.experts[0]
        hidden = first.w1.out_features if isinstance(first, SwiGLUExpert) else first.fc1.out_features
        per_token = (3 if isinstance(first, SwiGLUExpert) else 2) * self.embed_dim * hidden
        return min(SYNC_FREE_TOKENS, CPU_DENSE_MACS // (self.num_experts * per_token))

    def _expert_sources(self) -> Optional[List[Tensor]]:
        """Every routed expert's inference weights (and GELU biases) in expert order, or None when an expert must
        be called as a module (hooks, or a linear without an inference weight). Runs once per MCTS model call,
        so it reads module dicts directly."""
        sources: List[Tensor] = []
        roles = _EXPERT_ROLES[self.expert_type]
        for expert in self.experts._modules.values():
            if expert._forward_hooks or expert._forward_pre_hooks:
                return None
            linears = expert._modules
            for name in roles:
                weight = inference_weight(linears[name])
                if weight is None:
                    return None
                sources.append(weight)
            if self.expert_type == "gelu":
                sources.extend((linears["fc1"].bias, linears["fc2"].bias))
        return sources

    def _stacked_weights(self) -> Optional[List[Tensor]]:
        """The experts' stacked weights without autograd (see :meth:`_stack`), or None as for
        :meth:`_expert_sources`; ``[]`` under ``torch.compile``. Cached; rebuilt when a weight is replaced or
        modified in place (its identity or version counter changes)."""
        sources = self._expert_sources()
        if sources is None:
            return None
        if torch.compiler.is_compiling():  # traced: per-expert calls in the graph, no weight copies per call
            return []
        versions = [w._version for w in sources]
        cache = self.__dict__.get("_stacked_cache")
        if cache is None or cache[1] != versions or any(a is not b for a, b in zip(cache[0], sources)):
            with torch.no_grad():
                cache = (sources, versions, [w.contiguous() for w in self._stack(sources)])
            self.__dict__["_stacked_cache"] = cache  # a plain attribute: not a parameter, buffer or state
        return cache[2]

    def _stack(self, sources: List[Tensor]) -> List[Tensor]:
        """Per-expert weights and biases (in expert order) -> stacked operands, differentiable: SwiGLU
        ``[w1|w3 (E, D, 2H), w2 (E, H, D)]``, GELU ``[fc1 (E, D, H), fc2 (E, H, D), b1 (E, 1, H), b2 (E, 1, D)]``."""
        roles = len(sources) // self.num_experts
        per_role = [torch.stack(sources[role::roles]) for role in range(roles)]  # (E, out, in) / (E, out)
        if self.expert_type == "swiglu":
            w1, w3, w2 = per_role
            return [torch.cat([w1, w3], dim=1).transpose(1, 2), w2.transpose(1, 2)]
        w1, w2, b1, b2 = per_role
        return [w1.transpose(1, 2), w2.transpose(1, 2), b1.unsqueeze(1), b2.unsqueeze(1)]

    def _dense_inference(self, flat: Tensor, weights: Tensor, expert_ids: Tensor, stacked: List[Tensor]) -> Tensor:
        """Eval / no-grad path without host reads: every expert on all N tokens (batched matmuls over the
        stacked weights), then each token's k chosen outputs, gate-weighted; the same result as ``_sorted_dispatch``."""
        return self._shared_output(flat, inference=True) + self._routed_dense(flat, weights, expert_ids, stacked)

    def _routed_dense(self, flat: Tensor, weights: Tensor, expert_ids: Tensor, stacked: List[Tensor]) -> Tensor:
        """The routed experts' part of :meth:`_dense_inference`, ``(N, D)``."""
        num_experts, num_tokens = self.num_experts, flat.shape[0]
        tokens = flat.unsqueeze(0).expand(num_experts, num_tokens, self.embed_dim)  # (E, N, D), a view
        if not stacked:  # under torch.compile: one traced call per expert
            routed = torch.stack([expert.inference_forward(flat) for expert in self.experts])  # (E, N, D)
        elif self.expert_type == "swiglu":
            w13, w2 = stacked                                            # (E, D, 2H), (E, H, D)
            gate, value = torch.bmm(tokens, w13).chunk(2, dim=-1)  # (E, N, H) each
            routed = torch.bmm(F.silu(gate) * value, w2)  # (E, N, D)
        else:
            w1, w2, b1, b2 = stacked                                     # (E, D, H), (E, H, D), (E, 1, H), (E, 1, D)
            hidden = F.gelu(torch.baddbmm(b1, tokens, w1))  # (E, N, H)
            routed = torch.baddbmm(b2, hidden, w2)       # (E, N, D)
        chosen = torch.take_along_dim(routed.transpose(0, 1), expert_ids.unsqueeze(-1), dim=1)  # (N, k, D)
        return (chosen * weights.unsqueeze(-1).to(chosen.dtype)).sum(dim=1)  # (N, D)

    def inference_fn(self) -> Callable[[Tensor], Tensor]:
        """This layer's eval / no-grad forward ``x (..., D) -> (..., D)`` (no router logits) as one function over
        the weights as they are now: the sync-free dense path with the gate, the stacked experts and the shared
        experts looked up once, for a search's many small calls. On the CPU, where reading the expert ids is no
        device sync, more tokens than the dense path takes go to their chosen experts only (sorted, each expert's
        function on its slice). Other calls the dense path does not serve (more tokens on a GPU, autograd, experts
        that must be called as modules) run :meth:`forward`."""
        def forward(x: Tensor) -> Tensor:
            return self(x)[0]
        gate = inference_weight(self.gate)
        stacked = None if self.training else self._stacked_weights()
        if not stacked or gate is None:  # module calls needed ([] under torch.compile: forward traces its own path)
            return forward
        shared = [expert.inference_fn() for expert in self.shared_experts]
        on_cpu = gate.device.type == "cpu"
        experts = [expert.inference_fn() for expert in self.experts] if on_cpu else None
        max_tokens = self._dense_token_limit(gate.device.type)
        embed_dim = self.embed_dim

        def lean(x: Tensor) -> Tensor:
            flat = x.reshape(-1, embed_dim)                              # (N, D)
            num_tokens = flat.shape[0]
            if torch.is_grad_enabled() or num_tokens == 0 or (num_tokens > max_tokens and not on_cpu):
                return forward(x)
            weights, expert_ids = self._top_k(F.linear(flat, gate))       # (N, k) each
            output = shared[0](flat) if shared else torch.zeros_like(flat)
            for extra in shared[1:]:
                output = output + extra(flat)
            if num_tokens <= max_tokens:
                output = output + self._routed_dense(flat, weights, expert_ids, stacked)
            else:  # the CPU: the chosen experts only
                output = self._sorted_dispatch(flat, weights, expert_ids, experts, shared=output)
            return output.reshape(x.shape)
        return lean

    def _few_tokens_inference(self, flat: Tensor, weights: Tensor, expert_ids: Tensor) -> Tensor:
        """CPU top-1 eval / no-grad path for at most ``FEW_TOKENS`` tokens of a layer too large for the dense
        path: one expert call per token, or one call when all tokens chose the same expert. It reads the expert
        ids on the host, which on the CPU is a memory read, not a device sync."""
        ids = expert_ids.reshape(-1).tolist()                            # N expert ids
        if ids.count(ids[0]) == len(ids):
            routed = self.experts[ids[0]].inference_forward(flat)        # (N, D)
        else:
            routed = torch.cat([self.experts[e].inference_forward(flat[i:i + 1]) for i, e in enumerate(ids)])
        return self._shared_output(flat, inference=True) + routed * weights.to(routed.dtype)


def _assignment_counts(router_logits: Tensor, top_k: int) -> Tensor:
    """``(E,)`` int64 count of top-k assignments per expert for logits ``(N, E)``."""
    num_experts = router_logits.shape[-1]
    if not 1 <= top_k <= num_experts:
        raise ValueError(f"top_k must satisfy 1 <= top_k <= num_experts={num_experts}, got top_k={top_k}")
    expert_ids = router_logits.detach().topk(top_k, dim=-1).indices     # (N, k); same order as softmax probs
    return torch.bincount(expert_ids.reshape(-1), minlength=num_experts)  # (E,)


def load_balancing_loss(router_logits: Tensor, top_k: int) -> Tensor:
    r"""Switch Transformer / GShard auxiliary load-balancing loss for one MoE layer.

    .. math::

        \mathcal{L}_{\text{balance}} = E \sum_{e=1}^{E} f_e \, P_e, \qquad
        f_e = \frac{1}{N k} \sum_{t=1}^{N} \mathbb{1}[e \in \operatorname{topk}(p_t)], \qquad
        P_e = \frac{1}{N} \sum_{t=1}^{N} p_{t,e}, \qquad p_t = \operatorname{softmax}(z_t)

    with router logits ``z`` of shape ``(N, E)``. ``f`` (fraction of assignments, not
    differentiable) sums to 1, so uniform probabilities ``P_e = 1/E`` give exactly 1.0, the value
    of balanced routing that the loss pushes toward; full collapse onto one expert at ``k = 1``
    gives ``E``. Gradient flows through ``P`` only. Computed in float32.

    Example:
        >>> float(load_balancing_loss(torch.zeros(6, 4), top_k=1))
        1.0
        >>> float(load_balancing_loss(torch.tensor([[50.0, 0.0, 0.0, 0.0]]).repeat(6, 1), top_k=1))
        4.0
    """
    num_tokens, num_experts = router_logits.shape                       # (N, E)
    probs = torch.softmax(router_logits.float(), dim=-1)                # (N, E)
    assignment_fraction = _assignment_counts(router_logits, top_k).float() / (num_tokens * top_k)  # (E,) f
    mean_prob = probs.mean(dim=0)                                       # (E,) P
    return num_experts * torch.sum(assignment_fraction * mean_prob)


def router_z_loss(router_logits: Tensor) -> Tensor:
    r"""ST-MoE router z-loss ``mean_t(logsumexp_e z_{t,e})^2``: keeps router logits small. Float32.

    Example:
        >>> round(float(router_z_loss(torch.zeros(3, 4))), 4)  # log(4)^2
        1.9218
    """
    return torch.logsumexp(router_logits.float(), dim=-1).pow(2).mean()


def expert_token_counts(router_logits: Tensor, top_k: int) -> Tensor:
    """``(E,)`` int64 number of tokens routed to each expert; sums to ``N * top_k``.

    Example:
        >>> expert_token_counts(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]]), top_k=1)
        tensor([2, 1])
    """
    return _assignment_counts(router_logits, top_k)


def expert_usage_per_task(router_logits: Tensor, top_k: int, task_ids: Tensor, num_tasks: int) -> Tensor:
    """``(num_tasks, E)`` fraction of each task's token assignments that went to each expert.

    ``task_ids`` holds one task id per token, shape ``(N,)``. Each row sums to 1; a task without
    tokens gets a row of zeros.

    Example:
        >>> logits = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
        >>> expert_usage_per_task(logits, 1, torch.tensor([0, 0, 1, 1]), num_tasks=2)
        tensor([[1.0000, 0.0000],
                [0.5000, 0.5000]])
    """
    num_tokens, num_experts = router_logits.shape                       # (N, E)
    if task_ids.shape != (num_tokens,):
        raise ValueError(f"task_ids must have shape ({num_tokens},) (one per token), got {tuple(task_ids.shape)}")
    expert_ids = router_logits.detach().topk(top_k, dim=-1).indices     # (N, k)
    task_of_assignment = task_ids.to(expert_ids.device).long().unsqueeze(-1).expand_as(expert_ids)  # (N, k)
    cell = (task_of_assignment * num_experts + expert_ids).reshape(-1)  # (N*k,) flat (task, expert) index
    counts = torch.bincount(cell, minlength=num_tasks * num_experts)    # (T*E,)
    if counts.numel() > num_tasks * num_experts or (num_tokens > 0 and int(task_ids.min()) < 0):
        raise ValueError(f"task_ids must lie in [0, num_tasks={num_tasks})")
    counts = counts.view(num_tasks, num_experts).float()               # (T, E)
    return counts / counts.sum(dim=-1, keepdim=True).clamp_min(1.0)


def moe_statistics(router_logits_list: Sequence[Tensor], top_k: int, *, task_ids: Optional[Tensor] = None,
                   num_tasks: Optional[int] = None) -> Dict[str, Union[Tensor, float]]:
    """Router statistics of L MoE layers for logging (no gradient).

    Returns:
        ``tokens_per_expert``: ``(L, E)`` int64 assignment counts per layer;
        ``expert_fraction``: ``(L, E)`` the same as fractions of ``N * top_k``;
        ``max_expert_fraction``: float, largest fraction over layers and experts (1.0 = collapse);
        ``load_balance_loss`` / ``router_z_loss``: floats, mean over layers;
        ``usage_per_task``: ``(L, num_tasks, E)``, only when ``task_ids`` (one per token) is given.

    Example:
        >>> stats = moe_statistics([torch.zeros(6, 4), torch.randn(6, 4)], top_k=1,
        ...                        task_ids=torch.tensor([0, 0, 0, 1, 1, 1]), num_tasks=2)
        >>> stats["tokens_per_expert"].shape, stats["usage_per_task"].shape, stats["load_balance_loss"] >= 0
        (torch.Size([2, 4]), torch.Size([2, 2, 4]), True)
    """
    if len(router_logits_list) == 0:
        raise ValueError("router_logits_list is empty")
    if (task_ids is None) != (num_tasks is None):
        raise ValueError("give both task_ids and num_tasks, or neither")
    with torch.no_grad():
        counts = torch.stack([expert_token_counts(z, top_k) for z in router_logits_list])      # (L, E)
        fraction = counts.float() / counts.sum(dim=-1, keepdim=True).float()                    # (L, E)
        stats: Dict[str, Union[Tensor, float]] = {
            "tokens_per_expert": counts,
            "expert_fraction": fraction,
            "max_expert_fraction": float(fraction.max()),
            "load_balance_loss": float(torch.stack([load_balancing_loss(z, top_k) for z in router_logits_list]).mean()),
            "router_z_loss": float(torch.stack([router_z_loss(z) for z in router_logits_list]).mean()),
        }
        if task_ids is not None:
            stats["usage_per_task"] = torch.stack(
                [expert_usage_per_task(z, top_k, task_ids, num_tasks) for z in router_logits_list])  # (L, T, E)
    return stats
