"""Learner cost: one multi-task train step against N single-task lightzero UniZero train steps.

``python -m lzero_ext.bench learner [--tasks 3 --batch-size 16 --embed-dim 64 --layers 2 --threads 2]``

Setup: N Atari games (the ``cpu`` preset's, real ALE environments) each collect one round of real
game segments with MCTS; one batch per task is sampled from lightzero's ``UniZeroGameBuffer``.
Those same batches then feed three learners of the same width, depth, heads and batch size:

* ``scalezero-dense``: one ScaleZero step over the N batches (N forwards, summed loss, one
  backward, one clip, one AdamW step), dense FFN — the multi-task UniZero baseline;
* ``scalezero-moe``:   the same step with the MoE FFN (8 experts, top-1, 1 shared);
* ``unizero x N``:     lightzero 0.2.0's own ``UniZeroPolicy`` learn step, once per task batch.

Targets: dense / (unizero x N) <= 1.0 and MoE / dense <= 1.5. Steps are timed round-robin
so that machine noise hits all arms alike; medians are reported. Sampling (reanalysis) is not
timed: it is the same buffer code on both sides.
"""
import argparse
import logging
import tempfile
from typing import Any, Callable, Dict, List, Optional

from tabulate import tabulate

from lzero_ext.bench.common import (atari_task_configs, create_policy_for, lightzero_unizero_config, machine_load,
                                    median, set_threads, time_interleaved)

TARGET_DENSE_VS_SINGLE = 1.0
TARGET_MOE_VS_DENSE = 1.5
DEFAULT_GAMES = ["Pong", "Breakout", "MsPacman", "Seaquest", "Boxing", "Alien", "ChopperCommand", "Hero"]


def sample_task_batches(configs: List[Any], seed: int) -> List[Any]:
    """One real batch per task: one collection round per game, then one buffer sample each."""
    from lzero_ext.entry.train_scalezero import MultiTaskTrainer

    trainer = MultiTaskTrainer(configs, seed=seed, exp_name=configs[0][0].exp_name, score_kind="atari",
                               max_env_step=10 ** 9, max_train_iter=10 ** 9, checkpoint_freq=10 ** 9,
                               save_replay_buffer=False, progress=False)
    try:
        while not all(task.has_enough_data() for task in trainer.tasks):
            trainer.collect()
        return [task.sample(trainer.policy) for task in trainer.tasks]
    finally:
        trainer.close()


def learner_steps(configs: List[Any], dense_configs: List[Any], batches: List[Any], seed: int) -> Dict[str, Callable[[], None]]:
    """The three arms' train steps, all fed the same task batches."""
    moe_policy, moe_cfg = create_policy_for(configs[0], seed=seed)
    dense_policy, dense_cfg = create_policy_for(dense_configs[0], seed=seed)
    task_cfgs = {t: create_policy_for(c, seed=seed, task_id=t, enable_field=())[1].policy for t, c in enumerate(dense_configs)}
    moe_policy.set_task_configs(task_cfgs)
    dense_policy.set_task_configs(task_cfgs)
    # lightzero logs attributes set by its collect mode in every learn step, so enable that too.
    single_policy, _ = create_policy_for(lightzero_unizero_config(dense_configs[0]), seed=seed, enable_field=("learn", "collect"))
    single_batches = [[current, target, 0] for _, current, target in batches]

    def unizero_n() -> None:
        for batch in single_batches:
            single_policy.learn_mode.forward(batch)

    return {
        "scalezero-dense": lambda: dense_policy.learn_mode.forward(batches),
        "scalezero-moe": lambda: moe_policy.learn_mode.forward(batches),
        f"unizero x {len(batches)}": unizero_n,
    }


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=3, help="number of Atari games N (1-8)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch B per task")
    parser.add_argument("--embed-dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 1 <= args.tasks <= len(DEFAULT_GAMES):
        parser.error(f"--tasks must be in 1..{len(DEFAULT_GAMES)}")
    threads = set_threads(args.threads)

    import lzero_ext.registry  # noqa: F401  (registers envs, models, policies)
    logging.getLogger().setLevel(logging.WARNING)  # lightzero's workers log every collection at INFO
    games = DEFAULT_GAMES[:args.tasks]
    sizes = dict(embed_dim=args.embed_dim, num_layers=args.layers, num_heads=args.heads, batch_size=args.batch_size,
                 num_simulations=4, collector_env_num=2, num_experts=args.experts)
    with tempfile.TemporaryDirectory(prefix="scalezero_bench_") as exp:
        moe_configs = atari_task_configs(games, dense=False, exp_name=exp, **sizes)
        dense_configs = atari_task_configs(games, dense=True, exp_name=exp, **sizes)
        print(f"collecting one batch per game ({', '.join(games)}) ...", flush=True)
        batches = sample_task_batches(dense_configs, args.seed)
        steps = learner_steps(moe_configs, dense_configs, batches, args.seed)
        times = time_interleaved(steps, warmup=args.warmup, repeats=args.repeats)

    medians = {name: median(t) for name, t in times.items()}
    single_name = next(name for name in medians if name.startswith("unizero"))
    dense_ratio = medians["scalezero-dense"] / medians[single_name]
    moe_ratio = medians["scalezero-moe"] / medians["scalezero-dense"]
    print(f"\nlearner step, {args.tasks} tasks x batch {args.batch_size}, embed {args.embed_dim}, {args.layers} layers, "
          f"{args.heads} heads; threads {threads}, load {machine_load()}, median of {args.repeats}")
    print(tabulate([[name, f"{1000 * m:.0f}"] for name, m in medians.items()], headers=["arm", "ms / step"]))
    print(f"\ndense multi-task / {single_name}: {dense_ratio:.2f}  (target <= {TARGET_DENSE_VS_SINGLE})")
    print(f"MoE / dense multi-task:        {moe_ratio:.2f}  (target <= {TARGET_MOE_VS_DENSE})")


if __name__ == "__main__":
    main()
