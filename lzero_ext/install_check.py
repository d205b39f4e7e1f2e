"""Post-install sanity check: ``python -m lzero_ext.install_check``.

Verifies the facts the install must guarantee (requirements/pins.in): the pinned CPU torch with
no CUDA packages on a CPU build, Atari ROMs bundled offline, lightzero's compiled MCTS trees,
the ``zoo`` merge, and the project's registry entries. Exits non-zero naming the first problem.
"""
import importlib
import sys
from importlib import metadata
from typing import Callable, List, Tuple

EXPECTED_TORCH = "2.13.0"
ROM_GAMES = ("pong", "breakout", "ms_pacman")


def check_torch() -> str:
    import torch

    if not torch.__version__.startswith(EXPECTED_TORCH):
        raise RuntimeError(f"torch {torch.__version__} installed, expected {EXPECTED_TORCH} (see requirements/pins.in)")
    nvidia = sorted(d.metadata["Name"] for d in metadata.distributions() if d.metadata["Name"].lower().startswith("nvidia-"))
    if torch.version.cuda is None and nvidia:
        raise RuntimeError(f"CPU torch but CUDA packages installed: {', '.join(nvidia)}")
    return f"torch {torch.__version__} ({'CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU'}), {len(nvidia)} nvidia-* packages"


def check_roms() -> str:
    from ale_py import roms

    paths = {game: roms.get_rom_path(game) for game in ROM_GAMES}
    missing = [game for game, path in paths.items() if path is None]
    if missing:
        raise RuntimeError(f"Atari ROMs missing for {missing}: ale-py must be >=0.9 (ROMs bundled)")
    return f"ale-py ROMs present for {', '.join(ROM_GAMES)}"


def check_mcts() -> str:
    importlib.import_module("lzero.mcts.ctree.ctree_muzero.mz_tree")
    from lzero.mcts import UniZeroMCTSCtree  # noqa: F401

    return "lightzero C++ MCTS trees import"


def check_zoo_merge() -> str:
    importlib.import_module("zoo.atari.envs.atari_lightzero_env")  # lightzero's
    importlib.import_module("zoo.atari.config.scalezero_multitask_config")  # ours
    return "zoo/ merged with lightzero's"


def check_registry() -> str:
    import lzero_ext.registry

    return f"registered: {lzero_ext.registry.registered_names()}"


CHECKS: List[Tuple[str, Callable[[], str]]] = [
    ("torch", check_torch),
    ("atari roms", check_roms),
    ("mcts", check_mcts),
    ("zoo merge", check_zoo_merge),
    ("registry", check_registry),
]


def main() -> int:
    for name, check in CHECKS:
        try:
            print(f"[install-check] {name}: {check()}")
        except Exception as error:  # report the failing fact, not a traceback
            print(f"[install-check] FAILED {name}: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
