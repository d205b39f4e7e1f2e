"""Atari game names: resolve LightZero / gym / ROM-style names to the ROM ids bundled with ale-py.

Every ROM shipped with ``ale_py`` (>= 0.9) is a valid game. Accepted spellings of one game::

    'PongNoFrameskip-v4', 'ALE/Pong-v5', 'Pong', 'pong'
    'MsPacmanNoFrameskip-v4', 'MsPacman', 'ms_pacman'

List the valid names with ``list_games()`` or ``python -m lzero_ext.envs.atari_games``.
"""
import argparse
import difflib
import functools
import re
from typing import Dict, List, Optional, Tuple

import ale_py
from ale_py import roms

# Task lists of the ScaleZero paper (arXiv 2509.07945).
ATARI_8: Tuple[str, ...] = (
    "Pong", "MsPacman", "Seaquest", "Boxing", "Alien", "ChopperCommand", "Hero", "RoadRunner"
)
ATARI_26: Tuple[str, ...] = ATARI_8 + (
    "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "CrazyClimber", "DemonAttack", "Freeway",
    "Frostbite", "Gopher", "Jamesbond", "Kangaroo", "Krull", "KungFuMaster", "PrivateEye", "UpNDown", "Qbert",
    "Breakout"
)

LIST_HINT = (
    "List valid names with lzero_ext.envs.atari_games.list_games() or `python -m lzero_ext.envs.atari_games --list`"
)

# gym / ALE environment ids: optional 'ALE/' namespace, optional frame-skip flavour, optional '-vN' version.
_ENV_ID = re.compile(r"^(?:ALE/)?(?P<game>.+?)(?:NoFrameskip|Deterministic)?(?:-v\d+)?$")


def _key(name: str) -> str:
    """Spelling-insensitive lookup key: 'MsPacman', 'ms_pacman' and 'mspacman' all give 'mspacman'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def game_name(rom_id: str) -> str:
    """The CamelCase game name of a ROM id, as used in gym ids: 'ms_pacman' -> 'MsPacman'."""
    return rom_id.title().replace("_", "")


@functools.lru_cache(maxsize=1)
def _rom_ids_by_key() -> Dict[str, str]:
    return {_key(rom_id): rom_id for rom_id in roms.get_all_rom_ids()}


def list_games() -> List[str]:
    """CamelCase names of every Atari game available (one per ROM bundled with ale-py), sorted."""
    return sorted(game_name(rom_id) for rom_id in _rom_ids_by_key().values())


def resolve_game(name: str) -> str:
    """The ale-py ROM id of a game name, e.g. 'PongNoFrameskip-v4' -> 'pong', 'MsPacman' -> 'ms_pacman'.

    Raises:
        ValueError: unknown game; the message suggests close matches and how to list valid names.
    """
    if not isinstance(name, str):
        raise ValueError(f"env_id must be a str naming an Atari game, got {name!r} ({type(name).__name__})")
    match = _ENV_ID.match(name.strip())
    key = _key(match.group("game")) if match else _key(name)
    rom_ids = _rom_ids_by_key()
    if key in rom_ids:
        return rom_ids[key]
    close = difflib.get_close_matches(key, list(rom_ids), n=3, cutoff=0.6)
    suggestion = f" Did you mean {', '.join(repr(game_name(rom_ids[k])) for k in close)}?" if close else ""
    raise ValueError(f"Unknown Atari game {name!r}.{suggestion} {LIST_HINT}.")


@functools.lru_cache(maxsize=None)
def action_set(rom_id: str, full_action_space: bool) -> Tuple[int, ...]:
    """ALE action ids of a game: all 18 if ``full_action_space`` else the game's minimal set.

    Loads the ROM once per (game, process); cached afterwards.
    """
    if full_action_space:
        return tuple(int(action) for action in ale_py.Action.__members__.values())
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.loadROM(roms.get_rom_path(rom_id))
    return tuple(int(action) for action in ale.getMinimalActionSet())


def main(argv: Optional[List[str]] = None) -> None:
    """Command line: ``--list`` prints every game name; names given as arguments print their ROM ids."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print every valid game name")
    parser.add_argument("names", nargs="*", help="game names to resolve to ROM ids")
    args = parser.parse_args(argv)
    if args.list or not args.names:
        print("\n".join(list_games()))
    for name in args.names:
        print(f"{name} -> {resolve_game(name)}")


if __name__ == "__main__":
    main()
