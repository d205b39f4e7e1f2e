"""Learning benchmark: single-task lightzero UniZero vs one multi-task model (dense) vs ScaleZero (MoE, and MoE + DPS).

``python -m lzero_ext.bench learning [--suite classic|minatar] [--quick] [--seeds 0 1 2] [--jobs 2] [--out DIR]``

Two suites: ``classic`` (the default, below) and ``minatar`` (MinAtar's five games, :data:`MINATAR_SUITE`;
its modes in :data:`MINATAR_MODES`, its arms' configs in ``lzero_ext.bench.learning_minatar``). The
MinAtar suite runs the same four arms (arm ``moe`` with 8 experts), normalises each game from the
random policy (0) to the best return any arm reached (1), and adds the MoE arms' expert usage per
game; ``--tasks`` runs a subset (single-task runs are shared with the full set through the cache).

Full: 3 tasks x 3000 env steps x 3 seeds, 4 arms, about 45 minutes with 2 jobs on the 2-core CPU; ``--quick``:
1 seed x 1000 env steps, about 8 minutes (indicative only, and labelled so in every output).

Suite (:data:`SUITE`; vector observations and action counts differ per task, all through this
project's ``classic_control_scalezero`` env): gymnasium CartPole-v1 (obs 4, 2 actions), DMC
cartpole-balance with 3 torques (obs 5, 3 actions), gymnasium Pendulum-v1 with 5 torques (obs 3, 5
actions). Arms, with the same per-task env-step budget, seeds, transformer size (embed 64, 2 layers,
2 heads), simulations, batch per task, updates per collection round, learning rate and eval schedule:

* ``unizero``: lightzero 0.2.0's own UniZero (policy type ``unizero``, its
  ``train_unizero_segment`` entry), one model per task;
* ``dense``:   one ScaleZero model for all tasks with a dense FFN (``moe.enabled=False``);
* ``moe``:     ScaleZero with MoE FFNs: 4 routed SwiGLU experts, top-1, plus one shared expert (4
  rather than the paper's 8 at this tiny scale: 3 tasks, embed 64).
* ``dps``:     ``moe`` with Dynamic Parameter Scaling; a task stops at its target return (the
  env-steps-to-target table compares it with ``moe``).

Where the arms differ beyond the model: arm ``unizero`` is lightzero's UniZero as shipped, so its
world model keeps lightzero's SimNorm latents and group-KL latent loss where ScaleZero uses LayerNorm
latents and an MSE loss (the ScaleZero paper); the multi-task trainer keeps training the shared model
on a task whose budget is spent while other tasks still collect (at most one collection round).

Per task and arm the table gives the final eval return and the AUC (the eval return averaged over
the env-step budget) as mean ± std [min, max] over seeds, then per arm the suite mean of the score
normalised from the random policy (0) to the task's reference return (1). On MinAtar a column says whether
each game was learned: the 95% Student-t CI over seeds of the final return, from final evaluations of at
least 10 episodes, lies above both the random and the best constant-action policy
(``learning_report.learned``; docs/benchmarks.md), and the suite rows count the games learned. The
multi-task arms also report the gradient-conflict diagnostics (cosine of per-task gradients on the
shared transformer).
Writes ``results.json`` (every number, every curve), ``table.txt`` and ``learning_curves.png``
into ``--out``; each finished run is cached in ``<out>/runs/`` so that an interrupted benchmark
resumes where it stopped (``--fresh`` ignores the cache).
"""
import argparse
import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from lzero_ext.bench.baselines import baseline_returns, mean_return
from lzero_ext.bench.common import machine_load
from lzero_ext.bench.learning_minatar import MinAtarTask
from lzero_ext.bench.learning_report import (aggregate, best_returns, diagnostics_table, efficiency_table, expert_usage_table,
                                             learned_verdicts, plot_curves, results_table, target_efficiency)
from lzero_ext.bench.learning_runs import ARM_LABELS, ARMS, RunResult, RunSpec, Settings, TaskSpec, run
from lzero_ext.envs.minatar_scores import DPS_TARGETS as MINATAR_TARGETS
from lzero_ext.checkpoint import atomic_write

