"""lzero_ext.summary: normalised scores, summary table/json and the learning-curve PNG."""
import io
import json
import math

import numpy as np
import pytest

from lzero_ext.summary import (
    ATARI_SCORES, TaskRecord, atari_game_name, dmc_normalized_score,
    human_normalized_score, normalized_score, plot_learning_curves, print_summary_table, summarize, write_summary,
)

ATARI_26 = (
    "Pong MsPacman Seaquest Boxing Alien ChopperCommand Hero RoadRunner Amidar Assault Asterix BankHeist "
    "BattleZone CrazyClimber DemonAttack Freeway Frostbite Gopher Jamesbond Kangaroo Krull KungFuMaster "
    "PrivateEye UpNDown Qbert Breakout"
).split()


def test_tables_cover_atari26():
    assert sorted(ATARI_SCORES) == sorted(ATARI_26)
    assert ATARI_SCORES["Pong"] == (-20.7, 14.6)
    assert (ATARI_SCORES["UpNDown"][0], ATARI_SCORES["PrivateEye"][1]) == (533.4, 69571.3)


def test_hns_known_values():
    assert human_normalized_score("Pong", -20.7) == pytest.approx(0.0)
    assert human_normalized_score("Pong", 14.6) == pytest.approx(1.0)
    assert human_normalized_score("MsPacman", (307.3 + 6951.6) / 2) == pytest.approx(0.5)
    for game in ATARI_26:
        random_score, human_score = ATARI_SCORES[game]
        assert human_normalized_score(game, random_score) == pytest.approx(0.0)
        assert human_normalized_score(game, human_score) == pytest.approx(1.0)
    assert human_normalized_score("Pitfall", 0.0) is None
    assert dmc_normalized_score(875.0) == 0.875


@pytest.mark.parametrize("env_id, game", [
    ("PongNoFrameskip-v4", "Pong"), ("ALE/Pong-v5", "Pong"), ("pong", "Pong"), ("ms_pacman", "MsPacman"),
    ("MsPacmanNoFrameskip-v4", "MsPacman"), ("ALE/MsPacman-v5", "MsPacman"), ("UpNDownDeterministic-v4", "UpNDown"),
    ("JamesBond", "Jamesbond"), ("ALE/Pitfall-v5", "Pitfall"),
])
def test_env_id_normalisation(env_id, game):
    assert atari_game_name(env_id) == game


def test_hns_accepts_env_ids():
    assert human_normalized_score("PongNoFrameskip-v4", 14.6) == pytest.approx(1.0)
    assert human_normalized_score("ALE/Boxing-v5", 0.1) == pytest.approx(0.0)


def _records():
    pong, boxing, pitfall = TaskRecord(0, "PongNoFrameskip-v4"), TaskRecord(1, "BoxingNoFrameskip-v4"), TaskRecord(2, "ALE/Pitfall-v5")
    for step, ret in ((1000, -21.0), (2000, -2.95), (3000, 14.6)):  # latest: HNS 1
        pong.add_eval(step, ret, kind="atari")
    boxing.add_eval(1000, 6.1, kind="atari")  # HNS 0.5
    pitfall.add_eval(1000, 3.0, kind="atari")  # no table entry
    return [pong, boxing, TaskRecord(3, "SeaquestNoFrameskip-v4"), pitfall]  # Seaquest: never evaluated


def test_task_record_add_eval():
    pong = _records()[0]
    assert (pong.env_steps, pong.eval_return) == (3000, 14.6)
    assert pong.normalized == pytest.approx(1.0) and len(pong.history) == 3


def test_summarize_mean_median():
    summary = summarize(_records(), kind="atari")
    assert [row["normalized"] for row in summary["tasks"]][2:] == [None, None]
    assert summary["num_scored"] == 2
    assert summary["mean"] == pytest.approx(0.75) and summary["median"] == pytest.approx(0.75)
    three = summarize([TaskRecord(i, f"t{i}", eval_return=r) for i, r in enumerate((100.0, 900.0, 200.0))], kind="dmc")
    assert three["mean"] == pytest.approx(0.4) and three["median"] == pytest.approx(0.2)
    raw = summarize([TaskRecord(0, "zork1", eval_return=30.0), TaskRecord(1, "detective", eval_return=float("nan"))], kind="raw")
    assert (raw["mean"], raw["num_scored"]) == (30.0, 1)
    assert summarize([], kind="dmc")["mean"] is None
    with pytest.raises(ValueError, match="unknown kind"):
        summarize([], kind="procgen")
    with pytest.raises(ValueError, match="unknown kind"):
        normalized_score("Atari", "Pong", 1.0)


