"""The batched multi-task engine against the task-by-task one: collection speed and learn-step time.

``python -m lzero_ext.bench engine --tasks 3 [--rounds 3 --learn-repeats 5 --threads 2]``

One multi-task trainer on ``--tasks`` real Atari games (the ``cpu`` preset's model: embed 64, 2 layers,
4 heads, 4 experts; 8 simulations; 2 envs per task, base env manager) is switched between the two
engines (``policy.engine``), so both time the same model, envs and replay data:

* **collection**: env steps per second over all tasks of one collection round; ``per_task`` collects the
  tasks one after another (one policy forward and one MCTS search per task and step), ``batched`` collects
  them in lockstep (one forward and one search over every task's roots per step). Rounds alternate.
* **learn step**: seconds per learner iteration on the same sampled batches (one per task), at batch 8 and
  32 per task, dense and MoE FFN; ``per_task`` runs one world-model forward per task, ``batched`` one for all.

The last line is ``engine: collect batched/per-task X.XX, learn batched/per-task Y.YY``: X the env-steps/s
ratio, Y the geometric mean of the learn-time ratios over the four (batch, FFN) settings.
"""
import argparse
import logging
import math
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tabulate import tabulate

from lzero_ext.bench.common import atari_task_configs, machine_load, median, set_threads, time_interleaved

GAMES = ["Pong", "Breakout", "MsPacman", "Seaquest", "Boxing", "Alien", "ChopperCommand", "Hero"]
ENGINES = ("per_task", "batched")
MODEL = dict(embed_dim=64, num_layers=2, num_heads=4, num_experts=4, num_simulations=8, collector_env_num=2)


def build_trainer(games: Sequence[str], *, dense: bool, batch_size: int, exp_name: str, seed: int) -> Any:
    from lzero_ext.entry.train_scalezero import MultiTaskTrainer

    configs = atari_task_configs(games, dense=dense, batch_size=batch_size, exp_name=exp_name,
                                 diagnostics_freq=0, **MODEL)  # diagnostics off: time the learn step itself
    return MultiTaskTrainer(configs, seed=seed, exp_name=exp_name, score_kind="atari", max_env_step=10 ** 9,
                            max_train_iter=10 ** 9, checkpoint_freq=10 ** 9, save_replay_buffer=False, progress=False)


def use_engine(trainer: Any, engine: str) -> None:
    trainer.cfg.engine = trainer.policy._cfg.engine = engine


def time_collection(trainer: Any, rounds: int) -> Dict[str, Tuple[int, float]]:
    """(env steps, seconds) per engine over ``rounds`` alternating collection rounds, after one warm-up each."""
    totals = {engine: [0, 0.0] for engine in ENGINES}
    for round_index in range(rounds + 1):
        for engine in ENGINES:
            use_engine(trainer, engine)
            start = time.perf_counter()
            steps = trainer.collect()
            if round_index:  # round 0 warms up
                totals[engine][0] += steps
                totals[engine][1] += time.perf_counter() - start
    return {engine: (steps, seconds) for engine, (steps, seconds) in totals.items()}


def time_learn_step(trainer: Any, repeats: int) -> Dict[str, float]:
    """Median seconds per learner iteration per engine, on one fixed set of sampled batches."""
    while not all(task.has_enough_data() for task in trainer.tasks):
        trainer.collect()
    batches = [task.sample(trainer.policy) for task in trainer.tasks]

    def step(engine: str):
        def run() -> None:
            use_engine(trainer, engine)
            trainer.policy.learn_mode.forward(batches)
        return run

    times = time_interleaved({engine: step(engine) for engine in ENGINES}, warmup=1, repeats=repeats)
    return {engine: median(values) for engine, values in times.items()}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=3, help=f"Atari games (1..{len(GAMES)})")
    parser.add_argument("--rounds", type=int, default=3, help="timed collection rounds per engine")
    parser.add_argument("--learn-repeats", type=int, default=5, help="timed learner iterations per engine and setting")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 1 <= args.tasks <= len(GAMES):
        parser.error(f"--tasks must lie in 1..{len(GAMES)}")
    threads = set_threads(args.threads)

    import lzero_ext  # noqa: F401  (registers envs, models, policies)
    logging.getLogger().setLevel(logging.WARNING)
    games = GAMES[:args.tasks]
    learn_rows, ratios = [], []
    collect: Dict[str, Tuple[int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="scalezero_bench_engine_") as exp:
        for dense in (False, True):
            for batch_size in args.batch_sizes:
                trainer = build_trainer(games, dense=dense, batch_size=batch_size, exp_name=exp, seed=args.seed)
                try:
                    if not dense and batch_size == args.batch_sizes[0]:  # collection: the MoE model of the cpu preset
                        collect = time_collection(trainer, args.rounds)
                    seconds = time_learn_step(trainer, args.learn_repeats)
                finally:
                    trainer.close()
                ratio = seconds["batched"] / seconds["per_task"]
                ratios.append(ratio)
                learn_rows.append(["dense" if dense else "MoE", batch_size, f"{seconds['per_task'] * 1e3:.0f}",
                                   f"{seconds['batched'] * 1e3:.0f}", f"{ratio:.2f}"])

    rates = {engine: steps / seconds for engine, (steps, seconds) in collect.items()}
    print(f"\nengine benchmark: {args.tasks} Atari tasks ({', '.join(games)}); threads {threads}, load {machine_load()}")
    print(f"\ncollection ({MODEL['collector_env_num']} envs per task, {MODEL['num_simulations']} simulations, MoE, "
          f"{args.rounds} rounds per engine)")
    print(tabulate([[engine, collect[engine][0], f"{collect[engine][1]:.1f}", f"{rates[engine]:.1f}"] for engine in ENGINES],
                   headers=["engine", "env steps", "seconds", "env steps / s"]))
    print(f"\nlearn step (one batch per task; median of {args.learn_repeats})")
    print(tabulate(learn_rows, headers=["FFN", "batch / task", "per_task ms", "batched ms", "batched / per_task"]))
    collect_ratio = rates["batched"] / rates["per_task"]
    learn_ratio = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"engine: collect batched/per-task {collect_ratio:.2f}, learn batched/per-task {learn_ratio:.2f}")


if __name__ == "__main__":
    main()
