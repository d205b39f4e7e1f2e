"""Training diagnostics for multi-task world-model learning.

Four cheap measurements, meant to run every N learner steps, plus a run summary:

* :func:`gradient_conflict`: pairwise cosine similarity of the per-task gradients on the shared
  backbone (:func:`shared_backbone_parameters`), the measure ScaleZero uses to show task
  interference. Uses ``torch.autograd.grad``, so ``.grad`` is never touched and the normal
  ``backward`` of the same graph still works afterwards.
* :class:`DormantNeuronProbe` / :func:`dormant_ratio`: dormant-neuron ratio of Sokar et al. (2023),
  "The Dormant Neuron Phenomenon in Deep RL", on the FFN hidden activations of every block.
* :func:`latent_state_norm`: mean L2 norm of latent states.
* :func:`expert_usage_metrics`: per-task entropy / max share of the MoE routing, from the
  ``usage_per_task`` tensor of :func:`lzero_ext.model.moe.moe_statistics`.
* :func:`summarize_diagnostics`: a run's logged values -> a compact block for ``summary.json``.

Host reads (device syncs on a GPU) happen only here, at the diagnostics cadence
(``policy.diagnostics_freq`` learn steps): the probe's hooks accumulate activation sums on the device
and :meth:`DormantNeuronProbe.result`, :func:`gradient_conflict`, :func:`latent_state_norm` and
:func:`expert_usage_metrics` read them once per diagnosed step. While the probe is attached, the MoE
layers call their experts as modules (the hooks must see them), which reads per-expert counts on the
host too; no diagnostic runs in the search loop.

Every result has an ``as_log(prefix="diag/")`` method giving flat ``{name: float}`` entries; the
names are the ``KEY_*`` constants below (per-task / per-block entries append ``/task{t}`` or
``/{block}``). A history of such dicts (plus ``train_iter``) is what :func:`summarize_diagnostics`
reads.

Hooking into a learn step (per-task losses are summed in ``_forward_learn``)::

    task_losses = {}                                         # task_id -> loss_total (same graph)
    with DormantNeuronProbe.for_transformer(model.world_model.transformer) as probe:
        for task_id, cur, tgt in task_batches:
            losses, _ = self._task_loss(task_id, cur, tgt)
            task_losses[task_id] = losses.loss_total
    log = {}
    log.update(gradient_conflict(task_losses, shared_backbone_parameters(model)).as_log())
    log.update(probe.result().as_log())
    total_loss = sum(task_losses.values())
    total_loss.backward()                                    # unaffected by the diagnostics
"""
import math
import numbers
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lzero_ext.model.moe import GELUExpert, MoEFeedForward, SwiGLUExpert
from lzero_ext.model.scalezero_model import ScaleZeroModel
from lzero_ext.model.transformer import ScaleZeroTransformer
from lzero_ext.model.world_model import MultiTaskWorldModel

DEFAULT_PREFIX = "diag/"
DORMANT_THRESHOLD = 0.025  # tau of Sokar et al. (2023)
CAPTURE_MODES: FrozenSet[str] = frozenset({"input", "output"})

# Log names (without prefix). Per-task entries are f"{KEY}/task{t}", per-block f"{KEY}/{block}".
KEY_GRAD_COS_MEAN = "grad_cos_mean"
KEY_GRAD_NEG_FRAC = "grad_neg_frac"
KEY_GRAD_NORM = "grad_norm"
KEY_DORMANT = "dormant_ratio"
KEY_LATENT_NORM = "latent_norm"
KEY_EXPERT_ENTROPY = "expert_entropy"
KEY_EXPERT_MAX_SHARE = "expert_max_share"


# ====================================================================== backbone
def backbone_transformer(model: nn.Module) -> ScaleZeroTransformer:
    """The shared transformer of a ``ScaleZeroModel`` / ``SampledScaleZeroModel``, a
    ``MultiTaskWorldModel``, or the ``ScaleZeroTransformer`` itself (``torch.compile`` wrappers,
    as lightzero's UniZero policy puts around its models, are unwrapped)."""
    model = getattr(model, "_orig_mod", model)
    if isinstance(model, ScaleZeroModel):
        model = model.world_model
    if isinstance(model, MultiTaskWorldModel):
        model = model.transformer
    if not isinstance(model, ScaleZeroTransformer):
        raise TypeError("expected a ScaleZeroModel, MultiTaskWorldModel or ScaleZeroTransformer, "
                        f"got {type(model).__name__}")
    return model


