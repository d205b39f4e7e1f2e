"""One model over several domains against one model per domain, at the same sizes: what a mixed step costs.

``python -m lzero_ext.bench multidomain [--preset cpu] [--tasks atari:Pong dmc:cartpole-swingup ...]``

* **mixed**: one ScaleZero trainer over every task of the multidomain preset (one lockstep step and one learn step
  for all of them, ``zoo.multidomain.config.scalezero_multidomain_config``);
* **per domain**: one trainer per domain over that domain's tasks, same preset, width and settings, one after
  another: the per-domain batched steps the mixed run replaces.

Figures (one process, the sides interleaved round by round, after a warm-up round each):

* **collect**: seconds of one collection round of every task (the same env steps on both sides: every task
  collects ``collect_env_steps_per_round``), mixed against the sum over the per-domain trainers;
* **learn**: median seconds of one learn step on one fixed batch per task, mixed against the sum of the per-domain
  learn steps over the same tasks.

The last line is ``multidomain: collect mixed/per-domain X.XX, learn mixed/per-domain Y.YY`` (target: at most 1.2).
"""
import argparse
import logging
import os
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

from tabulate import tabulate

from lzero_ext.bench.common import machine_load, median, set_threads, time_interleaved


def build_trainer(tasks: Sequence[str], preset: str, exp: str, seed: int) -> Any:
    from lzero_ext.entry.train_scalezero import MultiTaskTrainer
    from zoo.multidomain.config.scalezero_multidomain_config import build_configs

    configs = build_configs(preset, tasks=list(tasks), exp_name=exp, cuda=False)
    return MultiTaskTrainer(configs, seed=seed, exp_name=exp, score_kind="raw", max_env_step=10 ** 9,
                            max_train_iter=10 ** 9, checkpoint_freq=10 ** 9, save_replay_buffer=False, progress=False)


def time_rounds(trainers: Dict[str, Sequence[Any]], rounds: int) -> Dict[str, float]:
    """Seconds of ``rounds`` collection rounds per side (a side's trainers one after another)."""
    totals = {name: 0.0 for name in trainers}
    for round_index in range(rounds + 1):  # round 0 warms up
        for name, side in trainers.items():
            start = time.perf_counter()
            for trainer in side:
                trainer.collect()
            if round_index:
                totals[name] += time.perf_counter() - start
    return totals


def time_learning(trainers: Dict[str, Sequence[Any]], repeats: int) -> Dict[str, float]:
    """Median seconds of one learn step per side on fixed batches (every task's, sampled once)."""
    from lzero_ext.entry.multitask_sampling import sample_tasks

    for side in trainers.values():
        for trainer in side:
            while not all(task.has_enough_data() for task in trainer.tasks):
                trainer.collect()
    batches = {name: [(trainer, sample_tasks(trainer.tasks, trainer.policy)) for trainer in side]
               for name, side in trainers.items()}

    def step(name: str):
        return lambda: [trainer.policy.learn_mode.forward(batch) for trainer, batch in batches[name]]

    times = time_interleaved({name: step(name) for name in trainers}, warmup=1, repeats=repeats)
    return {name: median(values) for name, values in times.items()}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", help="multidomain preset (sizes and default tasks)")
    parser.add_argument("--tasks", nargs="+", help="<domain>:<name> tasks (default: the preset's)")
    parser.add_argument("--rounds", type=int, default=2, help="timed collection rounds per side")
    parser.add_argument("--learn-repeats", type=int, default=5, help="timed learn steps per side")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import lzero_ext.registry  # noqa: F401  (registers envs, models, policies)
    from zoo.multidomain.config.scalezero_multidomain_config import PRESETS, tasks_by_domain

    tasks = list(args.tasks or PRESETS[args.preset].tasks)
    domains = tasks_by_domain(tasks)
    load_before = machine_load()
    threads = set_threads(args.threads or PRESETS[args.preset].torch_threads)
    logging.getLogger().setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="scalezero_bench_multidomain_") as root:
        sides = {"mixed": [build_trainer(tasks, args.preset, os.path.join(root, "mixed"), args.seed)],
                 "per domain": [build_trainer(domain_tasks, args.preset, os.path.join(root, domain), args.seed)
                                for domain, domain_tasks in domains.items()]}
        try:
            collect = time_rounds(sides, args.rounds)
            learn = time_learning(sides, args.learn_repeats)
        finally:
            for side in sides.values():
                for trainer in side:
                    trainer.close()
    print(f"\nmultidomain benchmark, {args.preset} preset: {len(tasks)} tasks of {len(domains)} domains "
          f"({', '.join(f'{d} {len(t)}' for d, t in domains.items())}); threads {threads}, "
          f"load {load_before} -> {machine_load()}")
    print(tabulate([[name, len(sides[name]), f"{collect[name] / args.rounds:.2f}", f"{learn[name] * 1e3:.0f}"]
                    for name in sides], headers=["side", "trainers", "collect round s", "learn step ms (all tasks)"]))
    print(f"multidomain: collect mixed/per-domain {collect['mixed'] / collect['per domain']:.2f}, "
          f"learn mixed/per-domain {learn['mixed'] / learn['per domain']:.2f}")


if __name__ == "__main__":
    main()
