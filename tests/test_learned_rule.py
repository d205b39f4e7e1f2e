"""When a MinAtar game counts as learned: the Student-t CI over seeds against max(random, best constant
action), the reference numbers it needs, and the command that measures them."""
import math

import pytest
from easydict import EasyDict

from lzero_ext.bench.baselines import ACTION_NAMES, baseline_returns, measure
from lzero_ext.bench.learning_report import games_learned, learned, learned_verdicts, results_table
from lzero_ext.envs.minatar_env import list_games
from lzero_ext.envs.minatar_scores import CONSTANT_ACTION_RETURNS, RANDOM_RETURNS

T_975_DF2 = 4.302652729749464  # Student-t 97.5% quantile, 2 degrees of freedom (3 seeds)


def test_ci_known_answer_and_a_clearly_learned_game_passes():
    v = learned([7.0, 7.5, 8.0], [10, 12, 10], random_return=0.02, constant_return=5.06)
    half = T_975_DF2 * 0.5 / math.sqrt(3)  # sample std 0.5
    assert v.judged and v.passed and v.seeds == 3 and v.bar == 5.06
    assert (v.mean, v.ci_low, v.ci_high) == pytest.approx((7.5, 7.5 - half, 7.5 + half))
    assert v.cell().startswith("yes (95% CI [6.26, 8.74] > 5.06")


def test_ci_touching_the_bar_fails_although_every_seed_is_above_it():
    # Seeds 6.5, 7.5, 8.5 all beat Freeway's "always up" (5.06), but the CI's lower bound 5.02 does not.
    v = learned([6.5, 7.5, 8.5], [10, 10, 10], random_return=0.02, constant_return=5.06)
    assert v.judged and not v.passed
    assert v.ci_low == pytest.approx(7.5 - T_975_DF2 / math.sqrt(3)) and v.ci_low < v.bar < v.mean
    assert v.cell().startswith("no (")
    # A lower confidence narrows the interval: at 80% the same seeds pass.
    assert learned([6.5, 7.5, 8.5], [10, 10, 10], 0.02, 5.06, confidence=0.8).passed


def test_bar_is_the_larger_of_random_and_best_constant():
    # Seaquest: random 0.06 beats every constant action (0.00); identical seeds give a zero-width CI.
    assert learned([0.05, 0.05], [10, 10], random_return=0.06, constant_return=0.0).bar == 0.06
    assert not learned([0.05, 0.05], [10, 10], random_return=0.06, constant_return=0.0).passed
    assert learned([0.07, 0.07], [10, 10], random_return=0.06, constant_return=0.0).passed


@pytest.mark.parametrize("returns, episodes, reason", [
    ([9.0], [10], "1 seed < 2"),
    ([], [], "0 seeds < 2"),
    ([9.0, 9.5, 10.0], [10, 9, 12], "final eval of 9 episodes < 10"),
    ([9.0, 9.5], [10, None], "final eval episodes not recorded"),
    ([9.0, float("nan")], [10, 10], "a final return is not finite"),
])
def test_cannot_judge(returns, episodes, reason):
    v = learned(returns, episodes, random_return=0.02, constant_return=5.06)
    assert not v.judged and not v.passed and v.reason == reason
    assert v.cell().startswith(f"— ({reason}")


def test_bad_arguments():
    with pytest.raises(ValueError, match="2 final returns but 1 episode counts"):
        learned([1.0, 2.0], [10], 0.0, 0.0)
    with pytest.raises(ValueError, match="confidence"):
        learned([1.0, 2.0], [10, 10], 0.0, 0.0, confidence=95)


