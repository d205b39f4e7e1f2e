"""Does a zoo preset learn? Its runs over several seeds, each game judged by the learned rule.

``python -m lzero_ext.bench preset_learning --suite minatar --preset cpu --seeds 0 1 2 [--dense | --dps | --unizero]``

Every seed is the preset's normal training run (the zoo config's ``build_configs`` and ``train_scalezero``, exactly
what ``python -m zoo.minatar.config.scalezero_minatar_multitask_config --preset cpu --seed S`` runs) in
``<out>/runs/seed<S>``; a run with a ``summary.json`` is reused, so an interrupted benchmark continues where it
stopped. ``--unizero`` is the single-task baseline instead: lightzero's own UniZero (its ``train_unizero_segment``
entry, collector, evaluator and learner), one model per game at the preset's sizes, simulations, replay buffer and
epsilon schedule, the games one after another (:func:`run_seed_lightzero`). ``--set KEY=VALUE`` replaces a preset
field as the zoo config's ``--set`` does (a settings search: ``--set num_simulations=8``); the variant's name carries it.
Each game is judged by :func:`~lzero_ext.bench.learning_report.learned`: the final evaluations (at least 10
episodes per seed) of at least two seeds, their 95% Student-t interval above both the random policy's and the best
constant action's return. Writes ``results.json`` (per game: final return, episodes and curve per seed, the
interval, the verdict; per run: wall seconds, env steps per second, evaluation and collection shares),
``table.txt`` and ``learning_curves.png`` into ``--out``. The last line is
``preset learning: <suite> <preset> <variant>, learned A of N games (95% CI over S seeds), X env steps/s, Y min per run``
(X: over the training loop, Y: the whole run; means over the runs made in this call, or over the reused runs'
recorded training loops when none was made).
"""
import argparse
import importlib
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from tabulate import tabulate

from lzero_ext.bench.learning_configs import GRID_UNIZERO_MODEL, lightzero_arm_config
from lzero_ext.bench.learning_report import Verdict, learned, plot_curves
from lzero_ext.checkpoint import atomic_write
from lzero_ext.entry.suite import override_preset, overrides_suffix, parse_overrides

ZOO_MODULES = {"minatar": "zoo.minatar.config.scalezero_minatar_multitask_config"}
# suite -> the model lightzero's UniZero takes in the ``--unizero`` arm (its observations as the zoo config's)
LIGHTZERO_MODELS = {"minatar": GRID_UNIZERO_MODEL}


def minatar_bars(game: str) -> Tuple[float, float]:
    """(random, best constant action) returns of a MinAtar game (``lzero_ext.envs.minatar_scores``)."""
    from lzero_ext.envs.minatar_scores import CONSTANT_ACTION_RETURNS, RANDOM_RETURNS

    return RANDOM_RETURNS[game], CONSTANT_ACTION_RETURNS[game].mean_return


# suite -> the (random, best constant action) returns of its games: the bars of the learned rule
BARS: Dict[str, Callable[[str], Tuple[float, float]]] = {"minatar": minatar_bars}


def run_seed(suite: str, preset: str, seed: int, exp: Path, max_env_step: Optional[int], *, dense: bool = False,
             dps: bool = False, overrides: Optional[Mapping[str, Any]] = None) -> Tuple[Dict[str, Any], Optional[float]]:
    """One training run's summary (reused when its directory already holds one) and the seconds the whole run took
    here, trainer build and final evaluation included (None: reused)."""
    if (exp / "summary.json").is_file():
        return json.loads((exp / "summary.json").read_text()), None
    from lzero_ext.entry.train_scalezero import train_scalezero

    module = importlib.import_module(ZOO_MODULES[suite])
    configs = module.build_configs(preset, exp_name=str(exp), cuda=False, dense=dense, dps=dps, overrides=overrides)
    settings = override_preset(module.PRESETS[preset], overrides or {})
    threads = settings.torch_threads
    if threads:
        import torch

        torch.set_num_threads(threads)
    budget = max_env_step or settings.max_env_step
    start = time.monotonic()
    train_scalezero(configs, seed=seed, max_env_step=budget, exp_name=str(exp), overwrite=True,
                    learn_threads=settings.learn_threads)
    seconds = time.monotonic() - start
    print(f"seed {seed}: {seconds:.0f} s", flush=True)
    return json.loads((exp / "summary.json").read_text()), seconds


