"""The ``(main_config, create_config)`` pair of a lightzero zoo config that builds itself inside ``main()``.

Some of lightzero's configs (``zoo/atari/config/atari_unizero_config.py``, ...) have no module-level
``main_config``: ``main(env_id, seed)`` builds the pair and ends with
``from lzero.entry import train_unizero; train_unizero([main_config, create_config], ...)``.
:func:`config_from_main` runs such a ``main()`` with lightzero's entries (``lzero.entry.train_*`` and
``eval_*``) replaced, for the length of the call, by one that stops and hands back the pair it was given;
nothing trains. Then swap the policy as for any other config (docs/policy_swap.md)::

    from zoo.atari.config import atari_unizero_config
    main_config, create_config = config_from_main(atari_unizero_config.main, env_id='PongNoFrameskip-v4')
"""
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Tuple

from easydict import EasyDict


class _Captured(Exception):
    """Raised by the stand-in entry to leave ``main()`` with the config it was called with."""

    def __init__(self, input_cfg: Any) -> None:
        super().__init__("config captured")
        self.input_cfg = input_cfg


def _capture(input_cfg: Any, *args: Any, **kwargs: Any) -> None:
    raise _Captured(input_cfg)


@contextmanager
def _entries_captured() -> Iterator[None]:
    import lzero.entry

    names = [name for name in dir(lzero.entry) if name.startswith(("train_", "eval_"))
             and callable(getattr(lzero.entry, name))]
    saved = {name: getattr(lzero.entry, name) for name in names}
    for name in names:
        setattr(lzero.entry, name, _capture)
    try:
        yield
    finally:
        for name, entry in saved.items():
            setattr(lzero.entry, name, entry)


def config_from_main(main: Callable[..., Any], *args: Any, **kwargs: Any) -> Tuple[EasyDict, EasyDict]:
    """Calls ``main(*args, **kwargs)`` up to its lightzero entry call; returns the ``(main_config, create_config)``
    it passed. Raises ``RuntimeError`` if ``main`` returns without calling one."""
    try:
        with _entries_captured():
            main(*args, **kwargs)
    except _Captured as captured:
        main_config, create_config = captured.input_cfg
        return main_config, create_config
    raise RuntimeError(f"{getattr(main, '__qualname__', main)} returned without calling a lzero.entry function")