def shared_backbone_parameters(model: nn.Module) -> List[nn.Parameter]:
    """Parameters of the shared transformer backbone (attention, FFN / all MoE experts and router,
    layer norms) that require grad. Encoders, action embeddings and heads are left out: they are
    per task for vector tasks, and per-task heads never receive another task's gradient."""
    return [p for p in backbone_transformer(model).parameters() if p.requires_grad]


# ====================================================================== gradient conflict
@dataclass
class GradientConflict:
    """Result of :func:`gradient_conflict`.

    ``matrix[i, j]`` is the cosine between the gradients of tasks ``task_ids[i]`` and
    ``task_ids[j]`` (float64, ``(T, T)``); rows/columns of a task with a zero gradient are NaN.
    """

    task_ids: List[int]
    matrix: Tensor
    mean_cosine: float
    negative_fraction: float
    per_task_grad_norm: Dict[int, float]

    def as_log(self, prefix: str = DEFAULT_PREFIX) -> Dict[str, float]:
        log = {prefix + KEY_GRAD_COS_MEAN: self.mean_cosine, prefix + KEY_GRAD_NEG_FRAC: self.negative_fraction}
        log.update({f"{prefix}{KEY_GRAD_NORM}/task{t}": n for t, n in self.per_task_grad_norm.items()})
        return log


def gradient_conflict(task_losses: Mapping[int, Tensor], params: Iterable[Tensor]) -> GradientConflict:
    r"""Pairwise cosine similarity of the per-task gradients on shared parameters.

    For each task :math:`t` with scalar loss :math:`\mathcal{L}_t`, let
    :math:`g_t = \nabla_\theta \mathcal{L}_t` be the gradient on the shared parameters
    :math:`\theta` (all of ``params`` flattened into one vector; a parameter the loss does not
    reach contributes zeros). Then

    .. math::

        C_{ij} = \frac{\langle g_i, g_j \rangle}{\lVert g_i \rVert \, \lVert g_j \rVert}, \qquad
        \bar C = \frac{1}{|P|} \sum_{(i,j) \in P} C_{ij}, \qquad
        f_{-} = \frac{1}{|P|} \sum_{(i,j) \in P} \mathbb{1}[C_{ij} < 0]

    over the unordered pairs :math:`P = \{(i, j): i < j\}` whose cosine is defined.

    * A task whose gradient is exactly zero (or whose loss does not require grad) has an
      undefined cosine: its row and column of ``matrix`` are NaN (diagonal included) and its
      pairs are left out of :math:`P`. ``per_task_grad_norm`` reports it as 0.
    * With fewer than two tasks with non-zero gradients (e.g. a single task) :math:`P` is empty:
      ``mean_cosine`` and ``negative_fraction`` are both NaN (undefined, not 0), so that a
      summary's NaN-skipping mean ignores these steps.

    Cosines do not change when a loss is multiplied by a positive weight, so weighted or
    unweighted task losses give the same matrix; the norms do change.

    ``torch.autograd.grad(..., retain_graph=True)`` is called once per task: the graph survives
    for the caller's ``backward``, and no ``.grad`` is read or written. Cost: one partial
    backward per task, and memory for ``T`` gradient copies of ``params`` (the Gram matrix is
    accumulated per parameter in float64, without one concatenated vector).

    Arguments:
        task_losses: ``{task_id: scalar loss}``, all from the same forward graph.
        params: the shared parameters (e.g. :func:`shared_backbone_parameters`); ones that do not
            require grad are skipped.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
        >>> res = gradient_conflict({0: w[0] * 1.0, 1: -w[0], 2: 3.0 * w[1]}, [w])
        >>> res.matrix.tolist(), res.negative_fraction
        ([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], 0.3333333333333333)
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("gradient_conflict needs at least one parameter that requires grad")
    if not task_losses:
        raise ValueError("task_losses is empty")
    task_ids = sorted(task_losses)
    num_tasks = len(task_ids)

    grads: List[Sequence[Optional[Tensor]]] = []  # per task: one gradient (or None = zeros) per parameter
    for task_id in task_ids:
        loss = task_losses[task_id]
        if loss.numel() != 1:
            raise ValueError(f"loss of task {task_id} must be a scalar, got shape {tuple(loss.shape)}")
        if loss.requires_grad:
            grads.append(torch.autograd.grad(loss.reshape(()), params, retain_graph=True, allow_unused=True))
        else:
            grads.append([None] * len(params))

    gram = torch.zeros(num_tasks, num_tasks, dtype=torch.float64)          # (T, T) <g_i, g_j>
    for k in range(len(params)):
        rows = [i for i in range(num_tasks) if grads[i][k] is not None]
        if not rows:
            continue
        g = torch.stack([grads[i][k].reshape(-1) for i in rows]).double()  # (T_k, numel_k)
        idx = torch.tensor(rows)
        gram[idx.unsqueeze(1), idx.unsqueeze(0)] += (g @ g.T).cpu()       # (T_k, T_k)
    del grads

    norms = gram.diagonal().clamp_min(0.0).sqrt()                           # (T,)
    nonzero = norms > 0
    safe = torch.where(nonzero, norms, torch.ones_like(norms))
    matrix = (gram / safe.unsqueeze(1) / safe.unsqueeze(0)).clamp(-1.0, 1.0)  # (T, T)
    undefined = ~(nonzero.unsqueeze(1) & nonzero.unsqueeze(0))
    matrix[undefined] = float("nan")

    iu = torch.triu_indices(num_tasks, num_tasks, offset=1)
    pairs = matrix[iu[0], iu[1]]                                            # (T(T-1)/2,)
    pairs = pairs[torch.isfinite(pairs)]
    if pairs.numel() == 0:
        mean_cosine = negative_fraction = float("nan")
    else:
        mean_cosine = float(pairs.mean())
        negative_fraction = float((pairs < 0).double().mean())
    return GradientConflict(task_ids=task_ids, matrix=matrix, mean_cosine=mean_cosine,
                            negative_fraction=negative_fraction,
                            per_task_grad_norm={t: float(n) for t, n in zip(task_ids, norms)})


# ====================================================================== dormant neurons
def _dormant_count(mean_abs: Tensor, threshold: float) -> int:
    """Number of dormant neurons given each neuron's mean |activation| ``(H,)``."""
    layer_mean = mean_abs.mean()
    if layer_mean <= 0:  # every neuron outputs exactly 0: all dead (the score itself is 0/0)
        return mean_abs.numel()
    return int((mean_abs / layer_mean <= threshold).sum())


