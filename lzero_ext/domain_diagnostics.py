"""Diagnostics across domains of a multi-domain run (Atari, DMControl, MinAtar, Jericho tasks in one model).

The learn step's diagnostic arrays (``policies.multitask``: the cosines of the per-task gradients on
the shared transformer, each task's expert usage) are summed over the whole run by :func:`accumulate`
into a plain JSON-able accumulator (``DiagnosticsRecorder.accumulated``). :func:`domain_summary` merges
the ranks' accumulators and groups the tasks by domain:

* gradient conflict within vs between domains (the per-task gradient cosine ScaleZero uses to show
  task interference, see ``lzero_ext.diagnostics.gradient_conflict``): does it concentrate between domains?
* each domain's mean expert usage, and how far the routing separates the domains (:func:`specialisation`).

Accumulator layout (task pairs as ``"i,j"`` with ``i < j``; tasks as ``"t"``)::

    {"grad_cos": {"0,1": {"sum": 1.6, "negative": 0, "count": 2}},       # over diagnostics steps
     "expert_usage": {"0": {"sum": [[1.2, 0.8]], "count": 2}}}             # (L, E) summed over steps

Example:
    >>> acc = new_accumulator()
    >>> accumulate(acc, {"grad_cos": {"task_ids": [0, 1], "matrix": [[1.0, -0.5], [-0.5, 1.0]]}})
    >>> domain_summary([acc], {0: "atari", 1: "dmc"})["grad_cos"]["between"]["mean_cosine"]
    -0.5
"""
import math
import numbers
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from lzero_ext.pictures import GRAD_COS_KEY, USAGE_KEY

GROUPS = ("within", "between")


def new_accumulator() -> Dict[str, Dict[str, Any]]:
    return {"grad_cos": {}, "expert_usage": {}}


