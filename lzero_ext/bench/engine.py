"""The multi-task engine against lightzero's own UniZero run one game after another, at the same sizes.

``python -m lzero_ext.bench engine --suite minatar`` (or ``--suite atari``) ``[--rounds 3 --learn-repeats 5 --dense]``

* **ours**: one ScaleZero trainer on the suite's ``cpu`` preset (MinAtar: 5 games x 8 envs; Atari: the main
  job's 3 games; MoE FFN, or with ``--dense`` lightzero's dense MLP as the other side has), default engine: every task's envs step together, one initial inference and one C++ search
  over every task's roots per step on the batched KV cache, one learn step for every task's batch.
* **lightzero**: lightzero's ``unizero`` policy (``GridUniZeroModel`` for MinAtar's grids), its own
  ``MuZeroSegmentCollector`` and learn step, one policy per game, the games one after another: what a
  LightZero user runs today to train the same games at the same width, depth, simulations and env count.

Figures (all from this one process, sides interleaved round by round):

* **collect**: env steps per second over all games (ours: one round of every task; lightzero: one round of
  each game in turn), after a warm-up round each;
* **learn**: seconds of our one multi-task learn step against the sum of lightzero's single-task learn steps
  on batches of the same rows (``batch_size`` per game), median over ``--learn-repeats``; the table also gives
  replay sampling, which every learner iteration does before its step (ours: every game's batch with one target
  forward; lightzero: each game's buffer in turn), not part of the ratio;
* **search overhead**: the fixed cost of one search (``lzero_ext.bench.search``'s fit over 1-40 roots) of ours.

The last line is ``engine: collect ours/lightzero X.XX, learn ours/lightzero Y.YY, search overhead Z.Z ms``.
"""
import argparse
import logging
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tabulate import tabulate

from lzero_ext.bench.common import (create_policy_for, lightzero_segment_collector, lightzero_unizero_config,
                                    machine_load, median, set_threads, time_interleaved)
from lzero_ext.bench.learning_configs import GRID_UNIZERO_MODEL

SUITES = ("minatar", "atari")
SEARCH_BATCHES = (1, 2, 5, 10, 20, 40)


def suite_configs(suite: str, exp_name: str, dense: bool = False) -> Tuple[List[Any], Optional[int]]:
    """The suite's ``cpu`` preset configs (without its collect exploration; ``dense``: the dense FFN) and the
    preset's torch thread count."""
    if suite == "minatar":
        from zoo.minatar.config.scalezero_minatar_multitask_config import PRESETS, build_configs
    else:
        from zoo.atari.config.scalezero_multitask_config import PRESETS, build_configs
    configs = build_configs("cpu", exp_name=exp_name, cuda=False, dense=dense)
    for main, _ in configs:  # both sides collect without epsilon-greedy exploration: the same episodes' dynamics
        main.policy.pop("eps", None)
    return configs, PRESETS["cpu"].torch_threads


def lightzero_side(task_config: Any, suite: str, seed: int) -> Dict[str, Any]:
    """lightzero's UniZero policy, its segment collector and replay buffer for one game."""
    from lzero.mcts import UniZeroGameBuffer

    main, create = lightzero_unizero_config(task_config)
    for key in ("diagnostics_freq", "dps", "engine", "amp", "compile", "cache_clear_interval"):
        main.policy.pop(key, None)
    if suite == "minatar":
        main.policy.model.update(GRID_UNIZERO_MODEL)
    policy, cfg = create_policy_for((main, create), seed=seed, enable_field=("learn", "collect"))
    return dict(policy=policy, cfg=cfg, collector=lightzero_segment_collector(policy, cfg, "bench_unizero"),
                buffer=UniZeroGameBuffer(cfg.policy))


def lightzero_round(side: Dict[str, Any]) -> int:
    """One collection round of one game; returns its env steps (segments go to the game's buffer)."""
    before = side["collector"].envstep
    data = side["collector"].collect(train_iter=0, policy_kwargs={"temperature": 1.0, "epsilon": 0.0})
    side["buffer"].push_game_segments(data)
    side["buffer"].remove_oldest_data_to_fit()
    return side["collector"].envstep - before


def time_collection(trainer: Any, sides: Sequence[Dict[str, Any]], rounds: int) -> Dict[str, Tuple[int, float]]:
    """(env steps, seconds) of ``rounds`` rounds per side, alternating, after a warm-up round each."""
    totals = {"ours": [0, 0.0], "lightzero": [0, 0.0]}
    for round_index in range(rounds + 1):
        start = time.perf_counter()
        steps = trainer.collect()
        if round_index:
            totals["ours"][0] += steps
            totals["ours"][1] += time.perf_counter() - start
        start = time.perf_counter()
        steps = sum(lightzero_round(side) for side in sides)  # the games one after another
        if round_index:
            totals["lightzero"][0] += steps
            totals["lightzero"][1] += time.perf_counter() - start
    return {name: (steps, seconds) for name, (steps, seconds) in totals.items()}


