"""MoE layer vs a dense layer of equal active compute: CPU forward + backward time per iteration.

``python -m lzero_ext.bench moe [--dim 256 --tokens 4096 --warmup 3 --repeats 15]``

The dense baseline applies the shared expert (the authors' GELU MLP, hidden 4D) and ``top_k`` SwiGLU
FFNs (hidden 4D) to every token, i.e. the
same matmul FLOPs per token as the MoE layer; the ratio MoE / dense therefore measures routing
overhead (gate, sort, gather, weighting, ``index_add_``, smaller matmuls). Target for the
ScaleZero setting (8 experts, top-1, 1 shared): ratio <= 1.3. Measurements of the two layers are
interleaved so that machine noise hits both alike; the table gives the median time of each
layer and the median of the per-pair ratios (each MoE step over the dense step right after it).
"""
import argparse
import os
import statistics
import time
from typing import Callable, List, Optional, Tuple

import torch
from tabulate import tabulate
from torch import Tensor, nn

from lzero_ext.model.moe import GELUExpert, MoEFeedForward, SwiGLUExpert, expert_token_counts

TARGET_RATIO = 1.3  # MoE / dense-equal-active time, 8 experts top-1 + 1 shared

# (num_experts, top_k, num_shared_experts); the first row is the one held to TARGET_RATIO.
CONFIGS: List[Tuple[int, int, int]] = [(8, 1, 1), (8, 2, 1), (16, 1, 1)]


class DenseEqualActive(nn.Module):
    """``num_shared`` GELU and ``top_k`` SwiGLU FFNs applied to every token and summed: the active compute of
    the MoE layer (its shared and routed experts)."""

    def __init__(self, embed_dim: int, num_shared: int, top_k: int) -> None:
        super().__init__()
        self.ffns = nn.ModuleList([*(GELUExpert(embed_dim) for _ in range(num_shared)),
                                   *(SwiGLUExpert(embed_dim) for _ in range(top_k))])

    def forward(self, x: Tensor) -> Tensor:
        out = self.ffns[0](x)
        for ffn in self.ffns[1:]:
            out = out + ffn(x)
        return out


def _step_fn(model: nn.Module, x: Tensor, grad_out: Tensor) -> Callable[[], None]:
    """One forward + backward of ``model`` on ``x`` (grads of parameters and input)."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        x.grad = None
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        out.backward(grad_out)

    return step


def time_pair(step_a: Callable[[], None], step_b: Callable[[], None], *, warmup: int,
              repeats: int) -> Tuple[List[float], List[float]]:
    """Milliseconds per call of two steps, measured alternately (``repeats`` each)."""
    for _ in range(warmup):
        step_a()
        step_b()
    times_a, times_b = [], []
    for _ in range(repeats):
        for step, times in ((step_a, times_a), (step_b, times_b)):
            start = time.perf_counter()
            step()
            times.append(1e3 * (time.perf_counter() - start))
    return times_a, times_b


def run(*, dim: int, tokens: int, warmup: int, repeats: int, seed: int = 0) -> List[dict]:
    """Time every config in ``CONFIGS``; one result dict per config."""
    torch.manual_seed(seed)
    results = []
    for num_experts, top_k, num_shared in CONFIGS:
        moe = MoEFeedForward(dim, num_experts=num_experts, top_k=top_k, num_shared_experts=num_shared)
        dense = DenseEqualActive(dim, num_shared, top_k)
        x = torch.randn(tokens, dim, requires_grad=True)
        grad_out = torch.randn(tokens, dim)
        moe_times, dense_times = time_pair(_step_fn(moe, x, grad_out), _step_fn(dense, x, grad_out),
                                     warmup=warmup, repeats=repeats)
        with torch.no_grad():
            counts = expert_token_counts(moe(x)[1], top_k)
        results.append(dict(experts=num_experts, top_k=top_k, shared=num_shared, dense_ffns=num_shared + top_k,
                            tokens_per_expert=f"{int(counts.min())}-{int(counts.max())}",
                            moe_ms=statistics.median(moe_times), dense_ms=statistics.median(dense_times),
                            ratio=statistics.median(a / b for a, b in zip(moe_times, dense_times))))
    return results


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lzero_ext.bench moe", description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=256, help="embed dim D (expert hidden 4D)")
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per forward")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations per layer")
    parser.add_argument("--repeats", type=int, default=15, help="timed iterations per layer (median reported)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's default); 1 is less sensitive to other load")
    args = parser.parse_args(argv)
    default_threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        report(args)
    finally:
        torch.set_num_threads(default_threads)


def report(args: argparse.Namespace) -> None:
    """Run the configs and print the table and the verdict on TARGET_RATIO."""
    print(f"MoE vs dense-equal-active, forward+backward on CPU: D={args.dim}, tokens={args.tokens}, "
          f"SwiGLU hidden {4 * args.dim}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats} (warm-up {args.warmup}); load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs (other processes inflate the MoE side more: it runs more, smaller ops)")
    results = run(dim=args.dim, tokens=args.tokens, warmup=args.warmup, repeats=args.repeats)
    rows = [[r["experts"], r["top_k"], r["shared"], r["tokens_per_expert"], r["moe_ms"], r["dense_ms"],
             r["dense_ffns"], r["ratio"]] for r in results]
    print(tabulate(rows, headers=["experts", "top-k", "shared", "tokens/expert (min-max)", "MoE ms",
                                  "dense ms", "dense FFNs", "MoE/dense (median of pairs)"], floatfmt=".2f"))
    headline = results[0]
    verdict = "met" if headline["ratio"] <= TARGET_RATIO else "NOT met"
    print(f"target: MoE/dense <= {TARGET_RATIO} for {headline['experts']} experts top-{headline['top_k']} "
          f"+ {headline['shared']} shared -> {headline['ratio']:.2f}, {verdict}")


if __name__ == "__main__":
    main()
