"""End-of-run summaries for multi-task runs: normalised scores (Atari HNS, DMC return/1000),
a console table, ``summary.json`` and a learning-curve PNG.

Example::

    rec = TaskRecord(task_id=0, name="PongNoFrameskip-v4")
    rec.add_eval(10_000, -12.0, kind="atari")
    summary = summarize([rec], kind="atari")   # summary["mean"] == rec.normalized
    print_summary_table(summary)
    write_summary("exp", summary, extra={"iterations": 500})
    plot_learning_curves("exp", [rec])
"""
import dataclasses
import io
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from tabulate import tabulate

from lzero_ext.checkpoint import atomic_write
from lzero_ext.envs.atari_games import game_name, resolve_game

KINDS = frozenset({"atari", "dmc", "raw"})
SCORE_NAMES: Mapping[str, str] = MappingProxyType({"atari": "HNS", "dmc": "return/1000", "raw": "return"})

# Atari100k (random, human) scores, the ScaleZero paper. HNS = (score - random) / (human - random).
ATARI_SCORES: Mapping[str, Tuple[float, float]] = MappingProxyType({
    "Alien": (227.8, 7127.7),
    "Amidar": (5.8, 1719.5),
    "Assault": (222.4, 742.0),
    "Asterix": (210.0, 8503.3),
    "BankHeist": (14.2, 753.1),
    "BattleZone": (2360.0, 37187.5),
    "Boxing": (0.1, 12.1),
    "Breakout": (1.7, 30.5),
    "ChopperCommand": (811.0, 7387.8),
    "CrazyClimber": (10780.5, 35829.4),
    "DemonAttack": (152.1, 1971.0),
    "Freeway": (0.0, 29.6),
    "Frostbite": (65.2, 4334.7),
    "Gopher": (257.6, 2412.5),
    "Hero": (1027.0, 30826.4),
    "Jamesbond": (29.0, 302.8),
    "Kangaroo": (52.0, 3035.0),
    "Krull": (1598.0, 2665.5),
    "KungFuMaster": (258.5, 22736.3),
    "MsPacman": (307.3, 6951.6),
    "Pong": (-20.7, 14.6),
    "PrivateEye": (24.9, 69571.3),
    "Qbert": (163.9, 13455.0),
    "RoadRunner": (11.5, 7845.0),
    "Seaquest": (68.4, 42054.7),
    "UpNDown": (533.4, 11693.2),
})


def atari_game_name(env_id: str) -> str:
    """Canonical game name of an Atari env id ('PongNoFrameskip-v4', 'ALE/Pong-v5', 'ms_pacman' ->
    'Pong', 'Pong', 'MsPacman'), parsed by the env's own game table; unknown names come back as given."""
    try:
        return game_name(resolve_game(env_id))
    except ValueError:
        return env_id


def human_normalized_score(game: str, score: float) -> Optional[float]:
    """Human-normalised score of ``game`` (name or env id); None for games without a table entry."""
    scores = ATARI_SCORES.get(atari_game_name(game))
    if scores is None:
        return None
    random_score, human_score = scores
    return (score - random_score) / (human_score - random_score)


def dmc_normalized_score(episode_return: float) -> float:
    """DMC returns are in [0, 1000]: normalised = return / 1000."""
    return episode_return / 1000.0


def _finite(x: Optional[float]) -> bool:
    return x is not None and math.isfinite(x)


