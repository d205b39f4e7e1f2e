"""Does one model over every domain learn as well as one model per domain? The multidomain preset's tasks trained
together and, at the same sizes and env steps per task, one run per domain.

``python -m lzero_ext.bench multidomain_learning --preset cpu --seeds 0 1 --out docs/results/multidomain_cpu``

Every (side, seed) run is a normal training run (``train_scalezero``) in ``<out>/runs/<side>_seed<s>``; a run with
a ``summary.json`` is reused, so an interrupted benchmark continues where it stopped. Writes ``results.json`` (per
task and side: final returns per seed, mean and 95% t-interval; the runs' cross-domain diagnostics),
``table.txt`` and ``learning_curves.png`` into ``--out``. The last line is
``multidomain learning: N tasks, mixed above per-domain on A, below on B, overlapping on C (95% CI over S seeds)``.
"""
import argparse
import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from tabulate import tabulate

from lzero_ext.bench.learning_report import plot_curves, t_interval

SIDES = ("mixed", "per_domain")


def run(tasks: Sequence[str], preset: str, seed: int, exp: Path, max_env_step: Optional[int]) -> Dict[str, Any]:
    """One training run's summary (reused when its directory already holds one)."""
    if (exp / "summary.json").is_file():
        return json.loads((exp / "summary.json").read_text())
    from lzero_ext.entry.train_scalezero import train_scalezero
    from zoo.multidomain.config.scalezero_multidomain_config import PRESETS, build_configs

    configs = build_configs(preset, tasks=list(tasks), exp_name=str(exp), cuda=False)
    train_scalezero(configs, seed=seed, max_env_step=max_env_step or PRESETS[preset].max_env_step, exp_name=str(exp),
                    checkpoint_freq=10 ** 9, progress=False, overwrite=True)
    return json.loads((exp / "summary.json").read_text())


def compare(summaries: Dict[str, Dict[int, List[Dict[str, Any]]]], seeds: Sequence[int]) -> Dict[str, Any]:
    """Per task: each side's final returns per seed, mean and interval, and which side is ahead (CIs apart)."""
    rows = {row["name"]: row for row in summaries["mixed"][seeds[0]][0]["tasks"]}
    out: Dict[str, Any] = {}
    for name, row in rows.items():
        entry: Dict[str, Any] = {"domain": row["domain"]}
        for side in SIDES:
            finals = [task["eval_return"] for summary in (s for seed in seeds for s in summaries[side][seed])
                      for task in summary["tasks"] if task["name"] == name]
            low, high = t_interval(finals)
            entry[side] = {"finals": finals, "mean": statistics.fmean(finals), "ci95": [low, high]}
        mixed, alone = entry["mixed"]["ci95"], entry["per_domain"]["ci95"]
        entry["verdict"] = ("n/a" if None in mixed + alone else "mixed above" if mixed[0] > alone[1]
                            else "mixed below" if mixed[1] < alone[0] else "overlapping")
        out[name] = entry
    return out


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--tasks", nargs="+", help="<domain>:<name> tasks (default: the preset's)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-env-step", type=int, help="per-task budget (default: the preset's)")
    parser.add_argument("--out", type=Path, default=Path("data_scalezero/multidomain_learning"))
    args = parser.parse_args(argv)

    import lzero_ext.registry  # noqa: F401  (registers envs, models, policies)
    from zoo.multidomain.config.scalezero_multidomain_config import PRESETS, tasks_by_domain

    tasks = list(args.tasks or PRESETS[args.preset].tasks)
    domains = tasks_by_domain(tasks)
    summaries: Dict[str, Dict[int, List[Dict[str, Any]]]] = {side: {} for side in SIDES}
    for seed in args.seeds:
        runs = args.out / "runs"
        summaries["mixed"][seed] = [run(tasks, args.preset, seed, runs / f"mixed_seed{seed}", args.max_env_step)]
        summaries["per_domain"][seed] = [run(domain_tasks, args.preset, seed, runs / f"{domain}_seed{seed}",
                                             args.max_env_step) for domain, domain_tasks in domains.items()]
    results = compare(summaries, args.seeds)
    diagnostics = {f"{side}_seed{seed}/{i}": summary.get("domain_diagnostics") for side in SIDES for seed in args.seeds
                   for i, summary in enumerate(summaries[side][seed])}
    rows = [[name, entry["domain"]] + [f"{entry[side]['mean']:.2f} [{_num(entry[side]['ci95'][0])}, "
                                       f"{_num(entry[side]['ci95'][1])}]" for side in SIDES] + [entry["verdict"]]
            for name, entry in results.items()]
    table = tabulate(rows, headers=["task", "domain", "mixed: mean [95% CI]", "per domain: mean [95% CI]", "verdict"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"preset": args.preset, "seeds": args.seeds, "tasks": results,
                                                      "domain_diagnostics": diagnostics}, indent=2) + "\n")
    (args.out / "table.txt").write_text(table + "\n")
    curves = {side: {name: {seed: [tuple(p) for s in summaries[side][seed] for t in s["tasks"] if t["name"] == name
                                   for p in t["history"]] for seed in args.seeds} for name in results}
              for side in SIDES}
    budget = args.max_env_step or PRESETS[args.preset].max_env_step
    plot_curves(args.out / "learning_curves.png", curves, budget=budget,
                arm_labels={"mixed": "one model, every domain", "per_domain": "one model per domain"},
                title=f"multidomain {args.preset}: {len(args.seeds)} seed(s)")
    print(table)
    counts = {v: sum(e["verdict"] == v for e in results.values()) for v in ("mixed above", "mixed below", "overlapping")}
    print(f"multidomain learning: {len(results)} tasks, mixed above per-domain on {counts['mixed above']}, below on "
          f"{counts['mixed below']}, overlapping on {counts['overlapping']} (95% CI over {len(args.seeds)} seeds)")


def _num(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}"


if __name__ == "__main__":
    main()