def _check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold}")


def dormant_ratio(activations: Tensor, threshold: float = DORMANT_THRESHOLD) -> float:
    r"""Fraction of dormant neurons of one layer (Sokar et al., 2023).

    ``activations`` has the neurons on its last dim, ``(..., H)``; all leading dims (batch,
    sequence, ...) are samples. With :math:`a_{n,i}` the activation of neuron :math:`i` on
    sample :math:`n`,

    .. math::

        s_i = \frac{\mathbb{E}_n |a_{n,i}|}{\frac{1}{H} \sum_{k=1}^{H} \mathbb{E}_n |a_{n,k}|},
        \qquad \text{neuron } i \text{ is dormant} \iff s_i \le \tau,

    and the ratio is the number of dormant neurons over :math:`H`. When every activation is 0
    the score is 0/0; all neurons then count as dormant (ratio 1: a layer of dead ReLUs).

    Example:
        >>> dormant_ratio(torch.tensor([[0.0, 1.0, 2.0, 0.001], [0.0, 3.0, 2.0, 0.001]]))
        0.5
    """
    _check_threshold(threshold)
    if activations.dim() < 1 or activations.numel() == 0:
        raise ValueError(f"activations must be a non-empty tensor (..., H), got shape {tuple(activations.shape)}")
    flat = activations.detach().reshape(-1, activations.shape[-1]).float()  # (N, H)
    return _dormant_count(flat.abs().mean(dim=0), threshold) / flat.shape[1]


@dataclass
class DormantRatios:
    """Result of a :class:`DormantNeuronProbe`: overall ratio (all hooked neurons pooled), per
    layer (the neurons of a layer's units pooled) and per unit (``"{layer}/{unit}"``). Units that
    saw no sample (e.g. a routed expert that got no token) are NaN and excluded from the pools."""

    overall: float
    per_layer: Dict[str, float]
    per_unit: Dict[str, float]
    samples: Dict[str, int]  # per unit: rows (tokens / samples) seen
    threshold: float

    def as_log(self, prefix: str = DEFAULT_PREFIX) -> Dict[str, float]:
        log = {prefix + KEY_DORMANT: self.overall}
        log.update({f"{prefix}{KEY_DORMANT}/{name}": r for name, r in self.per_layer.items()})
        return log