def normalized_score(kind: str, name: str, episode_return: Optional[float]) -> Optional[float]:
    """Normalised score by benchmark ``kind`` ('atari': HNS, 'dmc': return/1000, 'raw': return).
    None when there is no finite return or no table entry.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(KINDS)}")
    if not _finite(episode_return):
        return None
    if kind == "atari":
        return human_normalized_score(name, episode_return)
    if kind == "dmc":
        return dmc_normalized_score(episode_return)
    return float(episode_return)


@dataclass
class TaskRecord:
    """Evaluation record of one task."""

    task_id: int
    name: str
    env_steps: int = 0
    eval_return: Optional[float] = None  # latest evaluation mean return
    normalized: Optional[float] = None  # normalised score of eval_return
    history: List[Tuple[int, float]] = field(default_factory=list)  # (env_step, eval_return)
    episode_cap: Optional[str] = None  # how eval episodes are cut short of the benchmark's (ScaleZeroEnv.episode_cap)
    updates: int = 0  # learner updates that trained on this task's batch
    domain: Optional[str] = None  # its benchmark in a run over several domains (the summary groups by it)
    score_kind: Optional[str] = None  # its score's kind; None: the summary's
    eval_episodes: Optional[int] = None  # episodes of the latest evaluation (None: not recorded)

    def add_eval(self, env_step: int, eval_return: float, *, kind: Optional[str] = None,
                 episodes: Optional[int] = None) -> None:
        """Record an evaluation of ``episodes`` episodes at ``env_step`` and update the latest return and score
        (``kind``: the record's own ``score_kind``, else 'raw')."""
        self.history.append((int(env_step), float(eval_return)))
        self.eval_episodes = episodes
        self.env_steps = max(self.env_steps, int(env_step))
        self.eval_return = float(eval_return)
        self.normalized = normalized_score(kind or self.score_kind or "raw", self.name, self.eval_return)


def summarize(records: Sequence[TaskRecord], kind: str = "atari") -> Dict[str, Any]:
    """Per-task rows plus mean and median of the normalised scores (tasks without one ignored).
    Scores are recomputed from each record's latest return for ``kind`` (a record's own ``score_kind`` first).
    Records of several domains are summarised per domain, each with its own score (:func:`summarize_domains`).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(KINDS)}")
    if any(r.domain for r in records):
        return summarize_domains(records, kind)
    rows = [
        {
            "task_id": r.task_id,
            "name": r.name,
            "env_steps": r.env_steps,
            "eval_return": r.eval_return,
            "eval_episodes": r.eval_episodes,  # episodes behind eval_return (the final evaluation's, after a run)
            "normalized": normalized_score(r.score_kind or kind, r.name, r.eval_return),
            "history": [[step, value] for step, value in r.history],  # (env_step, eval mean return) per evaluation
            "episode_cap": r.episode_cap,  # None: full episodes; else the cap, and the score is not comparable
            "updates": r.updates,
            "updates_per_env_step": r.updates / r.env_steps if r.env_steps else None,
        }
        for r in records
    ]
    scores = [row["normalized"] for row in rows if _finite(row["normalized"])]
    return {
        "kind": kind,
        "score_name": SCORE_NAMES[kind],
        "tasks": rows,
        "total_env_steps": int(sum(r.env_steps for r in records)),
        "num_scored": len(scores),
        "mean": statistics.fmean(scores) if scores else None,
        "median": statistics.median(scores) if scores else None,
        "capped_tasks": [r.name for r in records if r.episode_cap],  # their scores come from shortened episodes
    }


def summarize_domains(records: Sequence[TaskRecord], kind: str = "raw") -> Dict[str, Any]:
    """A run over several domains: one :func:`summarize` block per domain under ``"domains"`` (each with its own score:
    HNS, return/1000 or raw return; a mean over domains would mix units, so there is none), and every task's row."""
    groups: Dict[str, List[TaskRecord]] = {}
    for r in records:
        groups.setdefault(r.domain or "other", []).append(r)
    domains = {}
    for domain, members in groups.items():
        kinds = {r.score_kind or kind for r in members}
        if len(kinds) > 1:
            raise ValueError(f"domain {domain!r} mixes score kinds {sorted(kinds)}: one score per domain")
        block = summarize([dataclasses.replace(r, domain=None) for r in members], kinds.pop())
        block["tasks"] = [dict(row, domain=domain) for row in block["tasks"]]
        domains[domain] = block
    rows = sorted((row for block in domains.values() for row in block["tasks"]), key=lambda row: row["task_id"])
    return {
        "kind": "domains",
        "score_name": "per domain",
        "tasks": rows,
        "domains": domains,
        "total_env_steps": int(sum(r.env_steps for r in records)),
        "num_scored": sum(block["num_scored"] for block in domains.values()),
        "mean": None,
        "median": None,
        "capped_tasks": [r.name for r in records if r.episode_cap],
    }


def _num(x: Optional[float]) -> Optional[float]:
    return x if _finite(x) else None


def print_summary_table(summary: Dict[str, Any], *, file: Optional[IO[str]] = None) -> str:
    """Print (to ``file``, default stdout) and return the summary as a table with a mean/median footer. Tasks
    evaluated on shortened episodes are marked ``*`` and named under the table. For raw returns the score is the
    return itself, so it has one column."""
    if summary["kind"] == "domains":
        return _print_domain_tables(summary, file=file)
    score_name, capped = summary["score_name"], summary.get("capped_tasks") or []
    separate_score = summary["kind"] != "raw"

    def row(label: str, steps: Any, value: Optional[float], score: Optional[float]) -> List[Any]:
        return [label, steps, _num(value)] + ([_num(score)] if separate_score else [])

    rows = [row(f"{r['task_id']}: {r['name']}{'*' if r.get('episode_cap') else ''}", r["env_steps"], r["eval_return"],
                r["normalized"]) for r in summary["tasks"]]
    marked = f", {len(capped)} with *" if capped else ""
    for label, value in ((f"mean {score_name} ({summary['num_scored']} tasks{marked})", summary["mean"]),
                         (f"median {score_name}", summary["median"])):
        rows.append(row(label, None, None, value) if separate_score else row(label, None, value, None))
    rows.append(row("total env steps", summary.get("total_env_steps"), None, None))
    headers = ["task", "env steps", "latest eval return"] + ([score_name] if separate_score else [])
    table = tabulate(rows, headers=headers, floatfmt=".3f", missingval="-")
    if capped:
        table += "\n" + capped_note((r["name"], r.get("episode_cap")) for r in summary["tasks"])
    if summary.get("dps"):
        table += "\n" + _dps_line(summary["dps"])
    print(table, file=file or sys.stdout)
    return table


def _print_domain_tables(summary: Dict[str, Any], *, file: Optional[IO[str]]) -> str:
    """One table per domain, each with its own score column and mean/median, then the run's total env steps."""
    parts = [f"{domain} ({len(block['tasks'])} tasks, {block['score_name']})\n"
             + print_summary_table(block, file=io.StringIO()) for domain, block in summary["domains"].items()]
    text = "\n\n".join(parts) + f"\ntotal env steps: {summary['total_env_steps']}"
    if summary.get("dps"):
        text += "\n" + _dps_line(summary["dps"])
    print(text, file=file or sys.stdout)
    return text


def _dps_line(dps: Mapping[str, Any]) -> str:
    return (f"DPS: stage {dps['stage']} of {dps['num_stages'] - 1}, solved {dps['solved'] or 'none'}, "
            f"{len(dps['switches'])} switch(es), {dps['trainable_params']:,} trainable parameters")


def capped_note(caps: Iterable[Tuple[str, Optional[str]]]) -> str:
    """The footnote of a table whose ``*`` rows were evaluated on shortened episodes: ``(task, episode_cap)`` pairs,
    tasks with the same cap on one line; an empty string when no task has a cap."""
    by_cap: Dict[str, List[str]] = {}
    for name, cap in caps:
        if cap:
            by_cap.setdefault(cap, []).append(name)
    if not by_cap:
        return ""
    return "* evaluated on episodes cut short, so these scores are not comparable with published ones:" + "".join(
        f"\n  {', '.join(names)}: {cap}" for cap, names in by_cap.items())


def _json_safe(obj: Any) -> Any:
    """Plain JSON types; non-finite floats become None."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if callable(getattr(obj, "tolist", None)):  # numpy / torch scalars and arrays
        return _json_safe(obj.tolist())
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return str(obj)


def write_summary(exp_dir: Any, summary: Dict[str, Any], extra: Optional[Dict[str, Any]] = None) -> Path:
    """Atomically write ``<exp_dir>/summary.json`` (summary keys, plus ``extra`` under "extra")."""
    payload = _json_safe({**summary, "extra": extra or {}})
    text = json.dumps(payload, indent=2, allow_nan=False) + "\n"
    return atomic_write(Path(exp_dir) / "summary.json", lambda f: f.write(text.encode()))


def plot_learning_curves(exp_dir: Any, records: Sequence[TaskRecord], *, filename: str = "learning_curves.png") -> Path:
    """Write a PNG grid with one subplot per task: eval return vs env steps. Returns its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg without touching pyplot's global backend
    from matplotlib.figure import Figure

    if not records:
        raise ValueError("no task records to plot")
    ncols = math.ceil(math.sqrt(len(records)))
    nrows = math.ceil(len(records) / ncols)
    fig = Figure(figsize=(4 * ncols, 3 * nrows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    for i, rec in enumerate(records):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        points = sorted((s, r) for s, r in rec.history if math.isfinite(r))
        if points:
            steps, returns = zip(*points)
            ax.plot(steps, returns, marker="o", markersize=3)
        else:
            ax.text(0.5, 0.5, "no evaluations", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{rec.task_id}: {rec.name}", fontsize=9)
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval return")
        ax.grid(alpha=0.3)
    path = Path(exp_dir) / filename
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return path
