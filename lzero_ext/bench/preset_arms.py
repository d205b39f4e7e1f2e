"""The four arms of the learning benchmark at a zoo preset, side by side, from ``preset_learning``'s reports.

``python -m lzero_ext.bench preset_arms --suite minatar --preset cpu --out docs/results/minatar_cpu_arms``

Arms (each one ``preset_learning`` report, by default ``data_scalezero/preset_learning_<suite>_<preset>_<variant>``;
``--report ARM=DIR`` points an arm elsewhere, ``--report NAME=DIR`` adds another variant, e.g. a run of a settings
search made with ``preset_learning --set``, and ``--only-reports`` shows the given reports alone):

* (a) ``unizero``: lightzero's own UniZero, one model per game (``preset_learning --unizero``);
* (b) ``dense``: one multi-task model with dense FFNs (``--dense``);
* (c) ``moe``: ScaleZero, MoE FFNs (the preset as it ships);
* (d) ``moe_dps``: ScaleZero with Dynamic Parameter Scaling (``--dps``).

Every arm is judged game by game by the same rule (the 95% Student-t interval over seeds of the final evaluation's
return, at least 10 episodes per seed, above both the random policy's and the best constant action's return). Writes
``results.json`` (per game and arm: mean, interval, verdict; per arm: games learned, speed, env steps used and their
share of arm (c)'s (the paper's DPS comparison), gradient conflict, dormant ratio, expert usage), ``table.txt`` and
``learning_curves.png``. An arm without a report is left out and named. The last line is
``preset arms: <suite> <preset>, games learned (a) A, (b) B, (c) C, (d) D of N (95% CI over S seeds)``
(``-`` for an arm without a report, other variants by name; S: the seeds of the arms, or their range).
"""
import argparse
import importlib
import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from tabulate import tabulate

from lzero_ext.bench.learning_report import plot_curves
from lzero_ext.bench.preset_learning import ZOO_MODULES

ARMS: Dict[str, str] = {
    "unizero": "(a) lightzero UniZero, one model per game",
    "dense": "(b) multi-task, dense FFN",
    "moe": "(c) ScaleZero, MoE FFN",
    "moe_dps": "(d) ScaleZero, MoE + DPS",
}


