"""Checks a Z-machine story file's header before jericho loads it.

jericho's C core ends the whole process with "Fatal error: Unknown Z-code version" (or worse) on a
file that is not a story file; reading the 64-byte header first turns that into one clear line.
Header fields (Z-machine Standard 1.1, section 11): byte 0 is the version (1..8), bytes 0x0E-0x0F
the start of static memory, bytes 0x1A-0x1B the file length divided by 2 (v1-3), 4 (v4-5) or 8 (v6-8).

Example::

    check_story_file("games/zork1.z5")   # returns the version, 3 here; raises ValueError for a fake file
"""
from pathlib import Path
from typing import Union

HEADER_BYTES = 64


def _length_scale(version: int) -> int:
    return 2 if version <= 3 else 4 if version <= 5 else 8


def check_story_file(path: Union[str, Path]) -> int:
    """The story file's Z-machine version; raises ``ValueError`` naming the file when the header is invalid."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < HEADER_BYTES:
        raise ValueError(f"{path} is not a Z-machine story file: {len(data)} bytes, shorter than the 64-byte header")
    version = data[0]
    if not 1 <= version <= 8:
        raise ValueError(f"{path} is not a Z-machine story file: version byte {version}, expected 1..8")
    static_base = int.from_bytes(data[0x0E:0x10], "big")
    if not HEADER_BYTES <= static_base <= len(data):
        raise ValueError(f"{path} is not a valid Z-machine story file: static memory starts at {static_base}, "
                         f"outside the file ({len(data)} bytes)")
    length = int.from_bytes(data[0x1A:0x1C], "big") * _length_scale(version)
    if length > len(data):
        raise ValueError(f"{path} is truncated: its header says {length} bytes, the file has {len(data)}")
    return version