@dataclass
class _UnitStats:
    module: nn.Module
    abs_sum: Optional[Tensor] = None  # (H,) float32 sum of |activation| over samples
    count: int = 0                    # samples seen
    handle: Optional[RemovableHandle] = field(default=None, repr=False)


def _ffn_hidden_module(mlp: nn.Module) -> Dict[str, nn.Module]:
    """``{unit name: module whose input is an FFN hidden activation}`` of one block's ``mlp``."""
    def projection(expert: nn.Module) -> nn.Module:
        if isinstance(expert, SwiGLUExpert):
            return expert.w2   # input: silu(w1 x) * w3 x, (n, hidden)
        if isinstance(expert, GELUExpert):
            return expert.fc2  # input: gelu(fc1 x), (n, hidden)
        raise TypeError(f"unknown expert type {type(expert).__name__}")

    if isinstance(mlp, MoEFeedForward):
        units = {f"experts.{e}": projection(x) for e, x in enumerate(mlp.experts)}
        units.update({f"shared_experts.{e}": projection(x) for e, x in enumerate(mlp.shared_experts)})
        return units
    if isinstance(mlp, nn.Sequential):  # lightzero's dense MLP: Linear(D, 4D), GELU, Linear(4D, D), Dropout
        return {"mlp": mlp[2]}          # input: gelu(fc x), (B, T, 4D)
    raise TypeError(f"unknown FFN type {type(mlp).__name__}")


def ffn_hidden_modules(model: nn.Module) -> Dict[str, Dict[str, nn.Module]]:
    """Default hook points: ``{"block{i}": {unit: module}}`` where each module's **input** is an FFN
    hidden activation: the output projection ``mlp[2]`` of a dense block (input ``gelu(W1 x)``),
    ``w2`` of every SwiGLU expert (input ``silu(w1 x) * w3 x``) or ``fc2`` of every GELU expert,
    routed and shared. ``model`` as in :func:`backbone_transformer`."""
    return {f"block{i}": _ffn_hidden_module(block.mlp) for i, block in enumerate(backbone_transformer(model).blocks)}


