"""The smallest real training job, through the shared zoo command line (for fault injection and tests).

Classic-control tasks (CartPole, Acrobot; 20-step episodes) with a 1-layer, 16-wide model, 2 MCTS
simulations and the base env manager, so a run of a few learner iterations takes seconds and is
deterministic for a seed. Every flag of ``lzero_ext.entry.cli`` works (``--resume``, ``--overwrite``,
``--max-train-iter``, ...)::

    python -m lzero_ext.bench.fault_job --exp-name runs/tiny --max-train-iter 8
    python -m lzero_ext.launch --nproc_per_node 2 -m lzero_ext.bench.fault_job --exp-name runs/tiny2 --tasks CartPole Acrobot
"""
from dataclasses import replace
from typing import Any, Dict, List, Optional, Sequence

from lzero_ext.bench.learning_configs import classic_configs
from lzero_ext.bench.learning_runs import Settings, TaskSpec
from lzero_ext.entry.fault_injection import NanTargetsAt
from lzero_ext.entry.run_config import ENV_MANAGERS

TASKS: Dict[str, TaskSpec] = {
    "CartPole": TaskSpec("CartPole", "CartPole-v1", reference_return=20.0, target_return=20.0, max_episode_steps=20),
    "Acrobot": TaskSpec("Acrobot", "Acrobot-v1", reference_return=-20.0, target_return=0.0, max_episode_steps=20),
    # never ends before its cap: with a long --episode-steps, evaluations last long enough to be interrupted
    "Pendulum": TaskSpec("Pendulum", "Pendulum-v1", reference_return=-150.0, target_return=0.0, max_episode_steps=20,
                         continuous_action_bins=3),
}
TINY = Settings(env_steps=10_000, embed_dim=16, num_layers=1, num_heads=1, num_experts=2, num_simulations=2,
                batch_size=4, updates_per_round=2, learning_rate=1e-3, num_unroll_steps=4, infer_context=2,
                td_steps=3, game_segment_length=10, collector_env_num=1, evaluator_env_num=1, eval_freq=1000,
                diagnostics_freq=0)
PRESETS = {"tiny": TINY}
CHECKPOINT_FREQ = 2  # learner iterations between checkpoints


def build_configs(tasks: Sequence[str], *, exp_name: str, seed: int, settings: Settings = TINY,
                  env_manager: str = "base", episode_steps: Optional[int] = None, **run_keys: Any) -> List[Any]:
    """The ``(main, create)`` pairs of ``tasks`` (names of :data:`TASKS`); ``env_manager`` ``subprocess``
    runs two collector envs per task in worker processes (as the paper presets do); ``episode_steps`` caps
    episodes elsewhere than at 20 steps (Pendulum runs to the cap: a long cap makes evaluations long, for
    signals during one); ``run_keys`` are further :class:`~lzero_ext.entry.run_config.RunConfig` fields
    (the command line's ``engine``, ``amp``, ``compile``)."""
    if env_manager not in ENV_MANAGERS:
        raise ValueError(f"unknown env manager {env_manager!r}: choose from {sorted(ENV_MANAGERS)}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task {unknown[0]!r}: choose from {sorted(TASKS)}")
    specs = [TASKS[t] if episode_steps is None else replace(TASKS[t], max_episode_steps=episode_steps) for t in tasks]
    if env_manager == "subprocess":
        settings = replace(settings, collector_env_num=2)
    return classic_configs(specs, settings, moe=True, exp_name=exp_name, seed=seed, env_manager=env_manager, **run_keys)


def main(argv: Optional[Sequence[str]] = None) -> None:
    from lzero_ext.entry.cli import parse_scalezero_args, run_cli, scalezero_arg_parser

    parser = scalezero_arg_parser(__doc__, presets=PRESETS, default_preset="tiny", task_flag="--tasks",
                                  task_help=f"tasks, from {sorted(TASKS)} (default: CartPole)")
    parser.add_argument("--env-manager", choices=sorted(ENV_MANAGERS), default="base", help="ding env manager")
    parser.add_argument("--episode-steps", type=int, help="episode cap (default 20; Pendulum plays to the cap)")
    parser.add_argument("--fault-nan-at-iter", type=int, metavar="N",
                        help="inject NaN value targets at learner iteration N (a fault for the bench and tests)")
    args = parse_scalezero_args(parser, argv)
    tasks = args.tasks or ["CartPole"]
    exp_name = args.exp_name or "data_scalezero/fault_job"
    run_cli(args, lambda **run_keys: build_configs(tasks, exp_name=exp_name, seed=args.seed, env_manager=args.env_manager,
                                                   episode_steps=args.episode_steps, **run_keys), torch_threads=1,
            batch_transform=None if args.fault_nan_at_iter is None else NanTargetsAt(args.fault_nan_at_iter),
            max_env_step=args.max_env_step or TINY.env_steps, score_kind="raw", checkpoint_freq=CHECKPOINT_FREQ,
            progress=False, exp_name=exp_name)


if __name__ == "__main__":
    main()
