"""Numbers, table and plot of the learning benchmark, from eval curves ``[(env_step, return), ...]``.

* :func:`interpolate`: a curve's return at given env steps (linear between evaluations, constant
  before the first and after the last one);
* :func:`normalized_auc`: area under that interpolated curve over ``[0, budget]`` divided by the
  budget, i.e. the return averaged over training (same units as the return);
* :func:`spread`: mean, std, min and max across seeds;
* :func:`aggregate`: per task and arm, the final return and the AUC over seeds, plus per arm the mean
  over tasks of the random-to-reference normalised score ``(R - R_random) / (R_ref - R_random)``;
* :func:`steps_to_target` / :func:`target_efficiency`: env steps until a task first reaches its target
  return, and the env steps each arm spent in all (the DPS comparison);
* :func:`best_returns`: per task the best evaluation return of any arm and seed (MinAtar's reference);
* :func:`learned`: whether a game was learned: the Student-t confidence interval over seeds of the final
  return (each from at least 10 episodes) lies above both the random and the best constant-action policy;
* :func:`expert_usage_table`: the MoE arms' routing entropy and largest expert share per task.

Example:
    >>> normalized_auc([(0, 0.0), (100, 10.0)], budget=100)
    5.0
    >>> spread([1.0, 3.0])["mean"], spread([1.0, 3.0])["std"]
    (2.0, 1.0)
"""
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from tabulate import tabulate

from lzero_ext.checkpoint import atomic_write

Curve = Sequence[Tuple[float, float]]


def _sorted_points(curve: Curve) -> Tuple[np.ndarray, np.ndarray]:
    """Finite evaluations ordered by env step; evaluations at the same step keep their order (the
    multi-task trainer evaluates a task that finished its budget again when the run ends)."""
    points = sorted(((float(s), float(r)) for s, r in curve if math.isfinite(r)), key=lambda p: p[0])
    if not points:
        raise ValueError("a curve needs at least one finite evaluation")
    steps, returns = zip(*points)
    return np.asarray(steps), np.asarray(returns)


def interpolate(curve: Curve, steps: Sequence[float]) -> np.ndarray:
    """Returns at ``steps``: linear between evaluations, the first/last return outside them.

    Example:
        >>> interpolate([(0, 0.0), (10, 1.0)], [5, 20]).tolist()
        [0.5, 1.0]
    """
    xs, ys = _sorted_points(curve)
    return np.interp(np.asarray(steps, dtype=float), xs, ys)


def normalized_auc(curve: Curve, budget: float) -> float:
    """``(1 / budget) * integral over [0, budget]`` of the interpolated curve (exact, trapezoids).

    Evaluations beyond ``budget`` (the last collection round may overshoot it) only shape the curve
    up to ``budget``.
    """
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    xs, _ = _sorted_points(curve)
    knots = np.union1d(xs[(xs > 0) & (xs < budget)], [0.0, float(budget)])
    values = interpolate(curve, knots)
    area = float(np.sum((values[1:] + values[:-1]) * np.diff(knots)) / 2)
    return area / budget


def final_return(curve: Curve) -> float:
    """The last evaluation's return (taken at the end of the budget; the later one of a tie)."""
    xs, ys = _sorted_points(curve)
    return float(ys[-1])