class DormantNeuronProbe:
    """Forward hooks that accumulate per-neuron mean |activation| and report dormant ratios.

    ``layers`` maps a layer name to ``{unit name: module}`` (or to one module); a unit's neurons
    are the last dim of the module's forward input (``capture="input"``) or output
    (``capture="output"``). Statistics accumulate over every forward inside the ``with`` block
    (all tasks of a learn step, if the block spans them); hooks are removed on exit. Hooks only
    read detached activations, so gradients are unaffected. The score of each unit is computed
    over its own samples (a routed expert only sees its tokens), as :func:`dormant_ratio`.

    Example:
        >>> relu = nn.ReLU()
        >>> with DormantNeuronProbe({"relu": relu}, capture="output") as probe:
        ...     _ = relu(torch.tensor([[-1.0, 1.0, 2.0, -3.0]]))
        >>> probe.result().overall, len(relu._forward_hooks)
        (0.5, 0)
    """

    def __init__(self, layers: Mapping[str, Union[nn.Module, Mapping[str, nn.Module]]], *,
                 threshold: float = DORMANT_THRESHOLD, capture: str = "input") -> None:
        _check_threshold(threshold)
        if capture not in CAPTURE_MODES:
            raise ValueError(f"capture must be one of {sorted(CAPTURE_MODES)}, got {capture!r}")
        self.threshold, self.capture = threshold, capture
        self._units: Dict[str, Dict[str, _UnitStats]] = {
            layer: {name: _UnitStats(m) for name, m in
                    (units.items() if isinstance(units, Mapping) else [("0", units)])}
            for layer, units in layers.items()}
        if not any(self._units.values()):
            raise ValueError("no modules to probe")

    @classmethod
    def for_transformer(cls, model: nn.Module, *, threshold: float = DORMANT_THRESHOLD) -> "DormantNeuronProbe":
        """Probe of the FFN hidden activations of every block (:func:`ffn_hidden_modules`)."""
        return cls(ffn_hidden_modules(model), threshold=threshold, capture="input")

    def _record(self, stats: _UnitStats, activation: Tensor) -> None:
        flat = activation.detach().reshape(-1, activation.shape[-1]).float()  # (n, H)
        abs_sum = flat.abs().sum(dim=0)                                       # (H,)
        stats.abs_sum = abs_sum if stats.abs_sum is None else stats.abs_sum + abs_sum
        stats.count += flat.shape[0]

    def _hook(self, stats: _UnitStats):
        if self.capture == "input":
            return lambda module, inputs: self._record(stats, inputs[0])
        return lambda module, inputs, output: self._record(stats, output)

    def __enter__(self) -> "DormantNeuronProbe":
        if self.attached:
            raise RuntimeError("DormantNeuronProbe is already attached")
        for units in self._units.values():
            for stats in units.values():
                stats.abs_sum, stats.count = None, 0
                register = (stats.module.register_forward_pre_hook if self.capture == "input"
                            else stats.module.register_forward_hook)
                stats.handle = register(self._hook(stats))
        return self

    def __exit__(self, *exc: Any) -> None:
        for units in self._units.values():
            for stats in units.values():
                if stats.handle is not None:
                    stats.handle.remove()
                    stats.handle = None

    @property
    def attached(self) -> bool:
        return any(s.handle is not None for units in self._units.values() for s in units.values())

    def result(self) -> DormantRatios:
        """Ratios of everything recorded since the last ``__enter__`` (NaN where nothing was seen)."""
        per_layer, per_unit, samples = {}, {}, {}
        total_dormant = total_neurons = 0
        for layer, units in self._units.items():
            layer_dormant = layer_neurons = 0
            for name, stats in units.items():
                samples[f"{layer}/{name}"] = stats.count
                if stats.count == 0:
                    per_unit[f"{layer}/{name}"] = float("nan")
                    continue
                dormant = _dormant_count(stats.abs_sum / stats.count, self.threshold)
                per_unit[f"{layer}/{name}"] = dormant / stats.abs_sum.numel()
                layer_dormant += dormant
                layer_neurons += stats.abs_sum.numel()
            per_layer[layer] = layer_dormant / layer_neurons if layer_neurons else float("nan")
            total_dormant += layer_dormant
            total_neurons += layer_neurons
        overall = total_dormant / total_neurons if total_neurons else float("nan")
        return DormantRatios(overall=overall, per_layer=per_layer, per_unit=per_unit, samples=samples,
                             threshold=self.threshold)


# ====================================================================== latent norm
def latent_state_norm(latents: Tensor) -> float:
    r"""Mean L2 norm of latent states ``(..., D)``: :math:`\frac{1}{N} \sum_n \lVert z_n \rVert_2`
    over all leading positions :math:`n` (lightzero logs the same quantity as
    ``latent_state_l2_norms`` in its loss terms). With a LayerNorm latent without affine scaling
    it is about :math:`\sqrt{D}`; growth or collapse of this value flags latent drift.

    Example:
        >>> latent_state_norm(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
        3.0
    """
    if latents.dim() < 1 or latents.numel() == 0:
        raise ValueError(f"latents must be a non-empty tensor (..., D), got shape {tuple(latents.shape)}")
    return float(latents.detach().float().norm(dim=-1).mean())


# ====================================================================== MoE expert usage
@dataclass
class ExpertUsage:
    """Routing summary of one task, averaged over the MoE layers where the task routed tokens.

    ``entropy``: :math:`H = -\\sum_e p_e \\log p_e` (nats) of the task's expert distribution
    :math:`p`; ``normalized_entropy``: :math:`H / \\log E` (1 = uniform over all experts,
    0 = a single expert; NaN when ``E = 1``); ``max_share``: :math:`\\max_e p_e`."""

    entropy: float
    normalized_entropy: float
    max_share: float


