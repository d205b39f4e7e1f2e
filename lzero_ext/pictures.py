"""Pictures a run writes beside ``learning_curves.png``, from its latest diagnostics step:

* ``expert_usage.png``: per task, a layer x expert heatmap of the share of the task's tokens
  routed to each expert (MoE runs; each row sums to 1);
* ``grad_cosine.png``: the task x task cosine matrix of the per-task gradients on the shared
  transformer (``lzero_ext.diagnostics.gradient_conflict``); blank cells are undefined (a zero
  gradient).

``domain_diagnostics.png`` (:func:`plot_domain_diagnostics`, multi-domain runs) plots the run-long
``lzero_ext.domain_diagnostics.domain_summary`` instead.

Input: the dicts of ``DiagnosticsRecorder.latest_arrays`` (one per rank), e.g.
``{"train_iter": 300, "expert_usage/task0": [[...E], ...L], "grad_cos": {"task_ids": [0, 1], "matrix": [[...]]}}``.

Example::

    files = plot_diagnostics("exp", [recorder.latest_arrays], ["Pong", "Breakout"])
    files  # {'expert_usage': 'expert_usage.png', 'grad_cosine': 'grad_cosine.png'}
"""
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from lzero_ext.checkpoint import atomic_write

USAGE_KEY = "expert_usage/task"
GRAD_COS_KEY = "grad_cos"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg without touching pyplot's global backend
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> str:
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return path.name


def plot_expert_usage(path: Path, usage: Mapping[int, np.ndarray], task_names: Sequence[str], *,
                      train_iter: Optional[int] = None) -> str:
    """One panel per task: (layer, expert) routing shares; returns the file name."""
    tasks = sorted(usage)
    ncols = min(len(tasks), 4)
    nrows = math.ceil(len(tasks) / ncols)
    fig = _figure(3.2 * ncols + 0.8, 2.4 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    image = None
    for ax in axes.flat[len(tasks):]:
        ax.set_visible(False)
    for ax, t in zip(axes.flat, tasks):
        shares = np.asarray(usage[t], dtype=float)                        # (L, E)
        shares = shares / np.clip(shares.sum(axis=1, keepdims=True), 1e-12, None)
        image = ax.imshow(shares, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_title(f"{t}: {task_names[t] if t < len(task_names) else t}", fontsize=9)
        ax.set_xlabel("expert")
        ax.set_ylabel("layer")
        ax.set_xticks(range(shares.shape[1]))
        ax.set_yticks(range(shares.shape[0]))
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="share of the task's tokens")
    fig.suptitle("expert usage per task" + (f" (learner iteration {train_iter})" if train_iter is not None else ""))
    return _save(fig, path)


def plot_grad_cosine(path: Path, task_ids: Sequence[int], matrix: Sequence[Sequence[Optional[float]]],
                     task_names: Sequence[str], *, train_iter: Optional[int] = None) -> str:
    """The task x task gradient-cosine matrix with its values written in; returns the file name."""
    labels = [task_names[t] if t < len(task_names) else str(t) for t in task_ids]
    size = 1.0 + 0.7 * len(labels)
    fig = _figure(size + 1.6, size + 0.6)
    ax = fig.add_subplot(1, 1, 1)
    _cosine_heatmap(ax, matrix, labels)
    ax.set_title("task-gradient cosine" + (f" (iteration {train_iter})" if train_iter is not None else ""), fontsize=9)
    return _save(fig, path)


def _cosine_heatmap(ax: Any, matrix: Sequence[Sequence[Optional[float]]], labels: Sequence[str]) -> None:
    """A cosine matrix with its values written in; None / NaN cells blank."""
    values = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)  # (N, N)
    image = ax.imshow(np.ma.masked_invalid(values), vmin=-1.0, vmax=1.0, cmap="RdBu")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.figure.colorbar(image, ax=ax, shrink=0.8, label="cosine")


def plot_domain_diagnostics(path: Path, summary: Mapping[str, Any]) -> str:
    """``domain_summary``'s domain x domain gradient cosine (diagonal: within a domain) and each
    domain's expert usage averaged over layers; returns the file name."""
    domains, usage = summary["domains"], summary["expert_usage"]["per_domain"]
    fig = _figure(4.0 + 0.6 * len(domains) + (5.0 if usage else 0.0), 2.0 + 0.6 * len(domains))
    ax = fig.add_subplot(1, 2 if usage else 1, 1)
    _cosine_heatmap(ax, summary["grad_cos"]["matrix"], domains)
    ax.set_title("task-gradient cosine by domain", fontsize=9)
    if usage:
        ax = fig.add_subplot(1, 2, 2)
        width = 0.8 / len(usage)
        for k, (domain, shares) in enumerate(usage.items()):
            mean = np.asarray(shares, dtype=float).mean(axis=0)                   # (L, E) -> (E,)
            ax.bar(np.arange(mean.size) + (k - (len(usage) - 1) / 2) * width, mean, width, label=domain)
        ax.set_xticks(range(len(mean)))
        ax.set_xlabel("expert")
        ax.set_ylabel("share of tokens, mean over layers")
        ax.legend(fontsize=8)
        score = summary["expert_usage"]["specialisation"]["mean"]
        ax.set_title("expert usage by domain" + (f" (specialisation {score:.2f})" if score is not None else ""),
                     fontsize=9)
    return _save(fig, Path(path))


def plot_diagnostics(exp_dir: Any, rank_arrays: Sequence[Mapping[str, Any]], task_names: Sequence[str]) -> Dict[str, str]:
    """Writes the pictures the recorded arrays allow; returns ``{picture: file name}`` (empty without diagnostics).

    Expert usage is merged over ranks; the gradient matrix is rank 0's (it covers that rank's tasks)."""
    usage: Dict[int, np.ndarray] = {}
    train_iters: List[int] = []
    for arrays in rank_arrays:
        if arrays.get("train_iter") is not None:
            train_iters.append(int(arrays["train_iter"]))
        for key, value in arrays.items():
            if key.startswith(USAGE_KEY):
                usage[int(key[len(USAGE_KEY):])] = np.asarray(value, dtype=float)
    files: Dict[str, str] = {}
    train_iter = max(train_iters) if train_iters else None
    if usage:
        files["expert_usage"] = plot_expert_usage(Path(exp_dir) / "expert_usage.png", usage, task_names,
                                                  train_iter=train_iter)
    grad = next((a[GRAD_COS_KEY] for a in rank_arrays if a.get(GRAD_COS_KEY)), None)
    if grad is not None and len(grad["task_ids"]) > 0:
        files["grad_cosine"] = plot_grad_cosine(Path(exp_dir) / "grad_cosine.png", grad["task_ids"], grad["matrix"],
                                                task_names, train_iter=train_iter)
    return files
