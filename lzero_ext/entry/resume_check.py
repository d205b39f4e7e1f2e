"""What a resume must match, and which checkpoint every rank resumes from.

:func:`run_identity` condenses a run's compiled configs into a flat dict of the keys that make a
checkpoint unusable or meaningless when they change: the tasks, the model architecture (every
``policy.model`` key except the device and env counts), the policy type, the unroll length, DPS,
and labels the caller adds (the CLI adds the preset; the trainer adds the fine-tune mode, so a LoRA
fine-tuned run resumed without its ``--init-from ... --finetune lora`` is refused, and the reverse). Checkpoints store it (``run_identity``), and
:func:`check_resume_compatible` compares it with the new run's before anything is written, giving
one line that names the differing keys instead of a ``state_dict`` traceback.

:func:`agree_on_checkpoint` makes all DDP ranks load the same iteration: each rank's newest
intact checkpoint is gathered; if they differ, every rank loads the newest iteration all of them
have (with a warning), or the resume stops with one clear error.
"""
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from lzero_ext.checkpoint import CheckpointError, load_checkpoint, load_newest_intact
from lzero_ext.distributed import all_gather_object

logger = logging.getLogger(__name__)

# policy.model keys that size runtime buffers, not parameters: a resume may change them.
RUNTIME_MODEL_KEYS = frozenset({"device", "env_num", "collector_env_num", "evaluator_env_num"})
POLICY_KEYS = ("type", "task_num", "num_unroll_steps", "dps.enabled")  # under policy, besides policy.model
Checkpoint = Tuple[Path, Dict[str, Any]]


def _flatten(prefix: str, value: Any, out: Dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key in sorted(value, key=str):
            if str(key) not in RUNTIME_MODEL_KEYS:
                _flatten(f"{prefix}.{key}", value[key], out)
    else:
        out[prefix] = list(value) if isinstance(value, tuple) else value


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = cfg.get(part) if isinstance(cfg, Mapping) else None
    return cfg


def run_identity(compiled: Sequence[Any], labels: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The flat ``{key: value}`` a resume must match, from every task's compiled config."""
    identity: Dict[str, Any] = {"tasks": [str(cfg.env.get("env_id") or cfg.env.get("env_name")) for cfg in compiled]}
    for key in POLICY_KEYS:
        identity[f"policy.{key}"] = _get(compiled[0].policy, key)
    for task_id, cfg in enumerate(compiled):
        model: Dict[str, Any] = {}
        _flatten("policy.model", cfg.policy.model, model)
        prefix = "" if task_id == 0 else f"task{task_id}."
        identity.update({f"{prefix}{k}": v for k, v in model.items()
                         if task_id == 0 or v != identity.get(k)})  # later tasks: only what differs from task 0
    identity.update({f"run.{k}": v for k, v in (labels or {}).items()})
    return identity


# Identity keys added after checkpoints first stored an identity: a checkpoint without one has this value.
IDENTITY_DEFAULTS = {"run.finetune": "none"}


def _value(identity: Mapping[str, Any], key: str) -> Any:
    return identity.get(key, IDENTITY_DEFAULTS.get(key, "<absent>"))


def identity_differences(saved: Mapping[str, Any], new: Mapping[str, Any]) -> List[str]:
    """Keys whose values differ, or that only one side has: ``tasks`` and the labels first, then sorted."""
    differing = [key for key in set(saved) | set(new) if _value(saved, key) != _value(new, key)]
    return sorted(differing, key=lambda key: (key != "tasks", not key.startswith("run."), key))  # the telling ones first


def check_resume_compatible(saved: Optional[Mapping[str, Any]], new: Mapping[str, Any], path: Any) -> None:
    """Raises :class:`CheckpointError` (one line) when the checkpoint ``path`` was built differently."""
    if saved is None:
        return  # written before checkpoints stored their identity: the state_dict load still checks shapes
    differing = identity_differences(saved, new)
    if not differing:
        return
    shown = [f"{key} ({_value(saved, key)!r} -> {_value(new, key)!r})" for key in differing[:4]]
    more = f" and {len(differing) - 4} more" if len(differing) > 4 else ""
    raise CheckpointError(f"cannot resume: {path} was written by a different run: {', '.join(shown)}{more}; "
                          f"resume with the original settings, or start a new --exp-name")


def agree_on_checkpoint(ckpt_dir: Path, *, required_keys: Sequence[str], candidate: Optional[Checkpoint] = None) -> Checkpoint:
    """The ``(path, state)`` this rank resumes from, at an iteration every rank agrees on.

    ``candidate`` is this rank's newest intact checkpoint if already loaded. A single process just
    returns it. Raises :class:`CheckpointError` when the ranks cannot agree."""
    path, state = candidate or load_newest_intact(ckpt_dir, required_keys=required_keys)
    missing = [key for key in required_keys if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks required keys: {', '.join(missing)}")
    iterations = all_gather_object(int(state["train_iter"]))
    if len(set(iterations)) == 1:
        return path, state
    target = min(iterations)
    problem = None
    if state["train_iter"] != target:
        target_path = ckpt_dir / f"iteration_{target}.pth.tar"
        try:
            path, state = target_path, load_checkpoint(target_path, required_keys=required_keys)
        except CheckpointError as error:
            problem = str(error)
    problems = all_gather_object(problem)
    newest = ", ".join(f"rank {r}: {it}" for r, it in enumerate(iterations))
    failed = [r for r, p in enumerate(problems) if p is not None]
    if failed:
        raise CheckpointError(f"ranks' newest checkpoints differ ({newest}) and iteration {target} is not usable on "
                              f"rank {failed[0]}: {problems[failed[0]]}")
    logger.warning(f"ranks' newest checkpoints differ ({newest}): every rank resumes from iteration {target}")
    return path, state
