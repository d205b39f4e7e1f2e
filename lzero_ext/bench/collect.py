"""Collection speed: env steps per second with MCTS, ScaleZero against lightzero's UniZero collector.

``python -m lzero_ext.bench collect [--game Pong --simulations 8 --envs 2 --rounds 4 --threads 2]``

Both sides run lightzero 0.2.0's ``MuZeroSegmentCollector`` with the C++ ``UniZeroMCTSCtree`` on the
same real Atari environment (this project's ``atari_scalezero``, base env manager) at the same
width, depth, simulations and env count:

* ``scalezero (dense)``: the ScaleZero policy's interface for one task of a multi-task model, exactly as
  :func:`train_scalezero` collects (``TaskRuntime``; each step one lockstep step on the batched KV cache), with
  a dense FFN: the same model compute as lightzero's, so the ratio measures the multi-task machinery;
* ``scalezero (MoE)``: the same with the MoE FFN (the shared GELU expert + 1 routed SwiGLU expert of
  hidden 4D per token: about 2.5x the dense FFN's FLOPs, so slower by design);
* ``unizero``: lightzero's own single-task ``UniZeroPolicy``.

Each round collects ``--envs`` game segments; rounds of the sides alternate, after one warm-up
round each. Target: ScaleZero / UniZero env steps per second >= 0.9.
"""
import argparse
import logging
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from tabulate import tabulate

from lzero_ext.bench.common import (atari_task_configs, create_policy_for, lightzero_segment_collector,
                                    lightzero_unizero_config, machine_load, set_threads)

TARGET_RATIO = 0.9


def lightzero_collector(task_config: Any, seed: int) -> Tuple[Any, Callable[[], None]]:
    """lightzero's UniZero policy with its own segment collector on ``task_config``'s env."""
    policy, cfg = create_policy_for(lightzero_unizero_config(task_config), seed=seed,
                                    enable_field=("learn", "collect", "eval"))
    collector = lightzero_segment_collector(policy, cfg, "collector_unizero")
    return collector, collector.close


def scalezero_collector(task_config: Any, seed: int) -> Tuple[Any, Callable[[], None]]:
    """A one-task ScaleZero trainer's collector (the code path :func:`train_scalezero` runs)."""
    from lzero_ext.entry.train_scalezero import MultiTaskTrainer

    trainer = MultiTaskTrainer([task_config], seed=seed, exp_name=task_config[0].exp_name, score_kind="atari",
                               max_env_step=10 ** 9, max_train_iter=10 ** 9, checkpoint_freq=10 ** 9,
                               save_replay_buffer=False, progress=False)
    return trainer.tasks[0].collector, trainer.close


def collect_round(collector: Any) -> Tuple[int, float]:
    """(env steps, seconds) of one collection round at temperature 1."""
    before, start = collector.envstep, time.perf_counter()
    collector.collect(train_iter=0, policy_kwargs={"temperature": 1.0, "epsilon": 0.0})
    return collector.envstep - before, time.perf_counter() - start


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="Pong")
    parser.add_argument("--simulations", type=int, default=8)
    parser.add_argument("--envs", type=int, default=2, help="collector envs (game segments per round)")
    parser.add_argument("--embed-dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds per side")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)

    import lzero_ext.registry  # noqa: F401  (registers envs, models, policies)
    logging.getLogger().setLevel(logging.WARNING)  # lightzero's collectors log every round at INFO
    with tempfile.TemporaryDirectory(prefix="scalezero_bench_") as exp:
        sizes = dict(exp_name=exp, embed_dim=args.embed_dim, num_layers=args.layers, num_heads=args.heads,
                     batch_size=16, num_simulations=args.simulations, collector_env_num=args.envs)
        (dense_config,) = atari_task_configs([args.game], dense=True, **sizes)
        (moe_config,) = atari_task_configs([args.game], dense=False, **sizes)
        sides: Dict[str, Tuple[Any, Callable[[], None]]] = {
            "scalezero (dense)": scalezero_collector(dense_config, args.seed),
            "scalezero (MoE)": scalezero_collector(moe_config, args.seed),
            "unizero": lightzero_collector(dense_config, args.seed),
        }
        try:
            for collector, _ in sides.values():
                collect_round(collector)  # warm-up
            totals = {name: [0, 0.0] for name in sides}
            for _ in range(args.rounds):
                for name, (collector, _) in sides.items():
                    steps, seconds = collect_round(collector)
                    totals[name][0] += steps
                    totals[name][1] += seconds
        finally:
            for _, close in sides.values():
                close()

    rates = {name: steps / seconds for name, (steps, seconds) in totals.items()}
    print(f"\ncollection on {args.game}: {args.envs} envs, {args.simulations} simulations, embed {args.embed_dim}, "
          f"{args.layers} layers; threads {threads}, load {machine_load()}, {args.rounds} rounds per side")
    print(tabulate([[name, totals[name][0], f"{totals[name][1]:.1f}", f"{rate:.1f}"] for name, rate in rates.items()],
                   headers=["collector", "env steps", "seconds", "env steps / s"]))
    print()
    for name in ("scalezero (dense)", "scalezero (MoE)"):
        print(f"{name} / unizero: {rates[name] / rates['unizero']:.2f}  (target >= {TARGET_RATIO})")
    print(f"scalezero (MoE) / scalezero (dense): {rates['scalezero (MoE)'] / rates['scalezero (dense)']:.2f}  "
          "(the MoE FFN's own cost: shared GELU + routed SwiGLU expert vs one dense MLP)")


if __name__ == "__main__":
    main()
