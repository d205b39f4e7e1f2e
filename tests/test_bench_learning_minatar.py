"""The learning benchmark's MinAtar suite: a smoke run of every arm (two games, one seed, a few dozen
env steps) that writes the tables, the report helpers it adds, and the final evaluation of arm (a) and of
games solved by DPS."""
import json
import math

import pytest

from lzero_ext.bench.learning_report import best_returns, expert_usage_table


def test_best_returns_and_expert_usage_known_answers():
    curves = {"a": {"t": {0: [(0, 1.0), (5, 3.0)], 1: [(0, 2.0)]}, "u": {0: [(0, -1.0)]}},
              "b": {"t": {0: [(0, 2.5), (5, float("nan"))]}, "u": {0: [(0, -3.0)]}}}
    assert best_returns(curves) == {"t": 3.0, "u": -1.0}
    diagnostics = {"dense": {0: {"grad_cos_mean": {"mean": 0.1}}},
                   "moe": {0: {"expert_entropy/task0": {"mean": 0.5}, "expert_max_share/task0": {"mean": 0.7},
                               "expert_entropy/task1": {"mean": 0.9}, "expert_max_share/task1": {"mean": 0.3}},
                           1: {"expert_entropy/task0": {"mean": 0.7}, "expert_max_share/task0": {"mean": 0.5}}}}
    text, numbers = expert_usage_table(diagnostics, {"moe": "MoE"}, ["Breakout", "Freeway"])
    assert set(numbers) == {"moe"}  # the dense arm has no routing
    assert numbers["moe"]["Breakout"]["expert_entropy"]["mean"] == pytest.approx(0.6)
    assert numbers["moe"]["Freeway"]["expert_max_share"]["n"] == 1
    assert "MoE" in text and "Freeway" in text
    assert expert_usage_table({"dense": {0: {}}}, {}, ["t"]) == ("", {})


def test_minatar_benchmark_smoke(tmp_path, capsys, monkeypatch):
    import logging

    from lzero_ext.bench.learning import MINATAR_MODES, main

    # As outside pytest, the root logger starts without handlers (else lightzero's basicConfig is a no-op).
    monkeypatch.setattr(logging.getLogger(), "handlers", [])

    main(["--suite", "minatar", "--mode", "smoke", "--out", str(tmp_path), "--jobs", "1"])
    out = capsys.readouterr().out
    assert "minatar suite" in out and "SMOKE" in out
    table = (tmp_path / "table.txt").read_text()
    for heading in ("final return", "env steps to reach the target return", "gradient conflict", "latent_norm",
                    "expert usage per task", "DPS stage switches"):
        assert heading in table, heading
    assert (tmp_path / "learning_curves.png").stat().st_size > 10_000
    results = json.loads((tmp_path / "results.json").read_text())
    games = [t.name for t in MINATAR_MODES["smoke"].tasks]
    assert results["suite_name"] == "minatar" and [t["name"] for t in results["suite"]] == games
    assert set(results["summary"]) == {"unizero", "dense", "moe", "dps"}
    for arm, block in results["summary"].items():
        for game in games:
            assert math.isfinite(block["tasks"][game]["final"]["mean"]), (arm, game)
        assert math.isfinite(block["normalized_mean"]["auc"]["mean"])
    for task in results["suite"]:  # reference = best return any arm reached (or random + 1 when none beat random)
        best = max(r for run in results["runs"] for c in [run["curves"].get(task["name"], [])] for _, r in c)
        assert task["reference_used"] == pytest.approx(max(best, task["random_return"] + 1.0))
    for arm in ("dense", "moe", "dps"):
        for key in ("grad_cos_mean", "dormant_ratio", "latent_norm"):
            assert math.isfinite(results["diagnostics"][arm][key]["mean"]), (arm, key)
    assert set(results["diagnostics"]["expert_usage"]) == {"moe", "dps"}
    assert sorted(r["arm"] for r in results["runs"]) == ["dense", "dps", "moe", "unizero", "unizero"]
    for arm, block in results["targets"].items():
        if arm != "dps":
            assert block["total_env_steps"]["mean"] >= len(games) * results["env_steps_per_task"]
    # All five runs ran one after another in this process: none may log into an earlier run's closed file.
    logs = {p.name: p.read_text() for p in tmp_path.glob("*.log")}
    assert len(logs) == 5 and not [name for name, text in logs.items() if "Logging error" in text]
    main(["--suite", "minatar", "--mode", "smoke", "--out", str(tmp_path), "--jobs", "1"])
    assert "5 of 5 runs loaded from the cache" in capsys.readouterr().out


def test_handlers_added_during_a_run_are_detached_and_closed(tmp_path):
    import logging

    from lzero_ext.bench.learning_runs import _handlers_removed_after

    root, named = logging.getLogger(), logging.getLogger("learner_logger_test")
    kept = logging.NullHandler()
    root.addHandler(kept)
    try:
        with open(tmp_path / "run.log", "w") as log, _handlers_removed_after():
            added = [logging.StreamHandler(log), logging.FileHandler(tmp_path / "learner.txt")]
            root.addHandler(added[0])
            named.addHandler(added[1])
        assert kept in root.handlers and added[0] not in root.handlers and not named.handlers
        assert added[1].stream is None  # closed
    finally:
        root.removeHandler(kept)


def _smoke_run(arm, tasks, tmp_path):
    """One run of the smoke settings with 3 evaluator envs: the final evaluation's 10 episodes take 4 rounds."""
    import dataclasses

    from lzero_ext.bench.learning import MINATAR_MODES
    from lzero_ext.bench.learning_runs import RunSpec, run

    settings = dataclasses.replace(MINATAR_MODES["smoke"].settings, evaluator_env_num=3)
    return run(RunSpec(arm, 0, tuple(tasks), settings, str(tmp_path)))


def test_lightzero_arm_ends_with_the_multitask_final_evaluation(tmp_path):
    from lzero_ext.bench.learning import MINATAR_MODES

    task = MINATAR_MODES["smoke"].tasks[0]
    result = _smoke_run("unizero", [task], tmp_path)
    # 10 final episodes rounded up to whole rounds of 3 envs, as the multi-task arms' (its regular ones play 3)
    assert result.final_episodes == {task.name: 12}
    assert result.curves[task.name][-1][0] == result.env_steps[task.name]


def test_dps_solved_task_gets_the_final_evaluation(tmp_path):
    import dataclasses

    from lzero_ext.bench.learning import MINATAR_MODES

    solved, other = MINATAR_MODES["smoke"].tasks[:2]
    solved = dataclasses.replace(solved, target_return=-1.0)  # solved by the baseline evaluation
    result = _smoke_run("dps", [solved, other], tmp_path)
    assert result.dps["solved"] == [solved.name] and result.env_steps[solved.name] < result.env_steps[other.name]
    assert result.final_episodes == {solved.name: 12, other.name: 12}
    # the evaluation that solved it came before its last collection round: the point at the env step where it
    # stopped is the final evaluation
    assert result.curves[solved.name][-1][0] == result.env_steps[solved.name] > 0
