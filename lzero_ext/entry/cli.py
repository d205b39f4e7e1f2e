"""The command line shared by every zoo multi-task config (Atari, DMC, Jericho, MinAtar).

:meth:`lzero_ext.entry.suite.Suite.main` builds its parser here (the common flags), then :func:`run_cli`
runs :func:`train_scalezero` and turns bad input into one clear line instead of a traceback.

Example::

    parser = scalezero_arg_parser(__doc__, presets=PRESETS, default_preset="cpu", task_flag="--games")
    args = parse_scalezero_args(parser, argv)
    run_cli(args, lambda **run_keys: build_configs(args.preset, games=args.tasks, **run_keys),
            max_env_step=args.max_env_step or PRESETS[args.preset].max_env_step, score_kind="atari",
            checkpoint_freq=PRESETS[args.preset].checkpoint_freq)
"""
import argparse
import os
import signal
import sys
import threading
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import torch

from lzero_ext.entry.finetune import FINETUNE_MODES, FinetuneSpec
from lzero_ext.entry.run_logging import run_console
from lzero_ext.entry.cli_checks import exit_for, validate_args


def scalezero_arg_parser(doc: str, *, presets: Mapping[str, Any], default_preset: str,
                         task_flag: str = "--games", task_help: str = "override the preset's tasks") -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the flags every ScaleZero zoo config has; task names land in ``args.tasks``."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0], epilog=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(presets), default=default_preset, help=f"(default here: {default_preset})")
    parser.add_argument(task_flag, dest="tasks", nargs="+", help=task_help)
    parser.add_argument("--max-env-step", type=int, help="per-task env-step budget (default: the preset's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="replace a field of the preset (repeatable; a Python literal), e.g. --set num_simulations=8; "
                             "the fields are the preset's (docs/presets.md)")
    parser.add_argument("--max-train-iter", type=int, default=int(1e10), help="stop after this many learner iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exp-name", help="experiment directory (default: data_scalezero/<benchmark>_<preset>_...)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    parser.add_argument("--dense", action="store_true", help="dense FFN instead of MoE: the multi-task UniZero baseline")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the preset's; 1 on small CPU presets, "
                        "where the env processes and MCTS compete with torch's thread pool)")
    parser.add_argument("--dps", action="store_true",
                        help="Dynamic Parameter Scaling: staged LoRA adapters added as tasks get solved; solved tasks stop")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --exp-name")
    parser.add_argument("--overwrite", action="store_true", help="start over in an --exp-name that holds a run (deletes it)")
    parser.add_argument("--save-replay-buffer", action="store_true", help="also checkpoint the replay buffers")
    parser.add_argument("--amp", choices=["off", "bf16"], default="off",
                        help="bf16 autocast of the learn step and inference (for GPUs; default off)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the world model (eager, with a warning, where it cannot compile)")
    parser.add_argument("--no-initial-eval", dest="initial_eval", action="store_false",
                        help="skip the baseline evaluation before training")
    parser.add_argument("--verbose", action="store_true", help="show lightzero / ding / gym output and warnings too")
    parser.add_argument("--init-from", metavar="CKPT", help="start from a multi-task checkpoint (file, checkpoint or "
                        "experiment directory); shared weights are loaded, tasks it trained keep their heads")
    parser.add_argument("--init-heads-from", metavar="GAME", help="with --init-from: new tasks start from this trained "
                        "task's heads (default: fresh heads)")
    parser.add_argument("--finetune", choices=sorted(FINETUNE_MODES), default="full",
                        help="with --init-from: train everything, or LoRA adapters (and heads) on a frozen base")
    return parser


def parse_scalezero_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parses ``argv``; ``args.cuda`` is True/False from ``--device``, or None (auto)."""
    args = parser.parse_args(argv)
    validate_args(parser, args)  # positive budgets, no duplicate task, --exp-name not a file
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda given but no CUDA device is available")
    args.cuda = None if args.device is None else args.device == "cuda"
    if args.init_from is None and (args.init_heads_from or args.finetune != "full"):
        parser.error("--init-heads-from and --finetune need --init-from")
    return args


def run_keys(args: argparse.Namespace) -> Dict[str, Any]:
    """The :class:`~lzero_ext.entry.run_config.RunConfig` fields the common flags set: ``--amp`` / ``--compile``
    autocast and torch.compile (lzero_ext.amp)."""
    return dict(amp=args.amp, compile=args.compile)


def run_cli(args: argparse.Namespace, build_configs: Callable[..., Sequence[Any]], *,
            torch_threads: Optional[int] = None, learn_threads: Optional[int] = None, **train_kwargs: Any) -> None:
    """Builds the task configs (``build_configs(**run_keys(args))``: the zoo's ``build_configs`` takes the
    ``amp`` / ``compile`` keywords) and trains; bad input, a file-system failure (path and cause), divergence,
    a busy directory, SIGINT, SIGTERM and SIGHUP end with one line (exit status 1; 130 / 143 / 129 for the signals,
    after the final checkpoint).

    ``torch_threads`` and ``learn_threads`` (the preset's; ``--threads`` sets both) apply to CPU runs only. The run's console
    is quiet (the project's lines and the bar) unless ``--verbose``: see ``run_logging.run_console``."""
    exit_on_signals_outside_training()
    threads = args.threads or torch_threads
    on_cpu = not (args.cuda or (args.cuda is None and torch.cuda.is_available()))
    if threads and on_cpu:
        torch.set_num_threads(threads)
    learn_threads = (args.threads or learn_threads) if on_cpu else None
    from lzero_ext.checkpoint import CheckpointError
    from lzero_ext.divergence import DivergenceError
    from lzero_ext.entry.run_lock import RunLockError
    from lzero_ext.entry.run_signals import RunInterrupted
    from lzero_ext.entry.train_scalezero import train_scalezero

    with run_console(verbose=args.verbose) as bar_stream:
        try:
            init_from = None if args.init_from is None else FinetuneSpec(args.init_from, heads_from=args.init_heads_from,
                                                                         mode=args.finetune)
            configs = build_configs(**run_keys(args))
            train_scalezero(configs, seed=args.seed, max_train_iter=args.max_train_iter, resume=args.resume,
                            save_replay_buffer=args.save_replay_buffer, overwrite=args.overwrite,
                            run_labels={"preset": args.preset, **({"set": sorted(args.set)} if args.set else {})},
                            initial_eval=args.initial_eval,
                            init_from=init_from, bar_stream=bar_stream, learn_threads=learn_threads, **train_kwargs)
        except (ValueError, CheckpointError, OSError, RunLockError, DivergenceError,
                RunInterrupted, KeyboardInterrupt) as error:  # one clear line (rank 0 only), no traceback
            raise exit_for(error) from None
    ignore_signals_after_the_run()


def ignore_signals_after_the_run() -> None:
    """The run has finished and saved: a signal while the process shuts down changes nothing. Ignored rather than
    handled, because Python puts the default actions back while it finalises, and a SIGTERM / SIGHUP there would
    kill the finished process without a line (exit -15 / -1)."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)


def exit_on_signals_outside_training() -> None:
    """SIGINT/SIGTERM/SIGHUP outside the run's own handlers (while it starts, or after it finished and saved, during
    the process's shutdown) end the process with one line and 130 / 143 / 129, instead of a silent death or a
    traceback.
    The run guard installs its handlers over these and puts them back when the run ends."""
    def handler(signum: int, _frame: Any) -> None:
        sys.stderr.write(f"interrupted by {signal.Signals(signum).name} outside training: no learner step "
                         f"since the last checkpoint to save\n")
        os._exit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, handler)
