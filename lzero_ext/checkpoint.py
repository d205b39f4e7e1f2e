"""Crash-safe checkpoints: atomic writes, a ``latest.json`` pointer, keep-last-N pruning, and
clear errors for missing, truncated or corrupt files.

Layout of a checkpoint directory (e.g. ``<exp_dir>/ckpt``)::

    iteration_1000.pth.tar
    iteration_2000.pth.tar
    latest.json   # {"checkpoint": "iteration_2000.pth.tar", "history": [...], "saved_at": ...}

Example::

    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "iteration": 2000,
             "rng": capture_rng_state()}
    save_checkpoint("exp/ckpt/iteration_2000.pth.tar", state, keep_last=3)
    state = load_checkpoint("exp", required_keys=("model", "optimizer"))  # resolves latest
    restore_rng_state(state["rng"])

Checkpoints are pickles: load only files you trust (or pass ``weights_only=True``).
"""
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterable, Optional, Union

import numpy as np
import torch

FORMAT_VERSION = 1
LATEST_FILE = "latest.json"
CKPT_SUBDIR = "ckpt"  # an experiment dir keeps its checkpoints here

PathLike = Union[str, os.PathLike]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found, read or used."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(fileobj)`` on a hidden temp file next to ``path``, fsync it, then
    ``os.replace`` it onto ``path``. On any error the temp file is removed and ``path`` is
    untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _read_latest(directory: Path) -> Dict[str, Any]:
    pointer = directory / LATEST_FILE
    try:
        data = json.loads(pointer.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("checkpoint"), str):
            raise ValueError("no 'checkpoint' entry")
    except FileNotFoundError:
        raise CheckpointError(f"no {LATEST_FILE} in {directory}") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"unreadable checkpoint pointer {pointer}: {e}") from None
    return data


def save_checkpoint(
    path: PathLike,
    state: Dict[str, Any],
    *,
    update_latest: bool = True,
    keep_last: Optional[int] = None,
) -> Path:
    """Atomically ``torch.save`` ``state`` (plus ``format_version``) to ``path``.

    With ``update_latest`` the directory's ``latest.json`` then names this file (also written
    atomically). With ``keep_last=N`` only the N most recent checkpoints saved with
    ``update_latest`` are kept; other files in the directory are never deleted.
    """
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    path = Path(path)
    payload = {**state, "format_version": FORMAT_VERSION}
    atomic_write(path, lambda f: torch.save(payload, f))
    if not update_latest:
        return path

    directory = path.parent
    try:
        history = [name for name in _read_latest(directory).get("history", []) if name != path.name]
    except CheckpointError:
        history = []
    history.append(path.name)
    pruned = history[:-keep_last] if keep_last else []
    history = history[-keep_last:] if keep_last else history
    pointer = {"checkpoint": path.name, "history": history, "saved_at": time.time()}
    atomic_write(directory / LATEST_FILE, lambda f: f.write(json.dumps(pointer, indent=1).encode()))
    for name in pruned:  # after the pointer moved, so latest never names a deleted file
        (directory / name).unlink(missing_ok=True)
    return path


def resolve_checkpoint(path_or_dir: PathLike) -> Path:
    """A checkpoint file as is; for a directory (checkpoint dir, or experiment dir holding
    ``ckpt/``) the file its ``latest.json`` names.
    """
    path = Path(path_or_dir)
    if not path.is_dir():
        return path
    for directory in (path, path / CKPT_SUBDIR):
        if (directory / LATEST_FILE).exists():
            return directory / _read_latest(directory)["checkpoint"]
    raise CheckpointError(f"no {LATEST_FILE} in {path} or {path / CKPT_SUBDIR}: nothing to resume from")


def load_checkpoint(
    path_or_dir: PathLike,
    *,
    required_keys: Iterable[str] = (),
    map_location: Union[str, torch.device, None] = "cpu",
    weights_only: bool = False,
) -> Dict[str, Any]:
    """Load a checkpoint file, or the latest one of a directory; validate its top-level keys.

    Raises :class:`CheckpointError` naming the file for a missing, empty, truncated or corrupt
    file, a non-dict payload, a missing ``format_version`` / ``required_keys`` entry, or a
    newer format version.
    """
    path = resolve_checkpoint(path_or_dir)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty (0 bytes): {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as e:  # torch/pickle/zip errors differ by corruption kind; keep it short
        lines = str(e).strip().splitlines()
        reason = lines[0].split(". ")[0][:200] if lines else ""  # first sentence only
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or corrupt?): {type(e).__name__}: {reason}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    missing = [key for key in ("format_version", *required_keys) if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks required keys: {', '.join(missing)}")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format_version {state['format_version']}, newer than {FORMAT_VERSION}")
    return state


def capture_rng_state() -> Dict[str, Any]:
    """RNG states of python ``random``, numpy's global RNG, torch CPU and (if present) CUDA."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`. CUDA states are restored for the devices present."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)