def spread(values: Sequence[float]) -> Dict[str, Any]:
    """Mean, population std, min, max and count of finite ``values`` (None entries if there are none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(finite), "std": statistics.pstdev(finite), "min": min(finite),
            "max": max(finite), "n": len(finite)}


def normalized_score(value: float, random_return: float, reference_return: float) -> float:
    """``(value - random) / (reference - random)``: 0 = random policy, 1 = the reference return."""
    if reference_return == random_return:
        raise ValueError("reference and random returns must differ")
    return (value - random_return) / (reference_return - random_return)


def aggregate(curves: Mapping[str, Mapping[str, Mapping[int, Curve]]], *, budget: float,
              random_returns: Mapping[str, float], reference_returns: Mapping[str, float]) -> Dict[str, Any]:
    """``curves[arm][task][seed]`` -> per arm and task the final return and AUC over seeds (values and
    spread), and per arm the suite mean of the normalised final return and AUC (per seed, then spread)."""
    out: Dict[str, Any] = {}
    for arm, by_task in curves.items():
        tasks: Dict[str, Any] = {}
        normalized: Dict[int, Dict[str, List[float]]] = {}
        for task, by_seed in by_task.items():
            finals = {seed: final_return(c) for seed, c in sorted(by_seed.items())}
            aucs = {seed: normalized_auc(c, budget) for seed, c in sorted(by_seed.items())}
            tasks[task] = {"final": {"per_seed": finals, **spread(list(finals.values()))},
                           "auc": {"per_seed": aucs, **spread(list(aucs.values()))}}
            for seed in finals:
                entry = normalized.setdefault(seed, {"final": [], "auc": []})
                entry["final"].append(normalized_score(finals[seed], random_returns[task], reference_returns[task]))
                entry["auc"].append(normalized_score(aucs[seed], random_returns[task], reference_returns[task]))
        suite = {}
        for metric in ("final", "auc"):
            per_seed = {seed: statistics.fmean(v[metric]) for seed, v in sorted(normalized.items())}
            suite[metric] = {"per_seed": per_seed, **spread(list(per_seed.values()))}
        out[arm] = {"tasks": tasks, "normalized_mean": suite}
    return out


MIN_FINAL_EPISODES = 10  # episodes a seed's final evaluation needs before a game can be judged learned
MIN_SEEDS = 2  # a confidence interval over seeds needs at least two


@dataclass(frozen=True)
class Verdict:
    """Whether a game was learned (:func:`learned`). ``reason`` says why it could not be judged (then
    ``passed`` is False); ``ci_low``/``ci_high`` are None with fewer than two seeds."""

    passed: bool
    mean: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]
    bar: float  # max(random, best constant action): the CI's lower bound must lie above it
    seeds: int
    confidence: float
    reason: Optional[str] = None

    @property
    def judged(self) -> bool:
        return self.reason is None

    def cell(self) -> str:
        """The report's table cell: 'yes'/'no' with the CI and the bar, or '—' with the reason it cannot be judged."""
        if not self.judged:
            return f"— ({self.reason}; bar {self.bar:.2f})"
        interval = f"{self.confidence:.0%} CI [{self.ci_low:.2f}, {self.ci_high:.2f}]"
        return f"yes ({interval} > {self.bar:.2f})" if self.passed else f"no ({interval}, bar {self.bar:.2f})"


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Tuple[Optional[float], Optional[float]]:
    """Student-t interval of the mean over seeds, ``mean ± t_{(1+c)/2, n-1} s / sqrt(n)`` (``s``: the sample standard
    deviation over the ``n`` values); (None, None) with fewer than two values."""
    from scipy.stats import t as student_t

    if len(values) < 2:
        return None, None
    mean = statistics.fmean(values)
    half = student_t.ppf((1 + confidence) / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean - half, mean + half


def learned(final_returns_per_seed: Sequence[float], episodes_per_seed: Sequence[Optional[int]],
            random_return: float, constant_return: float, *, confidence: float = 0.95) -> Verdict:
    """A game is learned when the Student-t confidence interval over seeds of the final evaluation return
    lies above both the random policy's and the best constant action's return (its lower bound above their
    maximum). It is judged only from final evaluations of at least :data:`MIN_FINAL_EPISODES` episodes per
    seed (``None``: not recorded) and at least :data:`MIN_SEEDS` seeds; the CI is :func:`t_interval`'s.

    Example:
        >>> v = learned([7.0, 7.5, 8.0], [10, 10, 10], random_return=0.02, constant_return=5.06)
        >>> v.passed, round(v.ci_low, 2), v.bar
        (True, 6.26, 5.06)
        >>> learned([7.0], [10], random_return=0.02, constant_return=5.06).reason
        '1 seed < 2'
    """
    if len(final_returns_per_seed) != len(episodes_per_seed):
        raise ValueError(f"{len(final_returns_per_seed)} final returns but {len(episodes_per_seed)} episode counts")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    returns = [float(r) for r in final_returns_per_seed]
    n, bar = len(returns), max(float(random_return), float(constant_return))
    mean = statistics.fmean(returns) if n and all(math.isfinite(r) for r in returns) else None
    low, high = t_interval(returns, confidence) if mean is not None else (None, None)
    short = [e for e in episodes_per_seed if e is None or e < MIN_FINAL_EPISODES]
    if n < MIN_SEEDS:
        reason = f"{n} seed{'' if n == 1 else 's'} < {MIN_SEEDS}"
    elif mean is None:
        reason = "a final return is not finite"
    elif short:
        known = [e for e in short if e is not None]
        reason = (f"final eval of {min(known)} episodes < {MIN_FINAL_EPISODES}" if known
                  else "final eval episodes not recorded")
    else:
        reason = None
    return Verdict(passed=reason is None and low > bar, mean=mean, ci_low=low, ci_high=high, bar=bar, seeds=n,
                   confidence=confidence, reason=reason)


def best_returns(curves: Mapping[str, Mapping[str, Mapping[int, Curve]]]) -> Dict[str, float]:
    """Per task, the best finite evaluation return of any arm and seed, ``curves[arm][task][seed]``.

    Example:
        >>> best_returns({"a": {"t": {0: [(0, 1.0), (9, 4.0)]}}, "b": {"t": {0: [(0, 2.0), (9, float("nan"))]}}})
        {'t': 4.0}
    """
    best: Dict[str, float] = {}
    for by_task in curves.values():
        for task, by_seed in by_task.items():
            values = [r for c in by_seed.values() for _, r in c if math.isfinite(r)]
            if values:
                best[task] = max(best.get(task, -math.inf), max(values))
    return best


def steps_to_target(curve: Curve, target: float) -> Optional[float]:
    """Env step of the first evaluation whose return is ``>= target``; None if none reaches it.

    Example:
        >>> steps_to_target([(0, 10.0), (400, 120.0), (800, 190.0)], 150.0)
        800.0
        >>> steps_to_target([(0, 10.0)], 150.0) is None
        True
    """
    for step, value in sorted(((float(s), float(r)) for s, r in curve), key=lambda p: p[0]):
        if math.isfinite(value) and value >= target:
            return step
    return None


def target_efficiency(curves: Mapping[str, Mapping[str, Mapping[int, Curve]]],
                      env_steps: Mapping[str, Mapping[str, Mapping[int, int]]],
                      targets: Mapping[str, float]) -> Dict[str, Any]:
    """Per arm: per task the env steps to reach the target (spread over the seeds that reached it, and
    how many did), and the env steps the run spent on all tasks together (per seed, then spread).
    ``env_steps[arm][task][seed]`` is what the task collected (DPS stops solved tasks early)."""
    out: Dict[str, Any] = {}
    for arm, by_task in curves.items():
        tasks = {}
        for task, by_seed in by_task.items():
            reached = {seed: steps_to_target(c, targets[task]) for seed, c in sorted(by_seed.items())}
            tasks[task] = {"per_seed": reached, "reached": sum(v is not None for v in reached.values()),
                           "seeds": len(reached), **spread([v for v in reached.values() if v is not None])}
        seeds = sorted({seed for by_seed in env_steps[arm].values() for seed in by_seed})
        totals = {seed: sum(by_seed.get(seed, 0) for by_seed in env_steps[arm].values()) for seed in seeds}
        out[arm] = {"tasks": tasks, "total_env_steps": {"per_seed": totals, **spread(list(totals.values()))}}
    return out


def efficiency_table(efficiency: Mapping[str, Any], arm_labels: Mapping[str, str], targets: Mapping[str, float]) -> str:
    """Env steps to reach each target (mean ± std [min, max] over the seeds that did; 'k/n' of seeds)
    and total env steps per arm."""
    tasks = list(next(iter(efficiency.values()))["tasks"])
    rows = []
    for arm, block in efficiency.items():
        cells = [f"{_fmt(block['tasks'][t], 0)} ({block['tasks'][t]['reached']}/{block['tasks'][t]['seeds']})"
                 for t in tasks]
        rows.append([arm_labels.get(arm, arm)] + cells + [_fmt(block["total_env_steps"], 0)])
    headers = ["arm"] + [f"{t}: steps to {targets[t]:g} (seeds)" for t in tasks] + ["env steps used, all tasks"]
    return tabulate(rows, headers=headers)


def mean_curve(by_seed: Mapping[int, Curve], grid: Sequence[float]) -> Dict[str, np.ndarray]:
    """Mean, min and max across seeds of the curves interpolated on ``grid``."""
    stacked = np.stack([interpolate(c, grid) for c in by_seed.values()])  # (seeds, len(grid))
    return {"mean": stacked.mean(axis=0), "min": stacked.min(axis=0), "max": stacked.max(axis=0)}


def _fmt(stats: Mapping[str, Any], digits: int = 1) -> str:
    if not stats.get("n"):
        return "-"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f} [{stats['min']:.{digits}f}, {stats['max']:.{digits}f}]"