def test_report_table_shows_verdicts_and_counts_games_learned():
    per_seed = {"Freeway": {0: 9.0, 1: 10.0, 2: 11.0}, "Breakout": {0: 0.5, 1: 0.6, 2: 0.4}}
    summary = {"moe": {"tasks": {t: {"final": {"per_seed": f, "mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0, "n": 3},
                                     "auc": {"mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0, "n": 3}}
                                 for t, f in per_seed.items()},
                       "normalized_mean": {m: {"mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5, "n": 3}
                                           for m in ("final", "auc")}}}
    episodes = {"moe": {"Freeway": {0: 12, 1: 12, 2: 12}, "Breakout": {0: 12, 1: 12}}}  # Breakout seed 2 unrecorded
    verdicts = learned_verdicts(summary, episodes, {"Freeway": (0.02, 5.06), "Breakout": (0.54, 0.52)})
    assert verdicts["moe"]["Freeway"].passed and verdicts["moe"]["Freeway"].mean == pytest.approx(10.0)
    assert verdicts["moe"]["Breakout"].reason == "final eval episodes not recorded"
    assert games_learned(verdicts["moe"]) == "games learned: 1/2 (1 not judged)"
    text = results_table(summary, {"moe": "MoE"}, {"Freeway": 0.0, "Breakout": 0.5}, {"Freeway": 12, "Breakout": 3},
                         verdicts)
    assert "learned" in text.splitlines()[0] and "yes (95% CI" in text and "games learned: 1/2" in text
    assert "learned" not in results_table(summary, {}, {"Freeway": 0.0, "Breakout": 0.5}, {"Freeway": 12, "Breakout": 3})


def test_constant_action_returns_cover_the_suite():
    assert set(CONSTANT_ACTION_RETURNS) == set(RANDOM_RETURNS) == set(list_games())
    for game, best in CONSTANT_ACTION_RETURNS.items():
        assert best.mean_return >= 0 and ACTION_NAMES[best.action] == best.name, game


def test_measure_runs_and_returns_every_action():
    b = measure("Asterix", episodes=3, max_episode_steps=50)
    assert sorted(b.constant) == list(range(len(ACTION_NAMES))) and (b.episodes, b.max_episode_steps) == (3, 50)
    assert all(r >= 0 for r in b.constant.values()) and b.random >= 0
    assert b.best_constant == max(b.constant.values())


@pytest.mark.parametrize("game", ["Breakout", "Asterix"])  # the cheap games (under 0.5 s at the full 50 episodes)
def test_committed_numbers_are_what_measure_prints(game):
    b = measure(game)
    assert round(b.random, 2) == RANDOM_RETURNS[game]
    best = CONSTANT_ACTION_RETURNS[game]
    assert (b.best_action, round(b.best_constant, 2)) == (best.action, best.mean_return)


def test_baseline_returns_committed_or_measured():
    assert baseline_returns("Freeway", max_episode_steps=500, sticky_action_prob=0.1) == (0.02, 5.06)
    random, constant = baseline_returns("Breakout", max_episode_steps=5, sticky_action_prob=0.1)  # measured now
    assert (random, constant) == (0.0, 0.0)  # no brick falls within 5 frames


def test_baselines_command_prints_a_table(capsys):
    from lzero_ext.bench.__main__ import BENCHMARKS, main

    assert BENCHMARKS["baselines"] == "lzero_ext.bench.baselines"
    assert main(["baselines", "--games", "Breakout", "--episodes", "2", "--max-episode-steps", "30"]) == 0
    out = capsys.readouterr().out
    assert "2 episodes per policy" in out and "Breakout" in out and "always fire" in out and "best constant" in out


def test_eval_episodes_rounds_up_to_whole_rounds():
    from lzero_ext.bench.learning_runs import eval_episodes

    env = EasyDict(n_evaluator_episode=3, evaluator_env_num=3)
    assert eval_episodes(env, None) == 3 and eval_episodes(env, 10) == 12 and eval_episodes(env, 9) == 9


def test_eval_rounds_play_one_episode_per_env_per_round():
    from lzero_ext.workers import eval_rounds

    calls = []

    def fake_eval(save_ckpt_fn, train_iter, envstep, n_episode=None):  # lightzero's evaluator.eval, 3 envs
        calls.append((train_iter, envstep, n_episode))
        return False, {"eval_episode_return": [float(len(calls))] * (n_episode or 3)}

    assert eval_rounds(fake_eval, 3, 10, train_iter=7, envstep=900) == [1.0] * 3 + [2.0] * 3 + [3.0] * 3 + [4.0] * 3
    assert calls == [(7, 900, 3)] * 4
    calls.clear()
    assert eval_rounds(fake_eval, 3, None, train_iter=7, envstep=900) == [1.0] * 3 and calls == [(7, 900, None)]


def test_dps_targets_lie_above_the_learned_bars():
    from lzero_ext.envs.minatar_scores import DPS_TARGETS

    assert set(DPS_TARGETS) == set(RANDOM_RETURNS)
    for game, target in DPS_TARGETS.items():  # a target at or below the bar would count a trivial policy as solved
        assert target > max(RANDOM_RETURNS[game], CONSTANT_ACTION_RETURNS[game].mean_return), game
