"""The learning benchmark: AUC/aggregation with known answers, the classic-control env, and a smoke
run of the whole code path (three arms, two tasks, one seed, a few hundred env steps)."""
import json
import math

import numpy as np
import pytest
from ding.envs import BaseEnvTimestep
from ding.utils import ENV_REGISTRY

import lzero_ext.registry  # noqa: F401  (registers envs, models, policies)
from lzero_ext.bench.learning_report import (aggregate, final_return, interpolate, mean_curve, normalized_auc,
                                             normalized_score, spread, steps_to_target, target_efficiency)
from lzero_ext.envs.classic_control_env import ClassicControlEnv


# ---------------------------------------------------------------------- AUC and aggregation
def test_interpolate_linear_inside_constant_outside():
    curve = [(10, 1.0), (0, 0.0), (30, 1.0)]  # unordered on purpose
    np.testing.assert_allclose(interpolate(curve, [0, 5, 10, 20, 30, 99]), [0, 0.5, 1, 1, 1, 1])
    np.testing.assert_allclose(interpolate([(50, 2.0)], [0, 100]), [2.0, 2.0])


@pytest.mark.parametrize("curve,budget,expected", [
    ([(0, 3.0), (100, 3.0)], 100, 3.0),                     # constant
    ([(0, 0.0), (100, 10.0)], 100, 5.0),                    # linear ramp: half the end value
    ([(0, 0.0), (50, 10.0), (100, 10.0)], 100, 7.5),        # ramp then plateau
    ([(0, 0.0), (50, 10.0)], 100, 7.5),                     # last value held to the budget
    ([(0, 0.0), (100, 10.0), (200, -50.0)], 100, 5.0),      # overshoot beyond the budget is cut
    ([(20, 4.0), (60, 8.0)], 100, (20 * 4 + 40 * 6 + 40 * 8) / 100),  # first value held back to step 0
    ([(0, -200.0), (40, -100.0), (100, -100.0)], 100, (40 * -150 + 60 * -100) / 100),
])
def test_normalized_auc_known_answers(curve, budget, expected):
    assert normalized_auc(curve, budget) == pytest.approx(expected)


def test_normalized_auc_and_final_reject_bad_input():
    with pytest.raises(ValueError, match="budget"):
        normalized_auc([(0, 1.0)], 0)
    with pytest.raises(ValueError, match="finite"):
        final_return([(0, float("nan"))])
    assert final_return([(5, 2.0), (0, 1.0), (9, 3.0)]) == 3.0
    assert final_return([(0, 1.0), (9, 3.0), (9, 2.0)]) == 2.0  # a later evaluation at the same step wins