def expert_usage_metrics(usage_per_task: Tensor) -> Dict[int, ExpertUsage]:
    """Per-task routing entropy and max share from ``moe_statistics(...)["usage_per_task"]``
    (``(L, T, E)``, or ``(T, E)`` for one layer). Tasks without tokens (all-zero rows) are
    omitted, so the ``router_stats`` of each task's ``compute_loss`` can be passed one by one
    and the dicts merged.

    Example:
        >>> usage = torch.tensor([[[0.5, 0.5], [1.0, 0.0], [0.0, 0.0]]])  # 1 layer, 3 tasks, 2 experts
        >>> m = expert_usage_metrics(usage)
        >>> sorted(m), m[0].normalized_entropy, m[1].max_share
        ([0, 1], 1.0, 1.0)
    """
    if usage_per_task.dim() == 2:
        usage_per_task = usage_per_task.unsqueeze(0)
    if usage_per_task.dim() != 3:
        raise ValueError(f"usage_per_task must be (L, T, E) or (T, E), got shape {tuple(usage_per_task.shape)}")
    usage = usage_per_task.detach().double().cpu()                        # (L, T, E)
    num_experts = usage.shape[-1]
    present = usage.sum(dim=-1) > 0                                       # (L, T)
    p = usage / usage.sum(dim=-1, keepdim=True).clamp_min(1e-12)          # (L, T, E), rows sum to 1
    entropy = -(p * p.clamp_min(1e-300).log()).sum(dim=-1)                # (L, T); 0 log 0 = 0
    max_share = p.max(dim=-1).values                                      # (L, T)
    metrics = {}
    for t in range(usage.shape[1]):
        layers = present[:, t]
        if not layers.any():
            continue
        h = float(entropy[layers, t].mean())
        metrics[t] = ExpertUsage(entropy=h, normalized_entropy=h / math.log(num_experts) if num_experts > 1
                                 else float("nan"), max_share=float(max_share[layers, t].mean()))
    return metrics


def expert_usage_log(metrics: Mapping[int, ExpertUsage], prefix: str = DEFAULT_PREFIX) -> Dict[str, float]:
    """Flat log entries of :func:`expert_usage_metrics`: normalised entropy and max share per task."""
    log = {}
    for t, m in metrics.items():
        log[f"{prefix}{KEY_EXPERT_ENTROPY}/task{t}"] = m.normalized_entropy
        log[f"{prefix}{KEY_EXPERT_MAX_SHARE}/task{t}"] = m.max_share
    return log


# ====================================================================== run summary
def _finite(value: Any) -> Optional[float]:
    """``float(value)`` for finite real scalars (Python, numpy or one-element tensors), else None."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            return None
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def summarize_diagnostics(history: Sequence[Mapping[str, Any]], *, prefix: str = DEFAULT_PREFIX) -> Dict[str, Any]:
    """Compact ``summary.json`` block from a run's diagnostic logs.

    ``history`` is a list of flat dicts (``as_log`` outputs merged, optionally with a
    ``train_iter``); entries may hold different subsets of keys (diagnostics at different
    intervals). Every key starting with ``prefix`` becomes ``{"mean", "first", "last", "n"}``
    over its finite values (NaN steps, e.g. single-task gradient conflict, are skipped; a key
    with none gives None values and ``n = 0``), keyed by its name without the prefix. Also
    ``"records"`` (number of entries) and, when present, ``"train_iter": {"first", "last"}``.

    Example:
        >>> h = [{"train_iter": 0, "diag/grad_cos_mean": 0.5, "diag/dormant_ratio": 0.1},
        ...      {"train_iter": 100, "diag/grad_cos_mean": float("nan"), "diag/dormant_ratio": 0.3}]
        >>> s = summarize_diagnostics(h)
        >>> s["grad_cos_mean"], s["dormant_ratio"]["last"], s["train_iter"]
        ({'mean': 0.5, 'first': 0.5, 'last': 0.5, 'n': 1}, 0.3, {'first': 0, 'last': 100})
    """
    values: Dict[str, List[float]] = {}
    iters: List[int] = []
    for record in history:
        if "train_iter" in record:
            iters.append(int(record["train_iter"]))
        for key, raw in record.items():
            if not key.startswith(prefix):
                continue
            series = values.setdefault(key[len(prefix):], [])
            value = _finite(raw)
            if value is not None:
                series.append(value)
    summary: Dict[str, Any] = {"records": len(history)}
    if iters:
        summary["train_iter"] = {"first": iters[0], "last": iters[-1]}
    for name in sorted(values):
        series = values[name]
        summary[name] = {"mean": statistics.fmean(series) if series else None,
                         "first": series[0] if series else None,
                         "last": series[-1] if series else None, "n": len(series)}
    return summary