def _finite(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    return float(value)


def accumulate(accumulated: Dict[str, Dict[str, Any]], arrays: Mapping[str, Any]) -> None:
    """Adds one diagnostics step's ``diagnostic_arrays`` to ``accumulated`` (in place). Undefined
    cosines (None / NaN: a zero gradient) and the diagonal are skipped."""
    grad = arrays.get(GRAD_COS_KEY)
    if grad:
        ids, matrix = [int(t) for t in grad["task_ids"]], grad["matrix"]  # matrix: (T, T)
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                cosine = _finite(matrix[i][j])
                if cosine is None:
                    continue
                key = "{},{}".format(*sorted((ids[i], ids[j])))
                cell = accumulated["grad_cos"].setdefault(key, {"sum": 0.0, "negative": 0, "count": 0})
                cell["sum"] += cosine
                cell["negative"] += int(cosine < 0)
                cell["count"] += 1
    for key, value in arrays.items():
        if key.startswith(USAGE_KEY):
            cell = accumulated["expert_usage"].setdefault(key[len(USAGE_KEY):], {"sum": 0.0, "count": 0})
            cell["sum"] = (np.asarray(cell["sum"]) + np.asarray(value, dtype=float)).tolist()  # (L, E)
            cell["count"] += 1


def _merge(accumulated_per_rank: Sequence[Mapping[str, Any]]
           ) -> Tuple[Dict[Tuple[int, int], np.ndarray], Dict[int, np.ndarray]]:
    """The ranks' accumulators (under DDP each rank sees only its own tasks and their pairs) as
    ``{(i, j): [sum, negative, count]}`` and ``{task: mean usage (L, E), rows normalised}``."""
    pairs: Dict[Tuple[int, int], np.ndarray] = {}
    usage_sums: Dict[int, List[Any]] = {}  # task -> [sum (L, E), count]
    for accumulated in accumulated_per_rank:
        for key, cell in accumulated.get("grad_cos", {}).items():
            pair = tuple(int(t) for t in key.split(","))
            pairs[pair] = pairs.get(pair, 0.0) + np.array([cell["sum"], cell["negative"], cell["count"]], dtype=float)
        for key, cell in accumulated.get("expert_usage", {}).items():
            into = usage_sums.setdefault(int(key), [0.0, 0])
            into[0] = into[0] + np.asarray(cell["sum"], dtype=float)
            into[1] += cell["count"]
    usage = {}
    for task, (total, count) in usage_sums.items():
        if count > 0:
            mean = total / count                                                   # (L, E)
            usage[task] = mean / np.clip(mean.sum(axis=1, keepdims=True), 1e-12, None)
    return pairs, usage


def specialisation(usage: np.ndarray) -> Optional[float]:
    r"""How far one layer's routing separates G groups (domains): ``usage`` is ``(G, E)``, row
    :math:`p_g` the share of group :math:`g`'s tokens per expert. With equal group weights,
    :math:`m = \frac{1}{G} \sum_g p_g` and :math:`H` the entropy,

    .. math::

        S = \frac{H(m) - \frac{1}{G} \sum_g H(p_g)}{\log \min(G, E)} \in [0, 1],

    the Jensen-Shannon divergence of the groups' distributions, i.e. the mutual information between
    the group (uniform) and the routed expert, over its largest value. 0: every group routes alike
    (identical usage, e.g. uniform routing); 1: each expert serves one group only (disjoint supports,
    when E >= G). Rows of zeros (a group without tokens) are left out; None with fewer than two
    groups or one expert.

    Example:
        >>> specialisation(np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]))
        1.0
    """
    p = usage[usage.sum(axis=1) > 0]                                           # (G', E)
    scale = math.log(min(p.shape[0], p.shape[1])) if p.shape[0] > 1 else 0.0
    if scale <= 0.0:
        return None
    p = p / p.sum(axis=1, keepdims=True)

    def entropy(q: np.ndarray) -> np.ndarray:
        return -(q * np.log(np.clip(q, 1e-300, None))).sum(axis=-1)            # 0 log 0 = 0

    return float(np.clip((entropy(p.mean(axis=0)) - entropy(p).mean()) / scale, 0.0, 1.0))


def _group(total: np.ndarray, pairs: int) -> Dict[str, Any]:
    sum_, negative, count = total
    return {"mean_cosine": float(sum_ / count) if count else None,
            "negative_fraction": float(negative / count) if count else None, "pairs": pairs, "samples": int(count)}


def domain_summary(accumulated_per_rank: Sequence[Mapping[str, Any]],
                   task_domains: Mapping[int, str]) -> Dict[str, Any]:
    """Gradient conflict and expert usage by domain, from every rank's ``DiagnosticsRecorder.accumulated``.

    ``task_domains``: task id -> domain name (every task of the accumulators must have one). Keys:

    * ``domains``: the domain names, in the order of their first task id; ``tasks``: domain -> task ids;
    * ``grad_cos``: ``within`` / ``between``: ``{"mean_cosine", "negative_fraction", "pairs", "samples"}``
      over the (task pair, diagnostics step) cosines of task pairs of the same / different domains
      (``pairs``: distinct task pairs seen, ``samples``: cosines); ``matrix``: domains x domains mean
      cosine, diagonal = within a domain, None where no pair was seen. Under DDP only pairs of one
      rank's tasks are ever measured;
    * ``expert_usage``: ``per_domain``: domain -> (L, E) mean over its tasks of each task's run-mean
      usage (domains without usage left out); ``specialisation``: ``{"per_layer": [...], "mean"}``,
      :func:`specialisation` of the domains' usage per layer (0 = identical routing).

    Every number is a finite float, an int or None (JSON-safe).
    """
    pairs, usage = _merge(accumulated_per_rank)
    missing = sorted(t for t in {t for pair in pairs for t in pair} | set(usage) if t not in task_domains)
    if missing:
        raise KeyError(f"tasks {missing} have no domain in task_domains")
    domains = list(dict.fromkeys(task_domains[t] for t in sorted(task_domains)))
    return {"domains": domains,
            "tasks": {d: [t for t in sorted(task_domains) if task_domains[t] == d] for d in domains},
            "grad_cos": _conflict_by_domain(pairs, task_domains, domains),
            "expert_usage": _usage_by_domain(usage, task_domains, domains)}


def _conflict_by_domain(pairs: Mapping[Tuple[int, int], np.ndarray], task_domains: Mapping[int, str],
                        domains: Sequence[str]) -> Dict[str, Any]:
    index = {d: i for i, d in enumerate(domains)}
    cells = np.zeros((len(domains), len(domains), 3))                         # (D, D, [sum, negative, count])
    groups = {g: [np.zeros(3), 0] for g in GROUPS}                            # group -> [sums, distinct pairs]
    for (a, b), total in pairs.items():
        i, j = index[task_domains[a]], index[task_domains[b]]
        cells[i, j] += total
        if i != j:
            cells[j, i] += total
        group = groups["within" if i == j else "between"]
        group[0] += total
        group[1] += 1
    matrix = [[float(c[0] / c[2]) if c[2] else None for c in row] for row in cells]
    return {**{g: _group(*groups[g]) for g in GROUPS}, "matrix": matrix}


def _usage_by_domain(usage: Mapping[int, np.ndarray], task_domains: Mapping[int, str],
                     domains: Sequence[str]) -> Dict[str, Any]:
    shapes = {u.shape for u in usage.values()}
    if len(shapes) > 1:
        raise ValueError(f"tasks' expert usage differs in shape (layers, experts): {sorted(shapes)}")
    per_domain: Dict[str, np.ndarray] = {}
    for domain in domains:
        rows = [usage[t] for t in sorted(usage) if task_domains[t] == domain]
        if rows:
            per_domain[domain] = np.mean(rows, axis=0)                         # (L, E)
    stacked = np.stack(list(per_domain.values()), axis=1) if per_domain else np.zeros((0, 0, 0))  # (L, D', E)
    per_layer = [specialisation(layer) for layer in stacked]
    defined = [s for s in per_layer if s is not None]
    return {"per_domain": {d: u.tolist() for d, u in per_domain.items()},
            "specialisation": {"per_layer": per_layer, "mean": float(np.mean(defined)) if defined else None}}