def lightzero_eval_freq(policy: Mapping[str, Any], budget: int, fraction: float = 0.25) -> int:
    """Learner iterations between lightzero's own evaluations so that they fall near every ``fraction`` of the env-step
    budget: lightzero evaluates by iterations, ``update_per_collect`` per round of full segments (games whose episodes
    end mid-segment train more iterations per env step and so evaluate a little more often), else ``replay_ratio``
    per env step."""
    if policy.get("update_per_collect"):
        per_env_step = policy.update_per_collect / (policy.collector_env_num * policy.game_segment_length)
    else:
        per_env_step = policy.replay_ratio
    return max(1, round(fraction * budget * per_env_step))


def run_seed_lightzero(suite: str, preset: str, seed: int, exp: Path, max_env_step: Optional[int],
                       overrides: Optional[Mapping[str, Any]] = None) -> Tuple[Dict[str, Any], Optional[float]]:
    """The single-task baseline for one seed: lightzero's UniZero trained on each game of the preset alone, at the
    preset's settings, with the multi-task trainer's final evaluation. Returns a summary shaped like the trainer's
    (``tasks`` with ``eval_return``, ``eval_episodes`` and ``history``; ``extra.wall_seconds``: the games' training
    summed) and the seconds this call took (None: reused). Each finished game is kept in ``<exp>/<game>.json`` and
    reused."""
    if (exp / "summary.json").is_file():
        return json.loads((exp / "summary.json").read_text()), None
    from lzero_ext.bench.learning_runs import quiet_run, train_lightzero_unizero

    module = importlib.import_module(ZOO_MODULES[suite])
    settings = override_preset(module.PRESETS[preset], overrides or {})
    budget = max_env_step or settings.max_env_step
    exp.mkdir(parents=True, exist_ok=True)
    start, rows = time.monotonic(), []
    for game in settings.tasks:
        done = exp / f"{game}.json"
        if not done.is_file():
            ((main, create),) = module.build_configs(preset, exp_name=game, cuda=False, dense=True,  # under <exp>
                                                     overrides=overrides, **{module.SUITE.task_keyword: [game]})
            main, create = lightzero_arm_config((main, create))
            main.policy.model.update(LIGHTZERO_MODELS[suite])
            main.policy.eval_freq = lightzero_eval_freq(main.policy, budget)
            game_start = time.monotonic()
            with quiet_run(str(exp), game, threads=settings.torch_threads or 1):
                trained = train_lightzero_unizero((main, create), seed=seed, max_env_step=budget)
            seconds = time.monotonic() - game_start
            print(f"seed {seed} {game}: {seconds:.0f} s, final return {trained.history[-1][1]:.2f}", flush=True)
            row = dict(name=game, eval_return=trained.history[-1][1], eval_episodes=trained.final_episodes,
                       history=trained.history, env_steps=trained.env_steps, train_iter=trained.train_iter,
                       seconds=seconds)
            atomic_write(done, lambda f, row=row: f.write(json.dumps(row).encode()))
        rows.append(json.loads(done.read_text()))
    summary = {"tasks": rows, "total_env_steps": sum(row["env_steps"] for row in rows),
               "extra": {"wall_seconds": sum(row["seconds"] for row in rows),
                         "arm": "lightzero UniZero (train_unizero_segment), one model per game"}}
    atomic_write(exp / "summary.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    return summary, time.monotonic() - start


def run_figures(summary: Mapping[str, Any]) -> Dict[str, Optional[float]]:
    """Wall seconds of the training loop (``summary.json``: from the first evaluation to the summary), env steps per
    second over all games in it, and the evaluation and collection shares of it."""
    extra = summary.get("extra", {})
    wall = extra.get("wall_seconds")
    phases = extra.get("phase_seconds", {})
    share = (lambda name: phases[name] / wall if wall and name in phases else None)
    return {"wall_seconds": wall, "env_steps_per_s": summary["total_env_steps"] / wall if wall else None,
            "eval_share": share("eval"), "collect_share": share("collect")}


def run_diagnostics(summary: Mapping[str, Any]) -> Dict[str, Any]:
    """A multi-task run's diagnostics, each averaged over the run's records (``summary.json``'s ``diagnostics``):
    gradient conflict on the shared transformer (mean cosine of per-task gradients, share of negative pairs), dormant
    ratio, and per game the routers' expert-usage entropy and busiest expert's share (MoE); with DPS, the env steps it
    used and the games it solved. Empty for a run without them (lightzero's single-task arm)."""
    diagnostics = summary.get("diagnostics") or {}
    mean = (lambda key: diagnostics[key]["mean"] if key in diagnostics else None)
    out: Dict[str, Any] = {}
    if diagnostics:
        out.update(grad_cos_mean=mean("grad_cos_mean"), grad_neg_frac=mean("grad_neg_frac"),
                   dormant_ratio=mean("dormant_ratio"))
        names = {task["task_id"]: task["name"] for task in summary["tasks"] if "task_id" in task}
        for key in ("expert_entropy", "expert_max_share"):
            per_game = {name: mean(f"{key}/task{task_id}") for task_id, name in names.items()}
            if any(v is not None for v in per_game.values()):
                out[key] = per_game
    if summary.get("dps"):
        dps = summary["dps"]
        out["dps"] = dict(solved=dps["solved"], stage=dps["stage"], env_steps=dps["env_steps"],
                          total_env_steps=dps["total_env_steps"])
    return out


def judge(summaries: Mapping[int, Mapping[str, Any]], bars: Callable[[str], Tuple[float, float]]
          ) -> Dict[str, Dict[str, Any]]:
    """Per game: every seed's final return, episode count and curve, and its :class:`Verdict`."""
    seeds = sorted(summaries)
    names = [task["name"] for task in summaries[seeds[0]]["tasks"]]
    out: Dict[str, Dict[str, Any]] = {}
    for name in names:
        rows = {seed: next(t for t in summaries[seed]["tasks"] if t["name"] == name) for seed in seeds}
        random_return, constant_return = bars(name)
        verdict = learned([rows[s]["eval_return"] for s in seeds], [rows[s].get("eval_episodes") for s in seeds],
                          random_return, constant_return)
        out[name] = {"finals": {s: rows[s]["eval_return"] for s in seeds},
                     "episodes": {s: rows[s].get("eval_episodes") for s in seeds},
                     "curves": {s: rows[s]["history"] for s in seeds},
                     "random": random_return, "best_constant": constant_return, "verdict": verdict}
    return out


def report_tables(games: Mapping[str, Mapping[str, Any]], figures: Mapping[int, Mapping[str, Any]],
                  seeds: List[int]) -> Tuple[str, str]:
    """The report's two tables: per game every seed's final return, the mean and the verdict; per run its times,
    speed, shares, gradient conflict, dormant ratio and env steps."""
    rows = [[name] + [f"{game['finals'][s]:.2f} ({game['episodes'][s] or '?'})" for s in seeds]
            + [_fmt(game["verdict"].mean), game["verdict"].cell()] for name, game in games.items()]
    table = tabulate(rows, headers=["game"] + [f"seed {s}: final (episodes)" for s in seeds]
                     + ["mean", "learned: 95% CI > max(random, best constant)"], disable_numparse=True)
    minutes = (lambda seconds: seconds and seconds / 60)
    diag = (lambda s, key: figures[s]["diagnostics"].get(key))
    run_rows = [[s, *(_fmt(v) for v in (
        minutes(figures[s]["run_seconds"]), minutes(figures[s]["wall_seconds"]), figures[s]["env_steps_per_s"],
        figures[s]["eval_share"], figures[s]["collect_share"], diag(s, "grad_cos_mean"), diag(s, "grad_neg_frac"))),
        "-" if diag(s, "dormant_ratio") is None else f"{diag(s, 'dormant_ratio'):.1e}",
        figures[s]["env_steps"]] for s in seeds]
    runs_table = tabulate(run_rows, headers=["seed", "whole run min", "training loop min", "env steps/s",
                                             "eval share", "collect share", "grad cos", "grad < 0 share",
                                             "dormant ratio", "env steps used"], disable_numparse=True)
    return table, runs_table


def _plain(value: Any) -> Any:
    """numpy scalars (a verdict's comparisons) as plain Python numbers for JSON."""
    return value.item() if hasattr(value, "item") else str(value)


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def _mean(values: List[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted(ZOO_MODULES), default="minatar",
                        help="a suite with measured random and constant-action returns")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-env-step", type=int, help="per-game budget (default: the preset's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="replace a preset field, as the zoo config's --set (repeatable), e.g. --set num_simulations=8; "
                             "the variant's name and default output directory say so")
    parser.add_argument("--dense", action="store_true", help="dense FFN instead of MoE (the multi-task UniZero arm)")
    parser.add_argument("--dps", action="store_true", help="Dynamic Parameter Scaling with the suite's targets")
    parser.add_argument("--unizero", action="store_true",
                        help="the single-task baseline: lightzero's own UniZero, one model per game, at the preset's settings")
    parser.add_argument("--out", type=Path, help="output directory (default data_scalezero/preset_learning_<suite>_"
                                                  "<preset>)")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}")
    module = importlib.import_module(ZOO_MODULES[args.suite])
    if args.preset not in module.PRESETS:
        parser.error(f"unknown preset {args.preset!r} of {args.suite}; choose from {sorted(module.PRESETS)}")
    if args.unizero and (args.dense or args.dps):
        parser.error("--unizero is lightzero's single-task UniZero: it takes neither --dense nor --dps")
    try:
        overrides = parse_overrides(args.set)
        settings = override_preset(module.PRESETS[args.preset], overrides)
    except ValueError as error:
        parser.error(str(error))
    variant = ("unizero" if args.unizero else ("dense" if args.dense else "moe") + ("_dps" if args.dps else "")) \
        + overrides_suffix(overrides)
    out = args.out or Path(f"data_scalezero/preset_learning_{args.suite}_{args.preset}_{variant}")

    summaries, run_seconds = {}, {}
    for seed in args.seeds:
        exp = out / "runs" / f"seed{seed}"
        print(f"seed {seed}: {'reusing' if (exp / 'summary.json').is_file() else 'training'} {exp}", flush=True)
        if args.unizero:
            summaries[seed], run_seconds[seed] = run_seed_lightzero(args.suite, args.preset, seed, exp, args.max_env_step,
                                                                    overrides)
        else:
            summaries[seed], run_seconds[seed] = run_seed(args.suite, args.preset, seed, exp, args.max_env_step,
                                                          dense=args.dense, dps=args.dps, overrides=overrides)
    made = [seed for seed in args.seeds if run_seconds[seed] is not None]
    games = judge(summaries, BARS[args.suite])
    figures = {seed: dict(run_figures(summary), run_seconds=run_seconds[seed], env_steps=summary["total_env_steps"],
                          diagnostics=run_diagnostics(summary))
               for seed, summary in summaries.items()}
    verdicts: Dict[str, Verdict] = {name: game["verdict"] for name, game in games.items()}
    table, runs_table = report_tables(games, figures, args.seeds)
    out.mkdir(parents=True, exist_ok=True)
    results = {"suite": args.suite, "preset": args.preset, "variant": variant, "overrides": overrides,
               "seeds": args.seeds, "runs": figures,
               "games": {name: dict(game, verdict=vars(verdicts[name])) for name, game in games.items()}}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_plain) + "\n")
    (out / "table.txt").write_text(table + "\n\n" + runs_table + "\n")
    curves = {"preset": {name: {s: [tuple(p) for p in game["curves"][s]] for s in args.seeds}
                         for name, game in games.items()}}
    budget = args.max_env_step or settings.max_env_step
    plot_curves(out / "learning_curves.png", curves, budget=budget,
                arm_labels={"preset": f"{args.preset} preset ({variant})"},
                title=f"{args.suite} {args.preset} ({variant}): {len(args.seeds)} seed(s)",
                random_returns={name: max(game["random"], game["best_constant"]) for name, game in games.items()},
                random_label="max(random, best constant action)")
    print(table)
    print(runs_table)
    made_figures = [figures[s] for s in made] or list(figures.values())
    rate = _mean([f["env_steps_per_s"] for f in made_figures])
    wall = _mean([f["run_seconds"] or f["wall_seconds"] for f in made_figures])
    passed = sum(v.passed for v in verdicts.values())
    print(f"preset learning: {args.suite} {args.preset} {variant}, learned {passed} of {len(verdicts)} games (95% CI over "
          f"{len(args.seeds)} seeds), {'-' if rate is None else f'{rate:.1f}'} env steps/s, "
          f"{'-' if wall is None else f'{wall / 60:.1f}'} min per run")


if __name__ == "__main__":
    main()
