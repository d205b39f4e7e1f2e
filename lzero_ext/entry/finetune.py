"""Start a new run from a multi-task checkpoint (``--init-from CKPT``); its games may be new.

What is loaded, into the learner and the target model alike:

* **shared weights** (everything outside per-task ``TaskSwitch`` copies: the shared encoder,
  transformer, action / position embeddings, layer norms) bit for bit; a shape or name mismatch is
  a :class:`~lzero_ext.checkpoint.CheckpointError` ("checkpoint from another architecture");
* **per-task copies** (heads, and per-task encoders / embeddings of vector tasks) by task name: a
  task the checkpoint trained gets its own copy; a new task keeps its fresh initialisation, or,
  with ``heads_from=GAME``, a copy of that trained task's (where the shapes agree).

``mode='lora'`` then wraps the transformer's linears with the DPS staged LoRA layers
(``lzero_ext.dps``: two stages, stage 1 active) and freezes every loaded shared weight; only the
adapters, their scales and the per-task copies train. ``mode='full'`` trains everything. The
optimizer is rebuilt over the model either way (fresh state: a new run). The settings are written
to ``<exp_dir>/finetune.json``, which ``lzero_ext.evaluate`` reads to rebuild the same model.

Example::

    spec = FinetuneSpec("runs/a/ckpt/rank0", heads_from="Pong", mode="lora")
    report = apply_finetune(policy, spec, task_names=["Pong", "Boxing"], exp_dir="runs/b")
    report.copied  # {'Pong': 'Pong', 'Boxing': 'Pong'}
"""
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from lzero_ext.checkpoint import CheckpointError, atomic_write, load_checkpoint

FINETUNE_MODES = frozenset({"full", "lora"})
FINETUNE_FILE = "finetune.json"
_PER_TASK_KEY = re.compile(r"^(?P<prefix>.*\.per_task\.)(?P<index>\d+)(?P<rest>\..+)$")


@dataclass(frozen=True)
class FinetuneSpec:
    """``--init-from`` / ``--init-heads-from`` / ``--finetune`` (and the LoRA sizes of ``mode='lora'``)."""

    checkpoint: str  # a checkpoint file, its directory, or an experiment directory (latest checkpoint of rank 0)
    heads_from: Optional[str] = None  # a trained task whose per-task copies new tasks start from (None: fresh)
    mode: str = "full"  # 'full': train everything; 'lora': train LoRA adapters and per-task copies only
    lora_rank: int = 8
    lora_alpha: float = 8.0

    def identity(self) -> str:
        """What a resume of the fine-tuned run must match: the mode, and the adapters' sizes for LoRA."""
        return self.mode if self.mode != "lora" else f"lora (rank {self.lora_rank}, alpha {self.lora_alpha})"

    def __post_init__(self) -> None:
        if self.mode not in FINETUNE_MODES:
            raise ValueError(f"--finetune must be one of {sorted(FINETUNE_MODES)}, got {self.mode!r}")
        if self.lora_rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.lora_rank}")


@dataclass
class FinetuneReport:
    """What :func:`apply_finetune` did: shared tensors loaded, per-task copies' source task (None: fresh)."""

    checkpoint: str
    shared_loaded: int
    copied: Dict[str, Optional[str]] = field(default_factory=dict)
    trainable_params: int = 0


def _checkpoint_path(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"--init-from {path}: no such file or directory")
    if p.is_dir() and (p / "ckpt").is_dir() and not (p / "latest.json").exists():
        ranks = sorted((p / "ckpt").glob("rank*"))
        if ranks:
            return ranks[0]
    return p


def checkpoint_task_names(state: Mapping[str, Any]) -> List[str]:
    """Task names of a training checkpoint, in task-id order (``task_names``, else its ranks' ``tasks``)."""
    if state.get("task_names"):
        return list(state["task_names"])
    tasks = state.get("tasks") or {}
    return [tasks[t]["name"] for t in sorted(tasks)]


def _switch_copies(keys: Sequence[str]) -> Dict[str, int]:
    """``{TaskSwitch prefix: number of copies}`` of a state dict's keys."""
    copies: Dict[str, int] = {}
    for key in keys:
        m = _PER_TASK_KEY.match(key)
        if m:
            copies[m["prefix"]] = max(copies.get(m["prefix"], 0), int(m["index"]) + 1)
    return copies