EpisodeCounts = Mapping[str, Mapping[str, Mapping[int, Optional[int]]]]  # [arm][task][seed] -> episodes


def learned_verdicts(summary: Mapping[str, Any], final_episodes: EpisodeCounts, baselines: Mapping[str, Tuple[float, float]],
                     *, confidence: float = 0.95) -> Dict[str, Dict[str, Verdict]]:
    """:func:`learned` per arm and task from :func:`aggregate`'s final returns per seed.
    ``final_episodes[arm][task][seed]`` is the episode count of that seed's final evaluation (missing or None: not
    recorded), ``baselines[task]`` the (random, best constant action) returns."""
    out: Dict[str, Dict[str, Verdict]] = {}
    for arm, block in summary.items():
        out[arm] = {}
        for task, numbers in block["tasks"].items():
            finals = numbers["final"]["per_seed"]
            episodes = [final_episodes.get(arm, {}).get(task, {}).get(seed) for seed in finals]
            out[arm][task] = learned(list(finals.values()), episodes, *baselines[task], confidence=confidence)
    return out


def results_table(summary: Mapping[str, Any], arm_labels: Mapping[str, str], random_returns: Mapping[str, float],
                  reference_returns: Mapping[str, float],
                  verdicts: Optional[Mapping[str, Mapping[str, Verdict]]] = None) -> str:
    """One row per task and arm (final return, AUC: mean ± std [min, max] over seeds), then per arm
    the normalised suite mean. With ``verdicts`` (``[arm][task]``, :func:`learned_verdicts`) a column says
    whether the task was learned, and each suite row counts the games learned."""
    rows = []
    tasks = list(next(iter(summary.values()))["tasks"])
    for task in tasks:
        for arm, block in summary.items():
            t = block["tasks"][task]
            rows.append([f"{task} (random {random_returns[task]:.1f}, ref {reference_returns[task]:.0f})",
                         arm_labels.get(arm, arm), _fmt(t["final"]), _fmt(t["auc"]), t["final"]["n"]]
                        + ([verdicts[arm][task].cell()] if verdicts is not None else []))
    for arm, block in summary.items():
        norm = block["normalized_mean"]
        rows.append(["suite mean, normalised", arm_labels.get(arm, arm), _fmt(norm["final"], 3), _fmt(norm["auc"], 3),
                     norm["final"]["n"]] + ([games_learned(verdicts[arm])] if verdicts is not None else []))
    headers = ["task", "arm", "final return", "AUC (mean return over training)", "seeds"]
    learned_header = "learned (CI over seeds; bar = max(random, best constant action))"
    return tabulate(rows, headers=headers + ([learned_header] if verdicts is not None else []))


