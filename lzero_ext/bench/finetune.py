"""Fine-tuning benchmark: env steps to a target return on a held-out task, from scratch vs from a multi-task checkpoint.

``python -m lzero_ext.bench finetune [--pretrain-steps N] [--steps N] [--mode full|lora] [--seed S] [--out DIR]``

1. Pretrain one ScaleZero model (MoE) on the learning benchmark's DMC-balance and Pendulum tasks
   (``lzero_ext.bench.learning.SUITE``) for ``--pretrain-steps`` env steps per task.
2. Train the held-out task, gymnasium CartPole-v1, for ``--steps`` env steps twice with the same seed
   and settings: from scratch, and with ``--init-from`` the pretrained checkpoint (shared transformer,
   action and position embeddings loaded; CartPole's encoder and heads fresh: its observation size differs).
   Its two actions are padded (masked) to the pretrained model's five, in both runs, so the models match.

Prints and writes (``<out>/results.json``) the eval curves, the env steps of the first evaluation at or
above the target return (150 of 200), the final return, wall time and the load average. Settings are the
learning benchmark's ``smoke`` sizes with evaluations every 20 learner steps: small enough for a 2-core CPU,
so the figures are indicative only.
"""
import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from lzero_ext.bench.common import machine_load
from lzero_ext.bench.learning import MODES, SUITE
from lzero_ext.bench.learning_configs import classic_configs
from lzero_ext.bench.learning_runs import TaskSpec
from lzero_ext.checkpoint import atomic_write

HELD_OUT: TaskSpec = SUITE[0]  # CartPole
PRETRAIN: Sequence[TaskSpec] = SUITE[1:]  # DMC-balance, Pendulum
SETTINGS = dataclasses.replace(MODES["smoke"].settings, eval_freq=20, diagnostics_freq=0)


def _configs(tasks: Sequence[TaskSpec], *, exp: str, seed: int, action_space_size: int) -> List[Any]:
    """The tasks' configs, with the discrete action space padded to ``action_space_size``."""
    return classic_configs(tasks, SETTINGS, moe=True, exp_name=exp, seed=seed, action_space_size=action_space_size)


def _train(tasks: Sequence[TaskSpec], *, exp: Path, seed: int, env_steps: int, action_space_size: int,
           init_from: Optional[Any] = None) -> Dict[str, Any]:
    from lzero_ext.entry import train_scalezero

    start = time.perf_counter()
    result = train_scalezero(_configs(tasks, exp=str(exp), seed=seed, action_space_size=action_space_size), seed=seed,
                             max_env_step=env_steps, exp_name=str(exp), checkpoint_freq=10**9, progress=False,
                             init_from=init_from)
    rows = {row["name"]: row for row in result.summary["tasks"]}
    return {"wall_s": time.perf_counter() - start, "train_iter": result.train_iter,
            "curves": {name: row["history"] for name, row in rows.items()}}


def steps_to_target(curve: Sequence[Sequence[float]], target: float) -> Optional[int]:
    """Env steps of the first evaluation at or above ``target`` (None if never)."""
    return next((int(step) for step, value in curve if value >= target), None)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-steps", type=int, default=1000, help="env steps per pretraining task")
    parser.add_argument("--steps", type=int, default=1000, help="env steps on the held-out task")
    parser.add_argument("--mode", choices=["full", "lora"], default="full", help="--finetune mode of the second run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="data_scalezero/bench_finetune", help="output directory")
    args = parser.parse_args(argv)

    from lzero_ext.entry.finetune import FinetuneSpec
    from lzero_ext.entry.run_logging import run_console

    out = Path(args.out).resolve()
    actions = max(t.num_actions for t in SUITE)
    loads = [machine_load()]
    runs: Dict[str, Dict[str, Any]] = {}
    with run_console():
        print(f"pretraining on {[t.name for t in PRETRAIN]} for {args.pretrain_steps} env steps each (load {loads[0]})")
        runs["pretrain"] = _train(PRETRAIN, exp=out / "pretrain", seed=args.seed, env_steps=args.pretrain_steps,
                                  action_space_size=actions)
        print(f"{HELD_OUT.name} from scratch for {args.steps} env steps")
        runs["scratch"] = _train([HELD_OUT], exp=out / "scratch", seed=args.seed, env_steps=args.steps,
                                 action_space_size=actions)
        print(f"{HELD_OUT.name} from the checkpoint ({args.mode}) for {args.steps} env steps")
        runs["finetune"] = _train([HELD_OUT], exp=out / f"finetune_{args.mode}", seed=args.seed, env_steps=args.steps,
                                  action_space_size=actions,
                                  init_from=FinetuneSpec(str(out / "pretrain"), mode=args.mode))
    loads.append(machine_load())
    target = HELD_OUT.target_return
    lines = [f"held-out {HELD_OUT.name}, target return {target:g}; pretrain {args.pretrain_steps} env steps x "
             f"{len(PRETRAIN)} tasks; seed {args.seed}; load {loads[0]} at start, {loads[-1]} at end"]
    for arm in ("scratch", "finetune"):
        curve = runs[arm]["curves"][HELD_OUT.env_id]
        reached = steps_to_target(curve, target)
        lines.append(f"  {arm + (' (' + args.mode + ')' if arm == 'finetune' else ''):<16} env steps to target: "
                     f"{reached if reached is not None else f'not reached in {args.steps}'}; final return "
                     f"{curve[-1][1]:.1f}; best {max(v for _, v in curve):.1f}; wall {runs[arm]['wall_s']:.0f} s")
    text = "\n".join(lines)
    print(text)
    payload = {"held_out": HELD_OUT.name, "target": target, "pretrain_tasks": [t.name for t in PRETRAIN],
               "pretrain_steps": args.pretrain_steps, "steps": args.steps, "mode": args.mode, "seed": args.seed,
               "settings": dataclasses.asdict(SETTINGS), "runs": runs, "load_average": loads, "table": text}
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(payload, indent=1).encode()))
    return payload


if __name__ == "__main__":
    main()
