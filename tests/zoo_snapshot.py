"""Compiled configs of every zoo preset, flattened for a snapshot comparison.

``python -m tests.zoo_snapshot`` rewrites ``tests/data/zoo_compiled_configs.json``; ``test_zoo_snapshot``
compares the current zoo configs with it. Each case stores its first task's compiled config as dotted keys
and, for every further task, only the keys that differ from the first (``"<absent>"`` for a missing key).
"""
import importlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

FIXTURE = Path(__file__).parent / "data" / "zoo_compiled_configs.json"
EXP_NAME = "runs/snapshot"
GAME_DIR = "<GAME_DIR>"
ABSENT = "<absent>"
ZOO = {"atari": "zoo.atari.config.scalezero_multitask_config",
       "dmc": "zoo.dmc.config.scalezero_dmc_multitask_config",
       "jericho": "zoo.jericho.config.scalezero_jericho_multitask_config",
       "minatar": "zoo.minatar.config.scalezero_minatar_multitask_config",
       "multidomain": "zoo.multidomain.config.scalezero_multidomain_config"}
NEEDS_GAMES = ("jericho", "multidomain")  # suites whose presets include Jericho games (their configs check the files)
# Variants built on the smoke preset of every suite, on top of each preset's defaults.
SMOKE_VARIANTS = {"dense": dict(dense=True), "bf16": dict(amp="bf16")}


def jericho_game_dir(root: str) -> str:
    """A game directory holding every Jericho preset's games: the shared files, and copies of detective under
    the names of missing ones (the configs read only names and checksums Jericho knows)."""
    from lzero_ext.envs.jericho_env import GAMES, game_dir

    source = game_dir(None)
    detective = source / GAMES["detective"].file
    for spec in GAMES.values():
        present = source / spec.file
        os.symlink(present if present.is_file() else detective, os.path.join(root, spec.file))
    return root


def jericho_available() -> bool:
    """Whether the Jericho game files are here (the Jericho configs check them); without them its cases are left out."""
    from lzero_ext.envs.jericho_env import GAMES, game_dir

    return (game_dir(None) / GAMES["detective"].file).is_file()


def cases(game_dir: str) -> Iterator[Tuple[str, Callable[[], List[Any]]]]:
    """``(name, build)`` for every preset of every suite and the smoke variants (Jericho's only with its games)."""
    for suite, module_name in ZOO.items():
        if suite in NEEDS_GAMES and not jericho_available():
            continue
        module = importlib.import_module(module_name)
        extra = dict(games_dir=game_dir) if suite in NEEDS_GAMES else {}
        for preset in module.PRESETS:
            yield f"{suite}/{preset}", _builder(module, preset, **extra)
        for variant, keys in SMOKE_VARIANTS.items():
            yield f"{suite}/smoke/{variant}", _builder(module, "smoke", **extra, **keys)
        dps = dict(dps_targets={"detective": 100.0, "omniquest": 10.0}) if suite == "jericho" \
            else dict(dps_targets={"detective": 100.0}) if suite == "multidomain" else dict(dps=True)
        yield f"{suite}/smoke/dps", _builder(module, "smoke", **extra, **dps)
        yield f"{suite}/smoke/default_exp_name", _builder(module, "smoke", exp_name=None, **extra)


def _builder(module: Any, preset: str, **keys: Any) -> Callable[[], List[Any]]:
    keys.setdefault("exp_name", EXP_NAME)
    return lambda: module.build_configs(preset, cuda=False, **keys)


def flatten(cfg: Any, prefix: str = "") -> Dict[str, Any]:
    """Dotted keys of a nested dict; lists stay values."""
    if not isinstance(cfg, dict) or not cfg:
        return {prefix: cfg}
    flat: Dict[str, Any] = {}
    for key, value in cfg.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def compiled_case(configs: List[Any], game_dir: str) -> Dict[str, Any]:
    """Compiled configs of one case: task 0 whole, later tasks as their differences from it."""
    from lzero_ext.entry.configs import _plain, compile_task_configs

    exp_name = configs[0][0].exp_name
    compiled = compile_task_configs(configs, seed=0, exp_name=exp_name, save_cfg=False)
    text = json.dumps([_plain(cfg) for cfg in compiled]).replace(game_dir, GAME_DIR)
    flats = [flatten(cfg) for cfg in json.loads(text)]
    first = flats[0]
    diffs = [{key: flat.get(key, ABSENT) for key in sorted(set(first) | set(flat))
              if flat.get(key, ABSENT) != first.get(key, ABSENT)} for flat in flats[1:]]
    return {"task0": first, "diffs": diffs}


def snapshot() -> Dict[str, Any]:
    """Every case's compiled configs (see the module docstring)."""
    import lzero_ext  # noqa: F401  (registers envs, models)
    import policies  # noqa: F401  (registers policies)

    with tempfile.TemporaryDirectory() as root:
        game_dir = jericho_game_dir(root)
        return {name: compiled_case(build(), game_dir) for name, build in cases(game_dir)}


if __name__ == "__main__":
    if not jericho_available():
        sys.exit("the Jericho game files are missing: the snapshot would lose the Jericho cases")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(snapshot(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)", file=sys.stderr)