def _mean(values: List[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _fmt(value: Optional[float], spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def arm_figures(report: Mapping[str, Any], budget_per_game: int) -> Dict[str, Any]:
    """One arm's row: games learned, speed, env steps used over all games (with DPS, the share of the full budget it
    saved), gradient conflict and dormant ratio (means over seeds), and expert usage per game."""
    runs = list(report["runs"].values())
    diagnostics = [run.get("diagnostics", {}) for run in runs]
    games = report["games"]
    used = [run.get("env_steps") for run in runs]
    dps = any("dps" in d for d in diagnostics)
    expert = {key: {game: _mean([d.get(key, {}).get(game) for d in diagnostics]) for game in games}
              for key in ("expert_entropy", "expert_max_share")}
    return {
        "seeds": report["seeds"],
        "learned": sorted(name for name, game in games.items() if game["verdict"]["passed"]),
        "env_steps_per_s": _mean([run["env_steps_per_s"] for run in runs]),
        "minutes_per_run": _mean([(run.get("run_seconds") or run["wall_seconds"]) / 60 for run in runs
                                  if run.get("run_seconds") or run.get("wall_seconds")]),
        "env_steps_used": _mean(used),
        # DPS stops solved games: the share of the full budget (every game's) it did not spend
        "dps_env_step_saving": 1 - _mean(used) / (budget_per_game * len(games)) if dps and None not in used else None,
        "dps_solved": [d["dps"]["solved"] for d in diagnostics if "dps" in d] or None,
        "grad_cos_mean": _mean([d.get("grad_cos_mean") for d in diagnostics]),
        "grad_neg_frac": _mean([d.get("grad_neg_frac") for d in diagnostics]),
        "dormant_ratio": _mean([d.get("dormant_ratio") for d in diagnostics]),
        **{key: per_game for key, per_game in expert.items() if any(v is not None for v in per_game.values())},
    }


def _seeds_text(reports: Mapping[str, Mapping[str, Any]]) -> str:
    counts = sorted({len(report["seeds"]) for report in reports.values()})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="minatar")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--report", action="append", default=[], metavar="NAME=DIR",
                        help=f"a preset_learning output directory: one of the arms {sorted(ARMS)}, or another variant "
                             "(a settings search: --report sims8=DIR) shown after them under its NAME")
    parser.add_argument("--only-reports", action="store_true",
                        help="show only the --report directories, not the four arms' default ones")
    parser.add_argument("--out", type=Path, help="output directory (default data_scalezero/preset_arms_<suite>_<preset>)")
    args = parser.parse_args(argv)
    dirs = {} if args.only_reports else {arm: Path(f"data_scalezero/preset_learning_{args.suite}_{args.preset}_{arm}")
                                         for arm in ARMS}
    for item in args.report:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--report takes NAME=DIR, got {item!r}")
        dirs[name] = Path(path)
    labels = {name: ARMS.get(name, name) for name in dirs}
    reports = {arm: json.loads((path / "results.json").read_text()) for arm, path in dirs.items()
               if (path / "results.json").is_file()}
    missing = [arm for arm in dirs if arm not in reports]
    if not reports:
        parser.error(f"no arm has a report: looked for results.json in {[str(p) for p in dirs.values()]}")
    for arm, report in reports.items():
        if (report["suite"], report["preset"]) != (args.suite, args.preset):
            parser.error(f"{dirs[arm]} reports {report['suite']} {report['preset']}, not {args.suite} {args.preset}")
    budget = importlib.import_module(ZOO_MODULES[args.suite]).PRESETS[args.preset].max_env_step
    games = list(next(iter(reports.values()))["games"])
    figures = {arm: arm_figures(report, budget) for arm, report in reports.items()}
    moe = figures.get("moe", {}).get("env_steps_used")
    for row in figures.values():  # the paper's DPS comparison: env steps against ScaleZero without DPS, arm (c)
        row["env_steps_vs_moe"] = row["env_steps_used"] / moe if moe and row["env_steps_used"] is not None else None

    game_rows = []
    for name in games:
        verdicts = {arm: report["games"][name]["verdict"] for arm, report in reports.items()}
        bar = next(iter(verdicts.values()))["bar"]
        game_rows.append([name, f"{bar:.2f}"] + [
            "-" if arm not in verdicts else (
                f"{_fmt(verdicts[arm]['mean'])} [{_fmt(verdicts[arm]['ci_low'])}, {_fmt(verdicts[arm]['ci_high'])}]"
                f" {'yes' if verdicts[arm]['passed'] else 'no'}") for arm in dirs])
    game_table = tabulate(game_rows, headers=["game", "bar"] + [labels[arm] for arm in dirs], disable_numparse=True)
    arm_rows = [[labels[arm], len(figures[arm]["seeds"]), f"{len(figures[arm]['learned'])} of {len(games)}",
                 _fmt(figures[arm]["env_steps_per_s"], ".1f"), _fmt(figures[arm]["minutes_per_run"], ".1f"),
                 _fmt(figures[arm]["env_steps_used"], ".0f"), _fmt(figures[arm]["env_steps_vs_moe"], ".1%"),
                 _fmt(figures[arm]["dps_env_step_saving"], ".1%"),
                 _fmt(figures[arm]["grad_cos_mean"], ".3f"), _fmt(figures[arm]["grad_neg_frac"]),
                 _fmt(figures[arm]["dormant_ratio"], ".1e")] for arm in dirs if arm in figures]
    arm_table = tabulate(arm_rows, headers=["arm", "seeds", "learned", "env steps/s", "min per run",
                                            "env steps used", "vs (c)", "DPS saving", "grad cos", "grad < 0 share",
                                            "dormant ratio"], disable_numparse=True)
    expert_arms = [arm for arm in dirs if arm in figures and "expert_entropy" in figures[arm]]
    expert_table = tabulate(
        [[name] + [f"{_fmt(figures[arm]['expert_entropy'][name])} / {_fmt(figures[arm]['expert_max_share'][name])}"
                   for arm in expert_arms] for name in games],
        headers=["game"] + [f"{labels[arm]}: entropy / top share" for arm in expert_arms], disable_numparse=True)
    note = f"no report for {', '.join(labels[arm] for arm in missing)}" if missing else "every report found"
    text = "\n\n".join([f"{args.suite} {args.preset} preset, final evaluations: mean [95% CI over seeds] learned "
                        f"(CI above bar = max(random, best constant action)); {note}", game_table, arm_table,
                        "expert usage (routers' normalised entropy / busiest expert's share, means over the run)",
                        expert_table]) + "\n"

    out = args.out or Path(f"data_scalezero/preset_arms_{args.suite}_{args.preset}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({
        "suite": args.suite, "preset": args.preset, "budget_per_game": budget, "missing": missing,
        "reports": {arm: str(dirs[arm]) for arm in reports}, "arms": figures,
        "games": {name: {arm: report["games"][name]["verdict"] for arm, report in reports.items()} for name in games},
    }, indent=2) + "\n")
    (out / "table.txt").write_text(text)
    first = next(iter(reports.values()))["games"]
    curves = {arm: {name: {int(s): [tuple(p) for p in c] for s, c in report["games"][name]["curves"].items()}
                    for name in games} for arm, report in reports.items()}
    plot_curves(out / "learning_curves.png", curves, budget=budget, arm_labels=labels,
                title=f"{args.suite} {args.preset} preset: {', '.join(reports)} ({_seeds_text(reports)} seeds)",
                random_returns={name: max(first[name]["random"], first[name]["best_constant"]) for name in games},
                random_label="max(random, best constant action)")
    print(text)
    counts = ", ".join(f"{labels[arm][:3] if arm in ARMS else arm} {len(figures[arm]['learned']) if arm in figures else '-'}"
                       for arm in dirs)
    print(f"preset arms: {args.suite} {args.preset}, games learned {counts} of {len(games)} "
          f"(95% CI over {_seeds_text(reports)} seeds)")


if __name__ == "__main__":
    main()