def test_print_summary_table():
    buf = io.StringIO()
    table = print_summary_table(summarize(_records(), kind="atari"), file=buf)
    assert buf.getvalue().strip() == table.strip()
    header, *_ = table.splitlines()
    for column in ("task", "env steps", "latest eval return", "HNS"):
        assert column in header
    assert "0: PongNoFrameskip-v4" in table and "3000" in table and "14.600" in table
    assert "mean HNS (2 tasks)" in table and "0.750" in table and "median HNS" in table


def test_scores_of_capped_episodes_are_marked(tmp_path):
    records = _records()[:2]
    records[0].episode_cap = "200 frames (full games: up to 108,000)"
    summary = summarize(records, kind="atari")
    assert summary["capped_tasks"] == ["PongNoFrameskip-v4"]
    assert [row["episode_cap"] for row in summary["tasks"]] == ["200 frames (full games: up to 108,000)", None]
    table = print_summary_table(summary, file=io.StringIO())
    assert "0: PongNoFrameskip-v4*" in table and "1: BoxingNoFrameskip-v4*" not in table
    assert "mean HNS (2 tasks, 1 with *)" in table
    assert table.splitlines()[-2:] == ["* evaluated on episodes cut short, so these scores are not comparable with "
                                       "published ones:", "  PongNoFrameskip-v4: 200 frames (full games: up to 108,000)"]
    written = json.loads(write_summary(tmp_path, summary).read_text())
    assert written["capped_tasks"] == ["PongNoFrameskip-v4"] and written["tasks"][0]["episode_cap"].startswith("200")
    full = print_summary_table(summarize(_records(), kind="atari"), file=io.StringIO())
    assert "*" not in full and "cut short" not in full


def test_raw_returns_are_one_column():
    table = print_summary_table(summarize([TaskRecord(0, "Breakout", eval_return=3.25)], kind="raw"), file=io.StringIO())
    header, _, row, mean, median, _ = table.splitlines()
    assert header.split() == ["task", "env", "steps", "latest", "eval", "return"]
    assert row.split()[-1] == "3.250" and row.count("3.250") == 1
    assert mean.startswith("mean return (1 tasks)") and mean.split()[-1] == "3.250" and median.split()[-1] == "3.250"


def test_write_summary_json(tmp_path):
    summary = summarize(_records(), kind="atari")
    path = write_summary(tmp_path / "exp", summary, extra={"iterations": np.int64(12), "loss": float("nan"), "lr": np.float32(0.5)})
    assert path == tmp_path / "exp" / "summary.json"
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]  # no temp file left
    data = json.loads(path.read_text())
    assert data["kind"] == "atari" and data["score_name"] == "HNS"
    assert data["mean"] == pytest.approx(0.75) and data["median"] == pytest.approx(0.75)
    expected = {"task_id": 0, "name": "PongNoFrameskip-v4", "env_steps": 3000, "eval_return": 14.6,
                "normalized": pytest.approx(1.0), "history": [[1000, -21.0], [2000, -2.95], [3000, 14.6]],
                "episode_cap": None}
    assert {key: data["tasks"][0][key] for key in expected} == expected
    assert data["capped_tasks"] == []
    assert data["total_env_steps"] == sum(row["env_steps"] for row in data["tasks"])
    assert data["tasks"][2]["eval_return"] is None
    assert data["extra"] == {"iterations": 12, "loss": None, "lr": 0.5}
    assert "NaN" not in path.read_text()


def test_learning_curves_png(tmp_path):
    records = _records() + [TaskRecord(4, "bad", history=[(1, math.inf)])]
    path = plot_learning_curves(tmp_path, records)
    data = path.read_bytes()
    assert path.parent == tmp_path and path.suffix == ".png"
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    with pytest.raises(ValueError, match="no task records"):
        plot_learning_curves(tmp_path, [])
