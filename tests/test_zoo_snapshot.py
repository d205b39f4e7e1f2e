"""Every zoo config builds the compiled configs recorded in tests/data/zoo_compiled_configs.json.

A change meant to alter them (a new policy default, a preset's new size) rewrites the record with
``python -m tests.zoo_snapshot``; review its diff: a refactor of the zoo configs or the suite builder should
leave it empty."""
import json

import pytest

from tests.zoo_snapshot import FIXTURE, NEEDS_GAMES, jericho_available, snapshot


@pytest.fixture(scope="module")
def current():
    return snapshot()


@pytest.fixture(scope="module")
def recorded():
    cases = json.loads(FIXTURE.read_text())
    if not jericho_available():  # its configs check the game files: without them only the other suites compare
        cases = {name: case for name, case in cases.items() if name.split("/")[0] not in NEEDS_GAMES}
    return cases


def test_every_preset_and_variant_is_recorded(current, recorded):
    assert sorted(current) == sorted(recorded)


@pytest.mark.skipif(not jericho_available(), reason="Jericho game files not found (../shared/jericho-games)")
def test_the_jericho_presets_are_compared_where_the_games_are(current):
    assert any(name.startswith("jericho/") for name in current)


def test_compiled_configs_match_the_snapshot(current, recorded):
    for name, case in recorded.items():
        now = json.loads(json.dumps(current[name]))  # tuples as lists, as stored
        changed = {key: (value, now["task0"].get(key)) for key, value in case["task0"].items()
                   if now["task0"].get(key, "<absent>") != value}
        added = sorted(set(now["task0"]) - set(case["task0"]))
        assert not changed and not added, (f"{name}: task 0 changed {changed}, new keys {added} (if intended: "
                                           f"python -m tests.zoo_snapshot)")
        assert now["diffs"] == case["diffs"], f"{name}: the later tasks differ from task 0 differently"