def map_state(current: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor], *,
              task_names: Sequence[str], source_task_names: Sequence[str], heads_from: Optional[str],
              keep_current: Sequence[str] = ()) -> Tuple[Dict[str, torch.Tensor], int, Dict[str, Optional[str]]]:
    """The state dict to load: ``current`` with shared entries from ``source`` and per-task copies by name.

    Returns ``(state, shared tensors loaded, {task: source task or None})``. ``keep_current``: names
    left as they are (frozen pretrained weights that checkpoints leave out)."""
    if heads_from is not None and heads_from not in source_task_names:
        raise ValueError(f"--init-heads-from {heads_from!r}: the checkpoint trained {list(source_task_names)}")
    src_copies, cur_copies = _switch_copies(list(source)), _switch_copies(list(current))
    index = {name: i for i, name in enumerate(source_task_names)}
    origin: Dict[str, Optional[str]] = {name: name if name in index else heads_from for name in task_names}
    state, shared, skip = dict(current), 0, set(keep_current)
    for key, value in current.items():
        if key in skip:
            continue
        m = _PER_TASK_KEY.match(key)  # greedy: the innermost switch of a nested key
        if m and (cur_copies[m["prefix"]] > 1 or src_copies.get(m["prefix"], 0) > 1):  # a per-task copy
            task = task_names[int(m["index"])] if cur_copies[m["prefix"]] > 1 else task_names[0]
            src_task = origin.get(task)
            if src_task is None:
                continue
            src_index = index[src_task] if src_copies.get(m["prefix"], 0) > 1 else 0
            src_key = f"{m['prefix']}{src_index}{m['rest']}"
            if src_key in source and source[src_key].shape == value.shape:
                state[key] = source[src_key].clone()
            elif src_task != task:  # copied from another task: shapes may differ (vector sizes): stay fresh
                continue
            else:
                raise CheckpointError(f"checkpoint from another architecture: {src_key} "
                                      f"{tuple(source[src_key].shape) if src_key in source else 'missing'}, "
                                      f"this model's {key} is {tuple(value.shape)}")
            continue
        if key not in source:
            raise CheckpointError(f"checkpoint from another architecture: it has no {key}")
        if source[key].shape != value.shape:
            raise CheckpointError(f"checkpoint from another architecture: {key} is {tuple(source[key].shape)} there, "
                                  f"{tuple(value.shape)} here")
        state[key] = source[key].clone()
        shared += 1
    return state, shared, origin


def shared_parameter_names(model: torch.nn.Module) -> List[str]:
    """Parameters outside per-task ``TaskSwitch`` copies (those with several copies)."""
    names = [n for n, _ in model.named_parameters()]
    copies = _switch_copies(names)
    return [n for n in names if not ((m := _PER_TASK_KEY.match(n)) and copies[m["prefix"]] > 1)]


def apply_finetune(policy: Any, spec: FinetuneSpec, *, task_names: Sequence[str], exp_dir: Optional[str] = None,
                   write_file: bool = True) -> FinetuneReport:
    """Loads ``spec.checkpoint`` into ``policy``'s learner and target model, sets up ``spec.mode`` and
    rebuilds the optimizer; writes ``<exp_dir>/finetune.json``. Call before training (and before resume)."""
    from lzero_ext.dps import apply_staged_lora, set_dps_stage
    from lzero_ext.dps.lora import is_lora_name
    from lzero_ext.model.text_encoder import frozen_pretrained_state_keys
    ckpt = load_checkpoint(_checkpoint_path(spec.checkpoint), required_keys=("policy",))
    source = ckpt["policy"]["model"]
    if any(is_lora_name(k) for k in source):
        raise CheckpointError(f"--init-from {spec.checkpoint}: the checkpoint has LoRA adapters (a DPS or LoRA run); "
                              "start from a checkpoint without adapters")
    model, target = policy._model, policy._target_model
    current = model.state_dict()
    state, shared, origin = map_state(current, source, task_names=task_names,
                                      source_task_names=checkpoint_task_names(ckpt), heads_from=spec.heads_from,
                                      keep_current=frozen_pretrained_state_keys(model))
    model.load_state_dict(state)
    target.load_state_dict(state)
    if spec.mode == "lora":
        if policy._cfg.dps.enabled:
            raise ValueError("--finetune lora and --dps both add LoRA adapters: choose one")
        base = set(shared_parameter_names(model))
        for net in (model, target):
            apply_staged_lora(net, num_stages=2, rank=spec.lora_rank, alpha=spec.lora_alpha)
            set_dps_stage(net, 1)  # the transformer's base frozen, adapter 1 and its scales train
        for name, param in model.named_parameters():
            if name in base:  # encoder / embeddings outside the transformer too: the base stays as loaded
                param.requires_grad_(False)
    _rebuild_optimizer(policy)
    policy.recompute_pos_emb_diff_and_clear_cache()  # position-embedding caches follow the loaded weights
    report = FinetuneReport(str(spec.checkpoint), shared, origin,
                            sum(p.numel() for p in model.parameters() if p.requires_grad))
    if write_file and exp_dir is not None:
        text = json.dumps({"spec": asdict(spec), "report": asdict(report)}, indent=1)
        atomic_write(Path(exp_dir) / FINETUNE_FILE, lambda f: f.write(text.encode()))
    return report


def prepare_model_like_run(policy: Any, exp_dir: str) -> Optional[FinetuneSpec]:
    """Rebuilds a LoRA fine-tuned run's adapters (from ``<exp_dir>/finetune.json``) before its checkpoint is
    loaded; returns the run's spec (None for runs that were not fine-tuned)."""
    from lzero_ext.dps import apply_staged_lora, set_dps_stage

    path = Path(exp_dir) / FINETUNE_FILE
    if not path.exists():
        return None
    spec = FinetuneSpec(**json.loads(path.read_text())["spec"])
    if spec.mode == "lora":
        for net in (policy._model, policy._target_model):
            apply_staged_lora(net, num_stages=2, rank=spec.lora_rank, alpha=spec.lora_alpha)
            set_dps_stage(net, 1)
        _rebuild_optimizer(policy)  # the checkpoint's optimizer state covers the adapters
    return spec


def _rebuild_optimizer(policy: Any) -> None:
    from policies.multitask import build_optimizer

    policy._optimizer_world_model = build_optimizer(policy._model.world_model, learning_rate=policy._cfg.learning_rate,
                                                    weight_decay=policy._cfg.weight_decay)
