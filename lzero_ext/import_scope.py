"""Imports of the third-party stack without global side effects (standard library only).

gym, DI-engine and lightzero print banners and warnings when first imported ("Gym has been
unmaintained", numba / pyecharts hints, FutureWarnings) and change the root logger: lightzero's
world-model module sets it to DEBUG, ding's import-time ``logging.warning`` calls add a root
handler. :func:`captured_imports` runs such imports with their output captured and the root
logger's level, handlers and filters restored afterwards; :func:`import_noise` gives back what was
printed (``--verbose`` runs print it).

Example::

    with captured_imports():
        import ding.utils  # noqa: F401
    print(import_noise())  # the banners and warnings it printed, if you want them
"""
import contextlib
import io
import logging
import sys
import warnings
from typing import Iterator, List

_NOISE: List[str] = []  # text printed, warned or logged during captured imports, in order


class _ListHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _NOISE.append(f"{record.levelname} {record.name}: {record.getMessage()}\n")


@contextlib.contextmanager
def captured_imports() -> Iterator[None]:
    """Imports inside this scope print nothing and leave the root logger as it was."""
    root = logging.getLogger()
    level, handlers, filters = root.level, list(root.handlers), list(root.filters)
    capture = _ListHandler(logging.INFO)
    root.handlers = [capture]  # a handler present: ding's module-level logging.warning does not call basicConfig
    out, err = io.StringIO(), io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            warnings.simplefilter("always")
            yield
    finally:
        root.setLevel(level)
        root.handlers = handlers
        root.filters = filters
        _NOISE.extend(text for text in (out.getvalue(), err.getvalue()) if text)
        _NOISE.extend(f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}\n" for w in caught)


def import_noise() -> str:
    """Everything the captured imports printed, warned or logged."""
    return "".join(_NOISE)


def replay_import_noise(stream=None) -> None:
    """Writes :func:`import_noise` to ``stream`` (default ``sys.stderr``): what ``--verbose`` shows."""
    (stream or sys.stderr).write(import_noise())