def games_learned(verdicts: Mapping[str, Verdict]) -> str:
    """'games learned: k/n', with how many could not be judged."""
    passed = sum(v.passed for v in verdicts.values())
    unjudged = sum(not v.judged for v in verdicts.values())
    return f"games learned: {passed}/{len(verdicts)}" + (f" ({unjudged} not judged)" if unjudged else "")


def diagnostics_table(diagnostics: Mapping[str, Mapping[int, Mapping[str, Any]]], arm_labels: Mapping[str, str],
                      keys: Sequence[str]) -> Tuple[str, Dict[str, Any]]:
    """Gradient conflict etc. of the multi-task arms: the run mean of each ``diag/`` key, spread over seeds.
    ``diagnostics[arm][seed]`` is a run's ``summary["diagnostics"]``. Returns the table and its numbers."""
    numbers: Dict[str, Any] = {}
    rows = []
    for arm, by_seed in diagnostics.items():
        numbers[arm] = {}
        for key in keys:
            values = [(d.get(key) or {}).get("mean") for d in by_seed.values()]
            numbers[arm][key] = {"per_seed": dict(zip(by_seed, values)), **spread(values)}
        rows.append([arm_labels.get(arm, arm)] + [_fmt(numbers[arm][k], 3) for k in keys])
    return tabulate(rows, headers=["arm"] + [f"{k} (run mean)" for k in keys]), numbers