# Three tasks of different observation and action sizes (obs 4/5/3, actions 2/3/5), all dense-reward
# control. Reference returns (the 1 of the normalised score) are each task's maximum return (Pendulum:
# a good swing-up policy). Measured here before choosing (single-task lightzero UniZero, ~2.5k env
# steps): CartPole learns; Acrobot-v1, MountainCar-v0, FrozenLake-v1, CliffWalking-v0 (sparse) and DMC
# reacher-easy / finger-spin / cartpole-swingup showed no progress, so they are not in the suite.
# Target returns (solved, for DPS and the steps-to-target table) sit well above the random policy and
# below the reference: CartPole 150 of 200, DMC-balance 350 of 400 (single evaluations of the random policy
# reach 300), Pendulum -400 (random about -1185).
SUITE = (
    TaskSpec("CartPole", "CartPole-v1", reference_return=200.0, target_return=150.0, max_episode_steps=200),
    TaskSpec("DMC-balance", "dmc:cartpole-balance", reference_return=400.0, target_return=350.0,
             max_episode_steps=100, continuous_action_bins=3),
    TaskSpec("Pendulum", "Pendulum-v1", reference_return=-150.0, target_return=-400.0, continuous_action_bins=5),
)
DIAGNOSTIC_KEYS = ("grad_cos_mean", "grad_neg_frac", "dormant_ratio", "latent_norm")


@dataclasses.dataclass(frozen=True)
class Mode:
    """A benchmark size: tasks, seeds and settings."""

    description: str
    tasks: Sequence[TaskSpec]
    seeds: Sequence[int]
    settings: Settings


MODES: Dict[str, Mode] = {
    "full": Mode("full benchmark: 3 tasks, 3 seeds, 3000 env steps per task", SUITE, (0, 1, 2), Settings(env_steps=3000)),
    "quick": Mode("QUICK mode: 3 tasks, 1 seed, 1000 env steps per task; numbers are indicative only", SUITE, (0,),
                  Settings(env_steps=1000)),
    # Code-path check (tests): two tasks, one seed, a few hundred env steps, tiny model and search.
    "smoke": Mode("SMOKE mode: a code-path check, not a measurement", SUITE[:2], (0,),
                  Settings(env_steps=200, embed_dim=32, num_layers=1, num_heads=2, num_simulations=4, batch_size=8,
                           updates_per_round=8, collector_env_num=2, evaluator_env_num=1, eval_freq=20,
                           diagnostics_freq=5, dps_min_stage0_iters=8, dps_max_stage_iters=8, dps_rank=2,
                           dps_alpha=2.0)),
}


# MinAtar's five games, episodes capped at 500 steps (evaluations of Freeway, which never ends early, stay
# affordable). Targets (DPS, steps-to-target): lzero_ext.envs.minatar_scores.DPS_TARGETS. The normalised
# score's 1 is the best return any arm reached (no reference_return).
MINATAR_SUITE = tuple(MinAtarTask(game, target_return=MINATAR_TARGETS[game], max_episode_steps=500)
                      for game in ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders"))
MINATAR_SETTINGS = Settings(env_steps=3000, num_experts=8, eval_freq=200)  # (c): 8 routed experts, top-1, 1 shared
MINATAR_MODES: Dict[str, Mode] = {
    "full": Mode("MinAtar benchmark: 5 games, 3 seeds, 3000 env steps per game", MINATAR_SUITE, (0, 1, 2),
                 MINATAR_SETTINGS),
    "quick": Mode("QUICK MinAtar mode: 5 games, 1 seed, 1500 env steps per game; numbers are indicative only",
                  MINATAR_SUITE, (0,), dataclasses.replace(MINATAR_SETTINGS, env_steps=1500)),
    # Code-path check (tests): two games, one seed, a few dozen env steps, tiny model and search.
    "smoke": Mode("SMOKE MinAtar mode: a code-path check, not a measurement",
                  tuple(dataclasses.replace(t, max_episode_steps=20) for t in MINATAR_SUITE[1:3]), (0,),
                  Settings(env_steps=40, embed_dim=16, num_layers=1, num_heads=2, num_simulations=2, batch_size=4,
                           updates_per_round=4, collector_env_num=1, evaluator_env_num=1, game_segment_length=10,
                           num_unroll_steps=4, infer_context=2, eval_freq=4, diagnostics_freq=2, encoder_channels=4,
                           dps_min_stage0_iters=4, dps_max_stage_iters=4, dps_rank=2, dps_alpha=2.0)),
}
SUITES: Dict[str, Dict[str, Mode]] = {"classic": MODES, "minatar": MINATAR_MODES}


def random_returns(tasks: Sequence[Any], *, episodes: int = 20, seed: int = 12345) -> Dict[str, float]:
    """Mean return of the uniformly random policy (over the legal actions) per task (the 0 of the normalised score)."""
    means = {}
    for task in tasks:
        env = task.make_env()
        means[task.name] = mean_return(env, env.random_action, episodes=episodes, seed=seed)
        env.close()
    return means


def learned_baselines(tasks: Sequence[Any]) -> Optional[Dict[str, Tuple[float, float]]]:
    """(random, best constant action) returns per MinAtar task, the bar of the "learned" verdict
    (``lzero_ext.bench.baselines``); None for suites without them."""
    if not all(t.kind == "minatar" for t in tasks):
        return None
    return {t.name: baseline_returns(t.name, max_episode_steps=t.max_episode_steps,
                                     sticky_action_prob=t.sticky_action_prob) for t in tasks}


def plan_runs(tasks: Sequence[TaskSpec], seeds: Sequence[int], settings: Settings, arms: Sequence[str],
              out_dir: str, threads: int = 1) -> List[RunSpec]:
    """Seed-major order, so a partial benchmark has every arm for its first seeds."""
    specs = []
    for seed in seeds:
        for arm in arms:
            groups = [(t,) for t in tasks] if arm == "unizero" else [tuple(tasks)]
            specs += [RunSpec(arm, seed, group, settings, out_dir, threads) for group in groups]
    return specs


def _cache_path(spec: RunSpec) -> Path:
    return Path(spec.out_dir) / "runs" / f"{spec.exp_name}.json"


def _spec_key(spec: RunSpec) -> Dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(dataclasses.replace(spec, out_dir="", threads=0))))


