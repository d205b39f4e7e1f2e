"""``python -m lzero_ext.bench preset_learning``: a zoo preset over seeds, each game judged by the learned rule."""
import json
import subprocess
import sys
from pathlib import Path

from lzero_ext.bench.preset_learning import judge, minatar_bars, run_figures


def _summary(finals, episodes=10, wall=100.0):
    tasks = [dict(name=name, eval_return=value, eval_episodes=episodes, history=[[0, 0.0], [120, value]])
             for name, value in finals.items()]
    return dict(tasks=tasks, total_env_steps=240, extra=dict(wall_seconds=wall, phase_seconds=dict(eval=10.0,
                                                                                                collect=30.0)))


def test_judge_applies_the_rule_with_the_games_own_bars():
    summaries = {seed: _summary({"Breakout": 2.0 + 0.1 * seed, "Freeway": 4.0 + seed}) for seed in (0, 1, 2)}
    games = judge(summaries, minatar_bars)
    assert games["Breakout"]["verdict"].passed and games["Breakout"]["verdict"].bar == 0.54  # random beats no-op
    freeway = games["Freeway"]["verdict"]
    assert freeway.judged and not freeway.passed and freeway.bar == 5.06  # "always up" is the bar, not random's 0.02
    assert games["Breakout"]["finals"] == {0: 2.0, 1: 2.1, 2: 2.2}
    assert games["Breakout"]["curves"][1] == [[0, 0.0], [120, 2.1]]


def test_a_final_evaluation_under_ten_episodes_cannot_be_judged():
    summaries = {seed: _summary({"Breakout": 3.0 + seed}, episodes=5) for seed in (0, 1)}
    verdict = judge(summaries, minatar_bars)["Breakout"]["verdict"]
    assert not verdict.judged and not verdict.passed and "5 episodes" in verdict.reason


def test_run_figures_divide_by_the_training_loop_wall_time():
    figures = run_figures(_summary({"Breakout": 1.0}, wall=120.0))
    assert figures == dict(wall_seconds=120.0, env_steps_per_s=2.0, eval_share=10.0 / 120.0,
                           collect_share=30.0 / 120.0)
    assert run_figures(dict(total_env_steps=5, extra={}))["env_steps_per_s"] is None  # summaries from before timings


def test_smoke_preset_over_two_seeds_writes_the_report_and_reuses_its_runs(tmp_path):
    out = tmp_path / "report"
    command = [sys.executable, "-m", "lzero_ext.bench", "preset_learning", "--preset", "smoke", "--seeds", "0", "1",
               "--out", str(out)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    last = first.stdout.strip().splitlines()[-1]
    assert last.startswith("preset learning: minatar smoke moe, learned 0 of 5 games (95% CI over 2 seeds), ")
    assert last.endswith(" min per run") and " env steps/s, " in last
    results = json.loads((out / "results.json").read_text())
    assert set(results["games"]) == {"Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders"}
    assert results["games"]["Breakout"]["episodes"] == {"0": 1, "1": 1}  # the smoke preset's one-episode evaluations
    assert "final eval of 1 episodes" in results["games"]["Breakout"]["verdict"]["reason"]
    assert all(results["runs"][s]["run_seconds"] > results["runs"][s]["wall_seconds"] > 0 for s in ("0", "1"))
    assert (out / "table.txt").read_text().count("\n") > 8 and (out / "learning_curves.png").stat().st_size > 0
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("reusing") == 2 and ": training" not in again.stdout
    assert Path(out / "runs" / "seed1" / "summary.json").is_file()


def test_lightzero_evaluates_near_each_quarter_of_the_budget():
    from easydict import EasyDict

    from lzero_ext.bench.preset_learning import lightzero_eval_freq

    # the cpu preset: 40 updates per 8 segments of 20 steps, 12,000 env steps -> 3,000 iterations, every 750
    per_round = EasyDict(update_per_collect=40, collector_env_num=8, game_segment_length=20)
    assert lightzero_eval_freq(per_round, 12_000) == 750
    assert lightzero_eval_freq(EasyDict(update_per_collect=None, replay_ratio=0.5), 400) == 50  # from the ratio


def test_unizero_arm_trains_lightzero_per_game_and_reuses_finished_games(tmp_path):
    out = tmp_path / "report"
    command = [sys.executable, "-m", "lzero_ext.bench", "preset_learning", "--preset", "smoke", "--seeds", "0", "1",
               "--unizero", "--out", str(out)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.strip().splitlines()[-1].startswith(
        "preset learning: minatar smoke unizero, learned 0 of 5 games (95% CI over 2 seeds), ")
    seed0 = out / "runs" / "seed0"
    summary = json.loads((seed0 / "summary.json").read_text())
    assert [row["name"] for row in summary["tasks"]] == ["Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders"]
    for row in summary["tasks"]:
        assert row["env_steps"] >= 40 and row["train_iter"] > 0  # each game its own lightzero run over its budget
        assert row["history"][0][0] == 0 and row["history"][-1] == [row["env_steps"], row["eval_return"]]
        assert row["eval_episodes"] == 1  # the smoke preset's final evaluation: one episode per evaluator env
        assert (seed0 / row["name"] / "log").is_dir()  # lightzero's own files, per game
    assert summary["total_env_steps"] == sum(row["env_steps"] for row in summary["tasks"])

    # a game finished before an interruption is not trained again
    (seed0 / "summary.json").unlink()
    (seed0 / "Freeway.json").unlink()
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "seed 0 Freeway:" in again.stdout and "seed 0 Breakout:" not in again.stdout
    assert "seed 1 " not in again.stdout.replace("seed 1: reusing", "")


def test_unizero_arm_refuses_the_multitask_flags():
    result = subprocess.run([sys.executable, "-m", "lzero_ext.bench", "preset_learning", "--unizero", "--dps"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--unizero is lightzero's single-task UniZero" in result.stderr


def test_set_makes_a_variant_of_its_own(tmp_path):
    command = [sys.executable, "-m", "lzero_ext.bench", "preset_learning", "--preset", "smoke", "--seeds", "0",
               "--max-env-step", "20", "--set", "num_simulations=3", "--out", str(tmp_path / "report")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("preset learning: minatar smoke moe_num_simulations3, ")
    assert json.loads((tmp_path / "report" / "results.json").read_text())["overrides"] == {"num_simulations": 3}
    wrong = subprocess.run(command[:-2] + ["--set", "num_simulations=many"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "num_simulations takes int" in wrong.stderr