def test_spread_and_normalized_score():
    s = spread([1.0, 2.0, 3.0, float("nan"), None])
    assert (s["mean"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 3.0, 3)
    assert s["std"] == pytest.approx(math.sqrt(2 / 3))
    assert spread([])["mean"] is None and spread([])["n"] == 0
    assert normalized_score(-100.0, -200.0, 0.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        normalized_score(1.0, 2.0, 2.0)


def test_aggregate_known_answers():
    curves = {
        "a": {"t1": {0: [(0, 0.0), (100, 10.0)], 1: [(0, 10.0), (100, 10.0)]},
              "t2": {0: [(0, -100.0), (100, -100.0)], 1: [(0, -100.0), (100, 0.0)]}},
    }
    out = aggregate(curves, budget=100, random_returns={"t1": 0.0, "t2": -100.0}, reference_returns={"t1": 10.0, "t2": 0.0})
    t1 = out["a"]["tasks"]["t1"]
    assert t1["final"]["per_seed"] == {0: 10.0, 1: 10.0} and t1["final"]["std"] == 0.0
    assert t1["auc"]["per_seed"] == {0: 5.0, 1: 10.0} and t1["auc"]["mean"] == 7.5
    norm = out["a"]["normalized_mean"]
    # seed 0: t1 final 1.0, t2 final 0.0 -> 0.5; seed 1: 1.0 and 1.0 -> 1.0
    assert norm["final"]["per_seed"] == {0: 0.5, 1: 1.0}
    # seed 0: t1 auc 0.5, t2 auc 0.0 -> 0.25; seed 1: t1 1.0, t2 0.5 -> 0.75
    assert norm["auc"]["per_seed"] == {0: 0.25, 1: 0.75} and norm["auc"]["mean"] == 0.5


def test_steps_to_target_and_efficiency_known_answers():
    assert steps_to_target([(800, 200.0), (0, 0.0), (400, 150.0)], 150.0) == 400.0  # unordered, >= counts
    assert steps_to_target([(0, float("nan")), (100, 5.0)], 1.0) == 100.0
    assert steps_to_target([(0, 0.0), (100, 149.9)], 150.0) is None
    curves = {"moe": {"t": {0: [(0, 0.0), (400, 160.0)], 1: [(0, 0.0), (800, 100.0)]}},
              "dps": {"t": {0: [(0, 0.0), (200, 150.0)], 1: [(0, 0.0), (600, 170.0)]}}}
    env_steps = {"moe": {"t": {0: 1000, 1: 1000}}, "dps": {"t": {0: 320, 1: 640}}}
    out = target_efficiency(curves, env_steps, {"t": 150.0})
    assert out["moe"]["tasks"]["t"]["reached"] == 1 and out["moe"]["tasks"]["t"]["mean"] == 400.0
    assert out["dps"]["tasks"]["t"]["per_seed"] == {0: 200.0, 1: 600.0} and out["dps"]["tasks"]["t"]["mean"] == 400.0
    assert out["dps"]["total_env_steps"]["mean"] == 480 and out["moe"]["total_env_steps"]["mean"] == 1000


def test_mean_curve_over_seeds():
    stats = mean_curve({0: [(0, 0.0), (10, 10.0)], 1: [(0, 2.0), (10, 2.0)]}, [0, 5, 10])
    np.testing.assert_allclose(stats["mean"], [1, 3.5, 6])
    np.testing.assert_allclose(stats["min"], [0, 2, 2])
    np.testing.assert_allclose(stats["max"], [2, 5, 10])


# ---------------------------------------------------------------------- the env
def _episode(env: ClassicControlEnv, action_seed: int = 0):
    rng = np.random.RandomState(action_seed)
    obs, rewards = [env.reset()["observation"]], []
    while True:
        timestep = env.step(rng.randint(len(env.legal_actions)))
        obs.append(timestep.obs["observation"])
        rewards.append(float(timestep.reward))
        if timestep.done:
            return np.stack(obs), np.array(rewards), timestep


def test_env_registered():
    assert ENV_REGISTRY.get("classic_control_scalezero") is ClassicControlEnv
    assert "classic_control_scalezero" in lzero_ext.registry.registered_names()["env"]


@pytest.mark.parametrize("env_id,extra,obs_dim,num_actions", [
    ("CartPole-v1", {}, 4, 2),
    ("Acrobot-v1", {}, 6, 3),
    ("Pendulum-v1", {"continuous_action_bins": 5}, 3, 5),
    ("FrozenLake-v1", {}, 16, 4),  # Discrete observations become one-hot vectors
    ("dmc:cartpole-balance", {"continuous_action_bins": 3}, 5, 3),
    ("dmc:finger-spin", {"continuous_action_bins": 2}, 9, 4),  # 2 values per dimension, all 4 combinations
])
def test_env_shapes_and_padded_mask(env_id, extra, obs_dim, num_actions):
    env = ClassicControlEnv(dict(env_id=env_id, action_space_size=6, **extra))
    env.seed(0)
    obs = env.reset()
    assert set(obs) == {"observation", "action_mask", "to_play", "timestep"}
    assert obs["observation"].shape == (obs_dim,) and obs["observation"].dtype == np.float32
    assert obs["action_mask"].dtype == np.int8 and obs["action_mask"].tolist() == [1] * num_actions + [0] * (6 - num_actions)
    assert obs["to_play"] == -1 and obs["timestep"] == 0
    assert env.action_space.n == 6 and env.observation_space.shape == (obs_dim,)
    assert env.legal_actions.tolist() == list(range(num_actions))
    timestep = env.step(num_actions - 1)
    assert isinstance(timestep, BaseEnvTimestep) and timestep.reward.shape == () and timestep.obs["timestep"] == 1
    with pytest.raises(ValueError, match="padding"):
        env.step(num_actions)  # a masked (padding) action
    if env_id == "FrozenLake-v1":
        assert obs["observation"].sum() == 1.0
    env.close()


def test_env_episode_return_and_time_limit():
    env = ClassicControlEnv(dict(env_id="Acrobot-v1", max_episode_steps=17))
    env.seed(3)
    obs, rewards, last = _episode(env)
    assert len(rewards) == 17 and last.info["TimeLimit.truncated"]  # a random policy does not swing up in 17 steps
    assert last.info["eval_episode_return"] == pytest.approx(rewards.sum()) == -17.0
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env = ClassicControlEnv(dict(env_id="CartPole-v1"))
    _, rewards, last = _episode(env)
    assert last.info["eval_episode_return"] == pytest.approx(rewards.sum()) and not last.info["TimeLimit.truncated"]


def test_env_box_actions_are_all_combinations_of_bins():
    env = ClassicControlEnv(dict(env_id="dmc:finger-spin", continuous_action_bins=3, max_episode_steps=5))
    assert [v.tolist() for v in env._action_values[:4]] == [[-1, -1], [-1, 0], [-1, 1], [0, -1]]
    assert len(env._action_values) == 9
    env.seed(0)
    _, rewards, last = _episode(env)
    assert len(rewards) == 5 and last.info["TimeLimit.truncated"]
    assert last.info["eval_episode_return"] == pytest.approx(rewards.sum())
    pendulum = ClassicControlEnv(dict(env_id="Pendulum-v1", continuous_action_bins=5))
    assert [float(v[0]) for v in pendulum._action_values] == [-2.0, -1.0, 0.0, 1.0, 2.0]


@pytest.mark.parametrize("env_id,bins", [("CartPole-v1", None), ("dmc:cartpole-balance", 3)])
def test_env_seeding(env_id, bins):
    def run(seed, dynamic):
        env = ClassicControlEnv(dict(env_id=env_id, continuous_action_bins=bins, max_episode_steps=3))
        env.seed(seed, dynamic_seed=dynamic)
        return [_episode(env)[0][0] for _ in range(2)]  # first observation of two episodes

    first, again, other = run(5, True), run(5, True), run(6, True)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], first[1])  # dynamic seed: episodes differ
    fixed = run(5, False)
    np.testing.assert_array_equal(fixed[0], fixed[1])  # fixed seed (evaluators): every episode the same


