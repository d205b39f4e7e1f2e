"""Dispatcher: ``python -m lzero_ext.bench <name> [args]`` runs ``main(args)`` of the named benchmark.

Benchmark modules are imported lazily, so one benchmark's dependencies never slow down or break
another. Each module exposes ``main(argv: Optional[List[str]] = None) -> None``. A file-system failure
(a full disk, a read-only or mistyped output path) ends a benchmark with one line naming the path and
the cause, exit status 1.

Example:
    >>> sorted(BENCHMARKS)[:1]
    ['moe']
"""
import importlib
import sys
from typing import Dict, List, Optional

# name -> module path (one line per benchmark; keep names unique).
BENCHMARKS: Dict[str, str] = {
    "moe": "lzero_ext.bench.moe",  # MoE layer vs dense layer of equal active compute, CPU fwd+bwd
    "learner": "lzero_ext.bench.learner",  # multi-task train step vs N lightzero UniZero steps; MoE vs dense
    "collect": "lzero_ext.bench.collect",  # env steps/s with MCTS vs lightzero's UniZero collector
    "learning": "lzero_ext.bench.learning",  # returns of UniZero per task vs multi-task dense vs MoE, 3 seeds
    "search": "lzero_ext.bench.search",  # fixed cost of one MCTS search: lightzero's KV-cache path vs the batched cache
    "engine": "lzero_ext.bench.engine",  # the multi-task engine vs lightzero's UniZero game after game
    "full_size": "lzero_ext.bench.full_size",  # a paper preset at full model size: build, collect, 2 learn steps
    "finetune": "lzero_ext.bench.finetune",  # held-out task: env steps to target from scratch vs from a checkpoint
    "faults": "lzero_ext.bench.faults",  # kill -9, signals, damaged checkpoints, NaN, full disk, second job: then resume
    "multidomain": "lzero_ext.bench.multidomain",  # one model over several domains vs one per domain: step costs
    "multidomain_learning": "lzero_ext.bench.multidomain_learning",  # the same comparison's returns, several seeds
    "preset_learning": "lzero_ext.bench.preset_learning",  # a zoo preset over seeds: which games it learns
    "preset_arms": "lzero_ext.bench.preset_arms",  # the four arms' preset_learning reports side by side
    "baselines": "lzero_ext.bench.baselines",  # MinAtar returns of the random policy and of every constant action
}


def usage() -> str:
    lines = ["usage: python -m lzero_ext.bench <name> [args]   (<name> --help for its options)", "", "benchmarks:"]
    lines += [f"  {name:<12} {path}" for name, path in sorted(BENCHMARKS.items())]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    from lzero_ext.checkpoint import CheckpointWriteError
    from lzero_ext.fs_errors import OutputDirError, describe_os_error

    try:
        importlib.import_module(BENCHMARKS[name]).main(rest)
    except (OutputDirError, CheckpointWriteError) as error:  # a file-system failure: one line, path and cause
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: {describe_os_error(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