def time_learning(trainer: Any, sides: Sequence[Dict[str, Any]], repeats: int) -> Dict[str, float]:
    """Median seconds of our one multi-task learn step and of lightzero's learn steps of every game (``ours``,
    ``lightzero``), and of sampling every game's batch on each side (``ours sample``, ``lightzero sample``)."""
    from lzero_ext.entry.multitask_sampling import sample_tasks

    while not all(task.has_enough_data() for task in trainer.tasks):
        trainer.collect()
    ours_batches = [task.sample(trainer.policy) for task in trainer.tasks]
    theirs = []
    for side in sides:
        batch_size = side["cfg"].policy.batch_size
        while side["buffer"].get_num_of_transitions() < batch_size:
            lightzero_round(side)
        theirs.append((side["policy"], side["buffer"].sample(batch_size, side["policy"])))

    def ours() -> None:
        trainer.policy.learn_mode.forward(ours_batches)

    def lightzero() -> None:
        for policy, batch in theirs:
            policy.learn_mode.forward(batch + [0] if len(batch) == 2 else batch)

    def ours_sample() -> None:
        sample_tasks(trainer.tasks, trainer.policy)

    def lightzero_sample() -> None:
        for side in sides:
            side["buffer"].sample(side["cfg"].policy.batch_size, side["policy"])

    times = time_interleaved({"ours": ours, "lightzero": lightzero, "ours sample": ours_sample,
                              "lightzero sample": lightzero_sample}, warmup=1, repeats=repeats)
    return {name: median(values) for name, values in times.items()}


def search_overhead(trainer: Any, repeats: int) -> Tuple[float, float]:
    """Fixed cost and per-root cost (seconds) of one search on our engine, fitted over 1-40 roots."""
    from lzero_ext.bench.search import BatchedPath, fit, spread_rows, time_search

    cfg = trainer.policy._cfg
    num_tasks = len(trainer.tasks)
    model = trainer.policy._collect_model.eval()  # as collection runs it (the learn steps left it in train mode)
    path = BatchedPath(model, cfg, {t: max(SEARCH_BATCHES) for t in range(num_tasks)})
    obs_shape = tuple(trainer.tasks[0].cfg.policy.model.observation_shape)
    seconds = [time_search(path, spread_rows(batch, num_tasks), obs_shape, repeats) for batch in SEARCH_BATCHES]
    return fit(SEARCH_BATCHES, seconds)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=SUITES, default="minatar")
    parser.add_argument("--rounds", type=int, default=3, help="timed collection rounds per side")
    parser.add_argument("--learn-repeats", type=int, default=5, help="timed learn steps per side")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dense", action="store_true",
                        help="our model with lightzero's dense MLP instead of the MoE FFN: the engine alone, same arithmetic")
    args = parser.parse_args(argv)

    import lzero_ext.registry  # noqa: F401  (registers envs, models, policies)
    from lzero_ext.entry.train_scalezero import MultiTaskTrainer

    load_before = machine_load()
    logging.getLogger().setLevel(logging.WARNING)  # lightzero's collectors log every round at INFO
    with tempfile.TemporaryDirectory(prefix="scalezero_bench_engine_") as exp:
        configs, preset_threads = suite_configs(args.suite, exp, dense=args.dense)
        threads = set_threads(args.threads or preset_threads)
        trainer = MultiTaskTrainer(configs, seed=args.seed, exp_name=exp, score_kind="raw", max_env_step=10 ** 9,
                                   max_train_iter=10 ** 9, checkpoint_freq=10 ** 9, save_replay_buffer=False,
                                   progress=False)
        sides = [lightzero_side(config, args.suite, args.seed) for config in configs]
        try:
            collect = time_collection(trainer, sides, args.rounds)
            learn = time_learning(trainer, sides, args.learn_repeats)
            fixed, per_root = search_overhead(trainer, repeats=3)
        finally:
            trainer.close()
            for side in sides:
                side["collector"].close()
    games = [task.name for task in trainer.tasks]
    rates = {name: steps / seconds for name, (steps, seconds) in collect.items()}
    print(f"\nengine benchmark, {args.suite} cpu preset ({'dense' if args.dense else 'MoE'} FFN): {len(games)} games ({', '.join(games)}); "
          f"threads {threads}, load {load_before} -> {machine_load()}")
    print(tabulate([[name, collect[name][0], f"{collect[name][1]:.1f}", f"{rates[name]:.1f}",
                     f"{learn[name] * 1e3:.0f}", f"{learn[name + ' sample'] * 1e3:.0f}"] for name in ("ours", "lightzero")],
                   headers=["side", "env steps", "collect s", "env steps / s", "learn step ms (all games)",
                            "sampling ms (all games)"]))
    print(f"search: fixed {fixed * 1e3:.1f} ms + {per_root * 1e3:.2f} ms per root "
          f"({trainer.policy._cfg.num_simulations} simulations)")
    print(f"engine: collect ours/lightzero {rates['ours'] / rates['lightzero']:.2f}, "
          f"learn ours/lightzero {learn['ours'] / learn['lightzero']:.2f}, search overhead {fixed * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
