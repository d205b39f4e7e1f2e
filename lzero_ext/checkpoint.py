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

Each checkpoint carries a SHA-256 checksum of its payload (``payload_sha256``: every tensor's and
array's bytes, dtype and shape, and the plain values around them), checked on load, so flipped bits on
disk are a :class:`CheckpointError` instead of silently wrong weights. Objects of other types (a saved
replay buffer's game segments) enter the checksum by type only. Checkpoints are pickles: load only
files you trust (or pass ``weights_only=True``).
:func:`load_newest_intact` resumes from the newest checkpoint that reads (``latest.json`` first,
then its history, then a scan of ``iteration_<n>`` files), warning about every one it skips.
Files are created with mode ``0o666 & ~umask`` (group/world-readable as the umask allows), and a
failed write names the path and the cause (disk full, permission denied).
"""
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import random
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch

from lzero_ext.fs_errors import CAUSES, errno_cause

FORMAT_VERSION = 2  # 2: with a payload checksum (CHECKSUM_KEY); version 1 files (none) still load
CHECKSUM_KEY = "payload_sha256"
LATEST_FILE = "latest.json"
CKPT_SUBDIR = "ckpt"  # an experiment dir keeps its checkpoints here

PathLike = Union[str, os.PathLike]
ITERATION_FILE = re.compile(r"^iteration_(\d+)\.pth\.tar$")  # what the trainer writes
NEARLY_FULL_BYTES = 4 * 2**20  # a failed write with less free space than this was a full disk
logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found, read or used."""


class CheckpointWriteError(CheckpointError):
    """A file that could not be written; the message names the path and the cause (e.g. ENOSPC)."""


def file_mode() -> int:
    """``0o666 & ~umask``: the mode ``open()`` would give a new file (``mkstemp`` gives 0600).

    The umask is read from ``/proc/self/status`` where possible: ``os.umask`` can only read it by
    setting it, which races with other threads (TensorBoard's writer) creating files."""
    try:
        with open("/proc/self/status") as status:
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


_CAUSES = {code: errno_cause(code) for code in CAUSES}  # e.g. "no space left on device (ENOSPC)"


def write_failure_cause(error: BaseException, directory: Path) -> Optional[str]:
    """The cause of a failed write, if it is one users can act on: ENOSPC, EACCES, ... .

    torch's zip writer reports a full disk as ``RuntimeError: ... unexpected pos`` without the errno,
    so a failure with (nearly) no free space left on ``directory``'s file system counts as ENOSPC too.
    """
    for exc in (error, error.__cause__, error.__context__):
        if isinstance(exc, OSError) and exc.errno in _CAUSES:
            return _CAUSES[exc.errno]
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return None
    if free < NEARLY_FULL_BYTES:
        return f"{_CAUSES[errno.ENOSPC]}: {free // 1024} KiB free"
    return None


def _digest(obj: Any, h: "hashlib._Hash") -> None:
    """Feeds ``obj``'s content into ``h``: the same for a state and the same state after save and load."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        h.update(f"T{t.dtype}{tuple(t.shape)}|".encode())
        if t.layout == torch.strided:
            h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        h.update(f"A{obj.dtype}{obj.shape}|".encode())
        if obj.dtype == object:
            for item in obj.reshape(-1):
                _digest(item, h)
        else:
            h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}|".encode())
        for key, value in obj.items():
            _digest(key, h)
            _digest(value, h)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}|".encode())
        for item in obj:
            _digest(item, h)
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes, np.generic)):
        h.update(f"{type(obj).__name__}:{obj!r}|".encode())
    else:  # other objects (a replay buffer's segments): by type only, their pickled layout is not stable
        h.update(f"O{type(obj).__module__}.{type(obj).__qualname__}|".encode())


def payload_checksum(state: Dict[str, Any]) -> str:
    """The SHA-256 of ``state``'s content (see the module docstring), without its ``CHECKSUM_KEY`` entry."""
    h = hashlib.sha256()
    _digest({k: v for k, v in state.items() if k != CHECKSUM_KEY}, h)
    return h.hexdigest()


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
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException as error:
        cause = write_failure_cause(error, path.parent) if isinstance(error, Exception) else None
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
        if cause is not None:
            raise CheckpointWriteError(f"cannot write {path}: {cause}") from None
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
    payload = {k: v for k, v in state.items() if k != CHECKSUM_KEY}
    payload["format_version"] = FORMAT_VERSION
    payload[CHECKSUM_KEY] = payload_checksum(payload)
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
    file, a non-dict payload, a missing ``format_version`` / ``required_keys`` entry, a newer
    format version, or a payload whose checksum does not match (bits changed on disk).
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
    if state["format_version"] >= 2:
        if not isinstance(state.get(CHECKSUM_KEY), str):
            raise CheckpointError(f"checkpoint {path} is corrupt: it has no payload checksum ({CHECKSUM_KEY})")
        if payload_checksum(state) != state[CHECKSUM_KEY]:
            raise CheckpointError(f"checkpoint {path} is corrupt: its payload does not match its checksum "
                                  f"(bits changed on disk)")
    return state


def checkpoint_iteration(path: PathLike) -> Optional[int]:
    """``n`` of an ``iteration_<n>.pth.tar`` file name, else None."""
    match = ITERATION_FILE.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(directory: PathLike) -> List[Path]:
    """Checkpoint candidates of ``directory``, newest first: ``latest.json``'s file, its history
    (newest first), then every other ``iteration_<n>.pth.tar`` by decreasing ``n``. No file is read."""
    directory = Path(directory)
    names: List[str] = []
    try:
        pointer = _read_latest(directory)
        names = [pointer["checkpoint"], *reversed([n for n in pointer.get("history", []) if isinstance(n, str)])]
    except CheckpointError:
        pass
    scanned = sorted((p.name for p in directory.glob("iteration_*.pth.tar") if checkpoint_iteration(p) is not None),
                     key=checkpoint_iteration, reverse=True)
    ordered = list(dict.fromkeys(names + scanned))  # unique, first occurrence wins
    return [directory / name for name in ordered]


def load_newest_intact(
    directory: PathLike,
    *,
    required_keys: Iterable[str] = (),
    map_location: Union[str, torch.device, None] = "cpu",
    below: Optional[int] = None,
) -> Tuple[Path, Dict[str, Any]]:
    """``(path, state)`` of the newest checkpoint in ``directory`` that loads and has ``required_keys``.

    Tries :func:`list_checkpoints` in order and logs a warning for each one skipped (missing,
    truncated, corrupt). ``below`` skips ``iteration_<n>`` files with ``n >= below`` silently.
    Raises :class:`CheckpointError` when none is usable, with the first problem found.
    """
    directory = Path(directory)
    required_keys = tuple(required_keys)
    problems: List[str] = []
    for path in list_checkpoints(directory):
        iteration = checkpoint_iteration(path)
        if below is not None and iteration is not None and iteration >= below:
            continue
        try:
            state = load_checkpoint(path, required_keys=required_keys, map_location=map_location)
        except CheckpointError as error:
            problems.append(str(error))
            logger.warning(f"skipping a checkpoint: {error}")
            continue
        if problems:
            logger.warning(f"resuming from the older intact checkpoint {path} ({len(problems)} newer unusable)")
        return path, state
    if problems:
        raise CheckpointError(f"no intact checkpoint in {directory}: {problems[0]}")
    raise CheckpointError(f"no checkpoint in {directory}: nothing to resume from")


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