def expert_usage_table(diagnostics: Mapping[str, Mapping[int, Mapping[str, Any]]], arm_labels: Mapping[str, str],
                       task_names: Sequence[str]) -> Tuple[str, Dict[str, Any]]:
    """Per MoE arm and task: the run mean of the normalised routing entropy (``expert_entropy/task<i>``) and
    of the largest expert's share (``expert_max_share/task<i>``), spread over seeds; task i is ``task_names[i]``.
    Arms without these keys (dense) are left out; an empty table when none has them."""
    numbers: Dict[str, Any] = {}
    rows = []
    for arm, by_seed in diagnostics.items():
        per_task = {}
        for i, task in enumerate(task_names):
            cells = {}
            for key in ("expert_entropy", "expert_max_share"):
                values = [(d.get(f"{key}/task{i}") or {}).get("mean") for d in by_seed.values()]
                cells[key] = spread(values)
            per_task[task] = cells
        if not any(c["expert_entropy"]["n"] for c in per_task.values()):
            continue
        numbers[arm] = per_task
        rows += [[arm_labels.get(arm, arm), task, _fmt(c["expert_entropy"], 3), _fmt(c["expert_max_share"], 3)]
                 for task, c in per_task.items()]
    if not rows:
        return "", numbers
    return tabulate(rows, headers=["arm", "task", "routing entropy (normalised)", "largest expert share"]), numbers


def plot_curves(path: Path, curves: Mapping[str, Mapping[str, Mapping[int, Curve]]], *, budget: float,
                arm_labels: Mapping[str, str], title: str, random_returns: Optional[Mapping[str, float]] = None,
                random_label: str = "random policy") -> Path:
    """One subplot per task: per arm the mean eval return over seeds vs env steps, shaded min–max; a
    dashed line marks the budget, a dotted one ``random_returns`` (labelled ``random_label``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg without touching pyplot's global backend
    from matplotlib.figure import Figure

    tasks = list(next(iter(curves.values())))
    fig = Figure(figsize=(max(9.0, 4.5 * len(tasks)), 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    last_eval = max(step for by_task in curves.values() for by_seed in by_task.values() for c in by_seed.values()
                    for step, _ in c)
    grid = np.linspace(0, max(budget, last_eval), 101)  # up to the final evaluations (a round may overshoot)
    for i, task in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), i + 1)
        for arm, by_task in curves.items():
            stats = mean_curve(by_task[task], grid)
            line, = ax.plot(grid, stats["mean"], label=arm_labels.get(arm, arm))
            ax.fill_between(grid, stats["min"], stats["max"], color=line.get_color(), alpha=0.2, linewidth=0)
        ax.axvline(budget, color="black", linestyle="--", linewidth=0.8)
        if random_returns is not None:
            ax.axhline(random_returns[task], color="grey", linestyle=":", linewidth=1, label=random_label)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("env steps (this task)")
        ax.set_ylabel("eval return")
        ax.grid(alpha=0.3)
    fig.legends.clear()
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8)
    fig.suptitle(title, fontsize=10)
    atomic_write(Path(path), lambda f: fig.savefig(f, format="png"))
    return Path(path)