@pytest.mark.parametrize("cfg,match", [
    (dict(env_id="NoSuchEnv-v0"), "unknown gymnasium"),
    (dict(env_id="CartPole-v1", action_space_size=1), "action_space_size"),
    (dict(env_id="CartPole-v1", continuous_action_bins=3), "discrete actions"),
    (dict(env_id="Pendulum-v1"), "continuous_action_bins"),
    (dict(env_id="CartPole-v1", max_episode_steps=0), "max_episode_steps"),
    (dict(env_id="dmc:cartpole-balance", continuous_action_bins=3, make_kwargs=dict(x=1)), "gymnasium.make"),
])
def test_env_config_errors(cfg, match):
    with pytest.raises(ValueError, match=match):
        ClassicControlEnv(cfg)


# ---------------------------------------------------------------------- smoke of the benchmark
def test_learning_benchmark_smoke(tmp_path, capsys):
    from lzero_ext.bench.learning import main

    main(["--mode", "smoke", "--out", str(tmp_path), "--jobs", "1"])
    out = capsys.readouterr().out
    assert "SMOKE" in out and "gradient conflict" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "learning_curves.png").stat().st_size > 10_000
    assert set(results["summary"]) == {"unizero", "dense", "moe", "dps"}
    tasks = [t["name"] for t in results["suite"]]
    assert len(tasks) == 2
    table = (tmp_path / "table.txt").read_text()
    assert table.strip() in out  # the file holds the printed tables
    rows = [line.split() for line in table.splitlines() if line.startswith(tuple(tasks)) and "(random" in line]
    assert len(rows) == len(tasks) * len(results["summary"])  # one row per task and arm
    seeds = {str(block["tasks"][t]["final"]["n"]) for block in results["summary"].values() for t in tasks}
    assert seeds == {"1"} and {row[-1] for row in rows} == seeds  # the seeds column
    for arm, block in results["summary"].items():
        assert set(block["tasks"]) == set(tasks)
        for task in tasks:
            for metric in ("final", "auc"):
                assert math.isfinite(block["tasks"][task][metric]["mean"]), (arm, task, metric)
        assert math.isfinite(block["normalized_mean"]["auc"]["mean"])
    for arm in ("dense", "moe", "dps"):
        assert math.isfinite(results["diagnostics"][arm]["grad_cos_mean"]["mean"])
    runs = results["runs"]
    assert sorted(r["arm"] for r in runs) == ["dense", "dps", "moe", "unizero", "unizero"]
    (dps_run,) = [r for r in runs if r["arm"] == "dps"]
    # The smoke DPS settings allow a switch after 8 iterations, so the curriculum really ran (timeouts at least).
    assert dps_run["dps"]["switches"] and dps_run["dps"]["stage"] >= 1
    assert "env steps to reach the target return" in out and "DPS stage switches" in out
    for arm, block in results["targets"].items():
        if arm != "dps":  # DPS may stop a solved task early
            assert block["total_env_steps"]["mean"] >= len(tasks) * 200  # every task spends its 200-step budget
        assert set(block["tasks"]) == set(tasks)
    for r in runs:
        for task, curve in r["curves"].items():
            assert curve[0][0] == 0 and curve[-1][0] >= results["env_steps_per_task"]  # baseline and final evals
    # A second call finds every run in the cache and only rebuilds the report.
    main(["--mode", "smoke", "--out", str(tmp_path), "--jobs", "1"])
    assert "5 of 5 runs loaded from the cache" in capsys.readouterr().out