def load_cached(spec: RunSpec) -> Optional[RunResult]:
    path = _cache_path(spec)
    if not path.exists():
        return None
    payload = json.loads(path.read_text())
    if payload.get("spec") != _spec_key(spec):
        return None
    result = payload["result"]
    result["curves"] = {name: [tuple(p) for p in curve] for name, curve in result["curves"].items()}
    return RunResult(**result)


def save_cached(spec: RunSpec, result: RunResult) -> None:
    text = json.dumps({"spec": _spec_key(spec), "result": _json_ready(dataclasses.asdict(result))}, indent=1)
    atomic_write(_cache_path(spec), lambda f: f.write(text.encode()))


def execute(specs: Sequence[RunSpec], *, jobs: int = 1, fresh: bool = False, log=print) -> Tuple[List[RunResult], int]:
    """Runs (or loads from the cache) every spec, printing progress with elapsed time and ETA; returns
    the results and how many came from the cache."""
    weights = [len(s.tasks) for s in specs]  # cost ~ env steps, i.e. tasks per run
    results: List[Optional[RunResult]] = [None if fresh else load_cached(s) for s in specs]
    todo = [i for i, r in enumerate(results) if r is None]
    if len(todo) < len(specs):
        log(f"{len(specs) - len(todo)} of {len(specs)} runs loaded from the cache in {Path(specs[0].out_dir) / 'runs'}")
    start, done_weight, total_weight = time.perf_counter(), 0, sum(weights[i] for i in todo)

    def finished(i: int, result: RunResult) -> None:
        nonlocal done_weight
        save_cached(specs[i], result)
        results[i] = result
        done_weight += weights[i]
        elapsed = time.perf_counter() - start
        eta = elapsed / done_weight * (total_weight - done_weight)
        log(f"  done {_describe(specs[i])} in {result.wall_s:.0f} s; elapsed {_hms(elapsed)}, "
            f"ETA {_hms(eta)} (load {machine_load()})")

    if jobs <= 1:
        for n, i in enumerate(todo):
            log(f"[{n + 1}/{len(todo)}] running {_describe(specs[i])} ...")
            finished(i, run(specs[i]))
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(run, specs[i]): i for i in todo}
            log(f"running {len(todo)} runs, {jobs} at a time ...")
            for future in concurrent.futures.as_completed(futures):
                finished(futures[future], future.result())
    return list(results), len(specs) - len(todo)


