"""A paper preset at full model size: build, collect, learn, with the parameter report and timings.

``python -m lzero_ext.bench full_size --suite atari --preset atari8 [--batch-size 2 --device cpu]``

The preset's model is built exactly as a run builds it (every task's heads, the full encoder and
backbone). Only run-time settings shrink, so that a CPU can afford it: one collector and one
evaluator env per task (base env manager), ``--simulations`` MCTS simulations, game segments of
``--segment`` steps (default: the shortest the replay buffer accepts), ``--batch-size`` per task, a small replay buffer. Every task's workers are
built; ``--learn-tasks`` tasks (the first and the last by default, so both ends of the task-id
range) collect one round (one game segment each) and then train ``--iters`` learner iterations
on one batch each. Prints the parameter report, wall times of each phase and the peak RSS.
"""
import argparse
import logging
import resource
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

from tabulate import tabulate

from lzero_ext.bench.common import machine_load, set_threads
from lzero_ext.entry.suite import zoo_module
from lzero_ext.param_count import SUITES, count_parameters, format_parameter_table

PRESET_SUITES = {'atari8': 'atari', 'atari26': 'atari', 'dmc18': 'dmc', 'jericho4': 'jericho'}


def shrink_run_settings(configs: Sequence[Any], *, batch_size: int, simulations: int, segment: Optional[int]) -> None:
    """Cut a preset's run-time settings in place; nothing that sizes the model changes. ``segment`` None: the
    shortest game segment lightzero's buffer accepts (num_unroll_steps + td_steps)."""
    for main, create in configs:
        env, policy, wm = main.env, main.policy, main.policy.model.world_model_cfg
        segment = policy.num_unroll_steps + policy.td_steps if segment is None else segment
        for cfg in (env, policy, wm):
            cfg.collector_env_num = cfg.evaluator_env_num = 1
        env.n_evaluator_episode = 1
        wm.env_num = 1  # sizes the KV-cache pools only
        policy.update(num_segments=1, batch_size=batch_size, num_simulations=simulations, game_segment_length=segment,
                      replay_buffer_size=10_000, update_per_collect=None, diagnostics_freq=0)
        wm.num_simulations = simulations
        if 'max_episode_frames' in env:
            env.max_episode_frames = 4 * 8 * segment  # Atari: frame skip 4
        if 'max_episode_steps' in env:
            env.max_episode_steps = 8 * segment
        if 'max_steps' in env:
            env.max_steps = 8 * segment
        create.env_manager.type = 'base'


def run_full_size(suite: str, preset: str, *, batch_size: int = 2, simulations: int = 2, segment: Optional[int] = None,
                  iters: int = 2, learn_tasks: Optional[Sequence[int]] = None, device: str = 'cpu',
                  seed: int = 0) -> Dict[str, Any]:
    """Build ``preset`` of ``suite`` at full size, collect one round and learn ``iters`` steps; returns the
    parameter counts, per-phase seconds, the learn logs and the peak RSS (GB)."""
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {sorted(SUITES)}, got {suite!r}")
    import lzero_ext.registry  # noqa: F401  (registers envs, models, policies)
    from lzero_ext.entry.train_scalezero import MultiTaskTrainer

    times: Dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix='scalezero_full_size_') as exp:
        configs = zoo_module(suite).build_configs(preset, cuda=device == 'cuda', exp_name=exp)
        shrink_run_settings(configs, batch_size=batch_size, simulations=simulations, segment=segment)
        start = time.perf_counter()
        trainer = MultiTaskTrainer(configs, seed=seed, exp_name=exp, score_kind='raw', max_env_step=10 ** 9,
                                   max_train_iter=10 ** 9, checkpoint_freq=10 ** 9, save_replay_buffer=False,
                                   progress=False)
        times['build (model + all workers)'] = time.perf_counter() - start
        try:
            chosen = sorted({0, len(trainer.tasks) - 1}) if learn_tasks is None else list(learn_tasks)
            tasks = [trainer.tasks[t] for t in chosen]
            start = time.perf_counter()
            for task in tasks:
                while not task.has_enough_data():
                    task.collect(train_iter=0)
            times[f'collect ({len(tasks)} tasks, MCTS)'] = time.perf_counter() - start
            logs: List[Dict[str, float]] = []
            for i in range(iters):
                batches = [task.sample(trainer.policy) for task in tasks]
                start = time.perf_counter()
                logs.append(trainer.policy.learn_mode.forward(batches))
                times[f'learn iter {i + 1} ({len(tasks)} tasks x batch {batch_size})'] = time.perf_counter() - start
            counts = count_parameters(trainer.policy._learn_model)
            env_steps = {task.name: task.env_steps for task in tasks}
        finally:
            trainer.close()
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return dict(counts=counts, times=times, logs=logs, env_steps=env_steps, peak_rss_gb=peak_gb,
                num_tasks=len(configs))


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', choices=sorted(PRESET_SUITES), default='atari8')
    parser.add_argument('--batch-size', type=int, default=2, help='batch per task (the preset: 64)')
    parser.add_argument('--simulations', type=int, default=2, help='MCTS simulations (the preset: 50)')
    parser.add_argument('--segment', type=int, help='game segment length (default: num_unroll_steps + td_steps)')
    parser.add_argument('--iters', type=int, default=2, help='learner iterations')
    parser.add_argument('--learn-tasks', type=int, nargs='+', help='task ids that collect and learn (default: first, last)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--threads', type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    logging.getLogger().setLevel(logging.WARNING)  # lightzero's workers log every collection at INFO
    suite = PRESET_SUITES[args.preset]
    result = run_full_size(suite, args.preset, batch_size=args.batch_size, simulations=args.simulations,
                           segment=args.segment, iters=args.iters, learn_tasks=args.learn_tasks, device=args.device)
    print(f"\n{args.preset} at full size ({result['num_tasks']} tasks) on {args.device}; threads {threads}, "
          f"load {machine_load()}")
    print(format_parameter_table(result['counts']))
    print(tabulate([[name, f"{seconds:.1f}"] for name, seconds in result['times'].items()], headers=['phase', 's']))
    losses = {k: round(v, 4) for k, v in result['logs'][-1].items() if k.endswith('/loss_total')}
    print(f"env steps {result['env_steps']}; last losses {losses}; peak RSS {result['peak_rss_gb']:.2f} GB")


if __name__ == '__main__':
    main()
