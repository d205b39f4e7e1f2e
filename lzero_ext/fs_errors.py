"""File-system failures as one line naming the path and the cause, and the output-directory check
every command runs before it does any work.

:func:`describe_os_error` turns an ``OSError`` into ``cannot <action> <path>: <cause> (<ERRNO>)``, e.g.
``cannot create runs/aaaa...: file name too long (ENAMETOOLONG)``. :func:`check_output_dir` makes
sure a directory a command will write into exists (it is created), is a directory, takes a new file
and has room on its disk, before anything else is written; on failure it removes the directories
it created and raises :class:`OutputDirError` with that line.

Example::

    check_output_dir("runs/a", flag="--exp-name")      # creates runs/a, or raises OutputDirError
    try:
        open("/proc/x", "w")
    except OSError as error:
        print(describe_os_error(error, action="write"))  # cannot write /proc/x: ... (ENOENT)
"""
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional, Union

PathLike = Union[str, os.PathLike]
MIN_FREE_BYTES = 4 * 2**20  # a run, evaluation or video needs at least this much room to start
CAUSES = {
    errno.ENAMETOOLONG: "file name too long", errno.ENOTDIR: "not a directory",
    errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on device",
    errno.EACCES: "permission denied", errno.EEXIST: "file exists", errno.EPERM: "operation not permitted",
    errno.EDQUOT: "disk quota exceeded", errno.EISDIR: "is a directory", errno.ENOENT: "no such file or directory",
    errno.ELOOP: "too many levels of symbolic links", errno.EIO: "input/output error",
}


class OutputDirError(ValueError):
    """A directory a command would write into cannot be used (one line: the path and the cause)."""


def errno_cause(code: Optional[int], fallback: str = "") -> str:
    """``'read-only file system (EROFS)'`` for ``errno.EROFS``; ``fallback`` (or the OS's text) for others."""
    if code is None:
        return fallback or "unknown cause"
    name = errno.errorcode.get(code, str(code))
    return f"{CAUSES.get(code) or fallback or os.strerror(code)} ({name})"


def describe_os_error(error: OSError, *, action: str = "use", path: Optional[PathLike] = None) -> str:
    """One line for ``error``: ``cannot <action> <path>: <cause> (<ERRNO>)``; ``path`` defaults to the error's."""
    where = path if path is not None else error.filename
    cause = errno_cause(error.errno, error.strerror or str(error))
    if error.filename2 is not None and path is None:
        where = f"{where} -> {error.filename2}"
    return f"cannot {action} {where}: {cause}" if where is not None else cause


def _missing_parents(path: Path) -> List[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first (what ``makedirs`` would create)."""
    missing = []
    for candidate in (path, *path.parents):
        try:
            if os.path.lexists(candidate):
                break
        except OSError:
            break
        missing.append(candidate)
    return missing


def check_output_dir(path: PathLike, *, flag: str, min_free_bytes: int = MIN_FREE_BYTES) -> Path:
    """Creates ``path`` if needed and checks that it is a writable directory with ``min_free_bytes`` free.

    Raises :class:`OutputDirError` (``<flag> <path>: <cause> (<ERRNO>)``) otherwise, after removing the
    directories this call created, so a refused command leaves nothing behind."""
    text = os.fspath(path)
    if not str(text).strip():
        raise OutputDirError(f"{flag} is empty: give a directory name")
    directory = Path(text)
    if os.path.exists(directory) and not os.path.isdir(directory):  # os.path: no OSError for too-long names
        raise OutputDirError(f"{flag} {directory}: is an existing file, not a directory ({errno.errorcode[errno.EEXIST]})")
    created = _missing_parents(directory)
    try:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputDirError(f"{flag} {directory}: {describe_os_error(error, action='create')}") from None
        try:
            fd, probe = tempfile.mkstemp(prefix=".write_check.", dir=directory)
            os.close(fd)
            os.unlink(probe)
        except OSError as error:
            raise OutputDirError(f"{flag} {directory}: cannot write in it: {errno_cause(error.errno)}") from None
        try:
            free = shutil.disk_usage(directory).free
        except OSError:
            free = None
        if free is not None and free < min_free_bytes:
            raise OutputDirError(f"{flag} {directory}: {errno_cause(errno.ENOSPC)}: {free // 1024} KiB free, "
                                 f"at least {min_free_bytes // 2**20} MiB needed")
    except OutputDirError:
        for made in created:  # deepest first; only the empty directories this call made
            try:
                made.rmdir()
            except OSError:
                break
        raise
    return directory