def _describe(spec: RunSpec) -> str:
    return f"{spec.arm} seed {spec.seed} on {', '.join(t.name for t in spec.tasks)}"


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _json_ready(obj: Any) -> Any:
    """Plain JSON types (numpy scalars -> float, tuples -> lists, non-finite floats -> None)."""
    if isinstance(obj, Mapping):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def report(results: Sequence[RunResult], *, mode_name: str, mode: Mode, arms: Sequence[str], out_dir: Path,
           randoms: Mapping[str, float], wall_s: float, loads: Sequence[str], jobs: int, threads: int,
           cached: int = 0, suite: str = "classic") -> Dict[str, Any]:
    """Prints the tables and writes ``results.json``, ``table.txt`` and ``learning_curves.png``."""
    settings, tasks = mode.settings, mode.tasks
    curves: Dict[str, Dict[str, Dict[int, Any]]] = {arm: {t.name: {} for t in tasks} for arm in arms}
    diagnostics: Dict[str, Dict[int, Any]] = {arm: {} for arm in arms if arm != "unizero"}
    env_steps: Dict[str, Dict[str, Dict[int, int]]] = {arm: {t.name: {} for t in tasks} for arm in arms}
    final_episodes: Dict[str, Dict[str, Dict[int, Optional[int]]]] = {arm: {t.name: {} for t in tasks} for arm in arms}
    for r in results:
        for task, curve in r.curves.items():
            curves[r.arm][task][r.seed] = curve
            env_steps[r.arm][task][r.seed] = r.env_steps[task]
            final_episodes[r.arm][task][r.seed] = r.final_episodes.get(task)  # None: cached before it was recorded
        if r.arm in diagnostics:
            diagnostics[r.arm][r.seed] = r.diagnostics
    best = best_returns(curves)
    # No reference return (MinAtar): the best return any arm reached; one reward point above random if none beat it.
    references = {t.name: t.reference_return if t.reference_return is not None else max(best[t.name], randoms[t.name] + 1.0)
                  for t in tasks}
    summary = aggregate(curves, budget=settings.env_steps, random_returns=randoms, reference_returns=references)
    baselines = learned_baselines(tasks)
    verdicts = None if baselines is None else learned_verdicts(summary, final_episodes, baselines)
    targets = {t.name: t.target_return for t in tasks}
    efficiency = target_efficiency(curves, env_steps, targets)
    labels = {arm: ARM_LABELS[arm] + (f" ({settings.num_experts} experts top-1 + 1 shared)" if arm == "moe" else "")
              for arm in arms}
    run_time = sum(r.wall_s for r in results)
    reused = f"; {cached} of {len(results)} runs loaded from the cache" if cached else ""
    header = (f"learning benchmark ({suite} suite), {mode.description}\n{settings.env_steps} env steps per task, seeds "
              f"{list(mode.seeds)}; wall {_hms(wall_s)} (load {loads[0]} at start, {loads[-1]} at end; "
              f"{jobs} job(s) x {threads} torch thread(s){reused}); the runs' own times sum to {_hms(run_time)}")
    text = [header, "", results_table(summary, labels, randoms, references, verdicts), "",
            "env steps to reach the target return (first evaluation at or above it; DPS stops a task there):",
            efficiency_table(efficiency, labels, targets)]
    dps_runs = {r.seed: r.dps for r in results if r.arm == "dps"}
    if dps_runs:
        text += ["", "DPS stage switches per seed: " + "; ".join(
            f"seed {seed}: " + (", ".join(f"stage {h['stage']} at iter {h['train_iter']} ({h['reason']})"
                                          for h in d.get("switches", [])) or "none") for seed, d in sorted(dps_runs.items()))]
    diag_numbers: Dict[str, Any] = {}
    if diagnostics:
        diag_text, diag_numbers = diagnostics_table(diagnostics, labels, DIAGNOSTIC_KEYS)
        text += ["", "gradient conflict on the shared transformer (per-task gradient cosine), dormant-neuron ratio and "
                 f"latent norm (every {settings.diagnostics_freq} learner steps):", diag_text]
        usage_text, usage_numbers = expert_usage_table(diagnostics, labels, [t.name for t in tasks])
        if usage_text:
            text += ["", "expert usage per task (MoE arms; normalised routing entropy, 1 = uniform, and the largest "
                     "expert's share of the task's tokens, run means):", usage_text]
            diag_numbers["expert_usage"] = usage_numbers
    table = "\n".join(text)
    print("\n" + table, flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "table.txt", lambda f: f.write((table + "\n").encode()))
    png = plot_curves(out_dir / "learning_curves.png", curves, budget=settings.env_steps, arm_labels=labels,
                      random_returns=randoms, title=f"{mode.description}: mean over seeds {list(mode.seeds)}, "
                                                    f"shaded min-max")
    payload = {
        "benchmark": "learning",
        "suite_name": suite,
        "mode": mode_name,
        "description": mode.description,
        "env_steps_per_task": settings.env_steps,
        "seeds": list(mode.seeds),
        "arms": labels,
        "suite": [dict(t.describe(), random_return=randoms[t.name], reference_used=references[t.name]) for t in tasks],
        "settings": dataclasses.asdict(settings),
        "summary": summary,
        # Per arm and game: learned = the 95% CI over seeds of the final return (final evaluations of >= 10 episodes)
        # lies above max(random, best constant action); None outside MinAtar.
        "learned": None if verdicts is None else {arm: {task: dataclasses.asdict(v) for task, v in by_task.items()}
                                                  for arm, by_task in verdicts.items()},
        "baselines": baselines,
        "targets": efficiency,
        "diagnostics": diag_numbers,
        "runs": [dataclasses.asdict(r) for r in results],
        "wall_s": wall_s,
        "runs_from_cache": cached,
        "run_time_sum_s": run_time,
        "load_average": {"start": loads[0], "end": loads[-1]},
        "jobs": jobs,
        "torch_threads": threads,
        "plot": png.name,
    }
    text = json.dumps(_json_ready(payload), indent=1, allow_nan=False)
    atomic_write(out_dir / "results.json", lambda f: f.write(text.encode()))
    print(f"\nwrote {out_dir / 'results.json'}, {out_dir / 'table.txt'}, {png}")
    return payload


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted(SUITES), default="classic",
                        help="classic control (default) or MinAtar's five games")
    parser.add_argument("--quick", action="store_const", dest="mode", const="quick", default="full",
                        help="fewer env steps and one seed (under 15 minutes)")
    parser.add_argument("--mode", choices=sorted(MODES), help="benchmark size (default full; --quick = quick)")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the mode's seeds")
    parser.add_argument("--env-steps", type=int, help="override the mode's env steps per task")
    parser.add_argument("--collect-temperature", type=float,
                        help="override the visit-count temperature of the collectors' action sampling (every arm)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--tasks", nargs="+", metavar="NAME",
                        help="only these tasks of the suite (e.g. --tasks Breakout Freeway); a multi-task run is a "
                             "different run for each task set, single-task runs are shared through the cache")
    parser.add_argument("--out", help="output directory (default data_scalezero/bench_learning_<mode>)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="runs in parallel, one process each (default: 2, or 1 on a one-core machine)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--fresh", action="store_true", help="ignore runs cached in <out>/runs")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    mode = SUITES[args.suite][args.mode]
    if args.tasks:
        names = [t.name for t in mode.tasks]
        unknown = sorted(set(args.tasks) - set(names))
        if unknown:
            parser.error(f"unknown task(s) {unknown} in the {args.suite} suite; choose from {names}")
        mode = dataclasses.replace(mode, tasks=tuple(t for t in mode.tasks if t.name in args.tasks),
                                   description=mode.description + f" (tasks {list(args.tasks)} only)")
    if args.collect_temperature is not None and args.collect_temperature <= 0:
        parser.error(f"--collect-temperature must be positive, got {args.collect_temperature}")
    if args.seeds or args.env_steps or args.collect_temperature:
        settings = dataclasses.replace(mode.settings, env_steps=args.env_steps or mode.settings.env_steps,
                                       collect_temperature=args.collect_temperature or mode.settings.collect_temperature)
        mode = dataclasses.replace(mode, seeds=tuple(args.seeds or mode.seeds), settings=settings,
                                   description=mode.description + " (overridden from the command line: seeds/env "
                                   f"steps/collect temperature {settings.collect_temperature})")
    prefix = "bench_learning" if args.suite == "classic" else f"bench_learning_{args.suite}"
    out_dir = Path(args.out or f"data_scalezero/{prefix}_{args.mode}").resolve()
    loads = [machine_load()]
    print(f"{mode.description}; {len(mode.tasks)} tasks x {mode.settings.env_steps} env steps, seeds {list(mode.seeds)}, "
          f"arms {args.arms}; output {out_dir} (load {loads[0]})", flush=True)
    randoms = random_returns(mode.tasks)
    specs = plan_runs(mode.tasks, mode.seeds, mode.settings, args.arms, str(out_dir), args.threads)
    start = time.perf_counter()
    results, cached = execute(specs, jobs=args.jobs, fresh=args.fresh)
    loads.append(machine_load())
    return report(results, mode_name=args.mode, mode=mode, arms=args.arms, out_dir=out_dir, randoms=randoms,
                  wall_s=time.perf_counter() - start, loads=loads, jobs=args.jobs, threads=args.threads, cached=cached,
                  suite=args.suite)


if __name__ == "__main__":
    main()
