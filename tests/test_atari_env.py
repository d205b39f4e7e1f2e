"""The `atari_scalezero` env: shapes, action spaces, the Atari100k protocol, seeding, errors, ding integration."""
import pickle
from functools import partial
from typing import List, Tuple

import numpy as np
import pytest
from ding.envs import BaseEnvTimestep, SyncSubprocessEnvManager, create_env_manager
from ding.utils import deep_merge_dicts
from easydict import EasyDict

from lzero_ext.envs.atari_env import AtariMultiTaskEnv
from lzero_ext.envs.atari_games import ATARI_26, list_games, main, resolve_game

MINIMAL_ACTIONS = {"Pong": 6, "Breakout": 4, "MsPacman": 9}


def make_env(game: str = "MsPacman", *, seed: int = 0, **overrides) -> AtariMultiTaskEnv:
    env = AtariMultiTaskEnv(dict(env_id=game, **overrides))
    env.seed(seed)
    return env


def rollout(env: AtariMultiTaskEnv, steps: int, *, action_seed: int = 0) -> List[BaseEnvTimestep]:
    """Random actions from a fixed generator; resets after every episode end."""
    rng = np.random.RandomState(action_seed)
    env.reset()
    timesteps = []
    for _ in range(steps):
        timestep = env.step(rng.randint(env.action_space.n))
        timesteps.append(timestep)
        if timestep.done:
            env.reset()
    return timesteps


# ---------------------------------------------------------------- observations and actions


@pytest.mark.parametrize("game", ["PongNoFrameskip-v4", "Breakout", "ms_pacman"])
@pytest.mark.parametrize(
    "obs_cfg", [{}, dict(gray_scale=True, observation_shape=(1, 84, 84)),
                dict(observation_shape=(3, 96, 72))],
    ids=["rgb64", "gray84", "rgb96x72"]
)
def test_reset_and_step_shapes_and_dtypes(game, obs_cfg):
    env = make_env(game, **obs_cfg)
    shape = obs_cfg.get("observation_shape", (3, 64, 64))
    obs = env.reset()
    assert set(obs) == {"observation", "action_mask", "to_play", "timestep"}
    assert obs["observation"].shape == shape and obs["observation"].dtype == np.float32
    assert 0.0 <= obs["observation"].min() < obs["observation"].max() <= 1.0
    assert obs["action_mask"].dtype == np.int8 and obs["action_mask"].tolist() == [1] * env.action_space.n
    assert obs["to_play"] == -1 and obs["timestep"] == 0
    assert env.observation_space.shape == shape

    timestep = env.step(0)
    assert isinstance(timestep, BaseEnvTimestep)
    assert timestep.obs["observation"].shape == shape and timestep.obs["timestep"] == 1
    assert isinstance(timestep.reward, np.ndarray) and timestep.reward.dtype == np.float32
    assert timestep.reward.shape == ()
    assert timestep.done is False
    env.close()


def test_rgb_and_grayscale_show_the_same_screen():
    rgb = make_env("Breakout", noop_max=0).reset()["observation"]  # (3, 64, 64)
    gray = make_env("Breakout", noop_max=0, gray_scale=True, observation_shape=(1, 64, 64)).reset()["observation"]
    assert not np.allclose(rgb[0], rgb[2])  # real colour channels
    assert np.corrcoef(rgb.mean(0).ravel(), gray[0].ravel())[0, 1] > 0.5


@pytest.mark.parametrize("game", sorted(MINIMAL_ACTIONS))
def test_full_and_minimal_action_spaces(game):
    full = make_env(game, full_action_space=True)
    minimal = make_env(game, full_action_space=False)
    assert full.action_space.n == 18 and minimal.action_space.n == MINIMAL_ACTIONS[game]
    assert full.reset()["action_mask"].shape == (18, )
    assert minimal.reset()["action_mask"].shape == (MINIMAL_ACTIONS[game], )
    full.step(17)
    full.step(np.array([17]))  # collectors send one-element arrays
    with pytest.raises(ValueError, match="out of range"):
        minimal.step(17)


# ---------------------------------------------------------------- game names


@pytest.mark.parametrize(
    "name, rom_id", [
        ("PongNoFrameskip-v4", "pong"), ("ALE/Pong-v5", "pong"), ("Pong", "pong"), ("pong", "pong"),
        ("MsPacmanNoFrameskip-v4", "ms_pacman"), ("MsPacman", "ms_pacman"), ("ms_pacman", "ms_pacman"),
        ("ALE/MsPacman-v5", "ms_pacman"), ("BreakoutDeterministic-v4", "breakout"), ("UpNDown", "up_n_down"),
        ("KungFuMaster", "kung_fu_master"), ("Pacman", "pacman")
    ]
)
def test_game_name_spellings(name, rom_id):
    assert resolve_game(name) == rom_id


def test_every_listed_game_resolves_and_atari26_is_available(capsys):
    games = list_games()
    assert len(games) >= 100 and set(ATARI_26) <= set(games)
    assert all(resolve_game(game) for game in games)
    main(["--list"])
    assert "MsPacman" in capsys.readouterr().out.split()


@pytest.mark.parametrize("name, suggestion", [("Pongg", "'Pong'"), ("MsPacMann", "'MsPacman'"), ("Zork", None)])
def test_unknown_game_error_names_it_and_says_how_to_list(name, suggestion):
    with pytest.raises(ValueError) as error:
        AtariMultiTaskEnv(dict(env_id=name))
    message = str(error.value)
    assert repr(name) in message and "list_games()" in message and "--list" in message
    if suggestion:
        assert f"Did you mean {suggestion}" in message
    else:
        assert "Did you mean" not in message


@pytest.mark.parametrize(
    "overrides, words", [
        (dict(observation_shape=(3, 0, 64)), ["observation_shape", "positive", "(3, 0, 64)"]),
        (dict(observation_shape=(3, 64, -1)), ["observation_shape", "(3, 64, -1)"]),
        (dict(observation_shape=(3, 64.0, 64)), ["observation_shape", "positive ints"]),
        (dict(observation_shape=(64, 64)), ["observation_shape", "(channels, height, width)", "(64, 64)"]),
        (dict(observation_shape=(2, 64, 64)), ["observation_shape[0]", "got 2"]),
        (dict(observation_shape=(4, 64, 64), gray_scale=True), ["observation_shape[0]", "got 4"]),
        (dict(observation_shape=(3, 64, 64), gray_scale=True), ["gray_scale=True", "(3, 64, 64)", "1 channel"]),
        (dict(observation_shape=(1, 64, 64)), ["gray_scale=False", "(1, 64, 64)", "3 channel"]),
        (dict(frame_skip=0), ["frame_skip", "0"]),
        (dict(max_episode_frames=-5), ["max_episode_frames", "-5"]),
        (dict(noop_max=-1), ["noop_max", "-1"]),
        (dict(repeat_action_probability=1.5), ["repeat_action_probability", "1.5"]),
    ]
)
def test_bad_settings_raise_clear_errors(overrides, words):
    with pytest.raises(ValueError) as error:
        AtariMultiTaskEnv(dict(env_id="Pong", **overrides))
    for word in words:
        assert word in str(error.value)


# ---------------------------------------------------------------- Atari100k protocol


def test_episode_cap_is_counted_in_emulator_frames():
    env = make_env("Pong", noop_max=0, max_episode_frames=40, episode_life=False, clip_rewards=False)
    env.reset()
    for step in range(1, 10):
        timestep = env.step(0)
        assert not timestep.done, step
    timestep = env.step(0)  # step 10 = frame 40
    assert timestep.done and timestep.info["TimeLimit.truncated"] and not timestep.info["game_over"]
    assert timestep.info["episode_frames"] == 40 and "eval_episode_return" in timestep.info
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)

    # A cap that is not a multiple of frame_skip ends the game mid-step; no-ops count as frames too.
    env = make_env("Pong", noop_max=30, max_episode_frames=50)
    env.reset()
    frames, done = 0, False
    while not done:
        timestep = env.step(0)
        assert timestep.info["episode_frames"] > frames
        frames, done = timestep.info["episode_frames"], timestep.done
        assert done == (frames >= 50)
    assert frames == 50
    assert env.reset()["timestep"] == 0 and env.step(0).info["episode_frames"] < 50  # a new game


def test_default_cap_is_atari100k():
    cfg = AtariMultiTaskEnv.default_config()
    assert cfg.max_episode_frames == 108_000 and cfg.frame_skip == 4
    assert cfg.repeat_action_probability == 0.0 and cfg.noop_max == 30


def test_observation_matches_a_plain_ale_with_frame_skip_and_max_pooling():
    """Replays the env's actions on a bare ALE: obs = resize(max(last two frames)) after frame_skip frames."""
    import ale_py
    import cv2
    from ale_py import roms

    env = make_env("MsPacman", noop_max=0, frame_skip=3)
    env.reset()
    ale = ale_py.ALEInterface()
    ale.setFloat("repeat_action_probability", 0.0)
    ale.loadROM(roms.get_rom_path("ms_pacman"))
    minimal = ale.getMinimalActionSet()
    rng = np.random.RandomState(0)
    pooling_mattered = False
    for _ in range(100):
        action = rng.randint(len(minimal))
        timestep = env.step(action)
        frames = []
        for _ in range(3):
            ale.act(minimal[action])
            frames.append(ale.getScreenRGB())
        resize = partial(cv2.resize, dsize=(64, 64), interpolation=cv2.INTER_AREA)
        expected = resize(np.maximum(frames[-2], frames[-1])).transpose(2, 0, 1) / np.float32(255)
        assert np.array_equal(timestep.obs["observation"], expected)
        pooling_mattered |= not np.array_equal(frames[-2], frames[-1])
    assert timestep.info["episode_frames"] == 300 and pooling_mattered


def test_training_reward_is_the_sign_of_the_raw_reward_and_life_loss_ends_training_episodes():
    train = make_env("MsPacman", seed=5)
    evaluation = make_env("MsPacman", seed=5, episode_life=False, clip_rewards=False)
    train.reset(), evaluation.reset()
    rng = np.random.RandomState(0)
    raw_rewards = []
    start_lives = train.step(0).info["lives"]
    raw_rewards.append(float(evaluation.step(0).reward))
    for _ in range(1000):
        action = rng.randint(train.action_space.n)
        clipped, raw = train.step(action), evaluation.step(action)
        assert np.array_equal(clipped.obs["observation"], raw.obs["observation"])
        assert float(clipped.reward) == np.sign(float(raw.reward)) and float(clipped.reward) in (-1.0, 0.0, 1.0)
        assert clipped.info["raw_reward"] == float(raw.reward)
        raw_rewards.append(float(raw.reward))
        if clipped.done:
            break
    assert max(raw_rewards) > 1  # MsPacman pays 10 per pellet: the eval reward is really raw
    # The training episode ended at the first life loss, the evaluation one goes on.
    assert clipped.done and not clipped.info["game_over"] and clipped.info["lives"] == start_lives - 1
    assert not raw.done and raw.info["lives"] == clipped.info["lives"]
    assert clipped.info["eval_episode_return"] == pytest.approx(sum(raw_rewards))  # raw score, not clipped

    # The next training episode carries on with the same game (fewer lives, frame count goes on).
    lives, frames = clipped.info["lives"], clipped.info["episode_frames"]
    assert train.reset()["timestep"] == 0
    timestep = train.step(0)
    assert timestep.info["lives"] == lives and timestep.info["episode_frames"] == frames + 4


def test_evaluation_episode_ends_only_at_game_over():
    env = make_env("Breakout", episode_life=False, clip_rewards=False)
    env.reset()
    rng = np.random.RandomState(0)
    timesteps = [env.step(rng.randint(env.action_space.n))]
    while not timesteps[-1].done and len(timesteps) < 2000:
        timesteps.append(env.step(rng.randint(env.action_space.n)))
    lives = [timestep.info["lives"] for timestep in timesteps]
    assert lives[0] == 5 and lives[-1] == 0 and len(set(lives)) == 6  # lost every life in one episode
    assert timesteps[-1].done and timesteps[-1].info["game_over"]
    assert timesteps[-1].info["eval_episode_return"] == sum(float(t.reward) for t in timesteps)


# ---------------------------------------------------------------- seeding


def observations(timesteps: List[BaseEnvTimestep]) -> np.ndarray:
    return np.stack([timestep.obs["observation"] for timestep in timesteps])


def trajectory(timesteps: List[BaseEnvTimestep]) -> Tuple[np.ndarray, List[float], List[bool]]:
    return observations(timesteps), [float(t.reward) for t in timesteps], [t.done for t in timesteps]


def test_same_seed_same_trajectory_and_different_seed_differs():
    first = trajectory(rollout(make_env("MsPacman", seed=3), 300))
    second = trajectory(rollout(make_env("MsPacman", seed=3), 300))
    assert np.array_equal(first[0], second[0]) and first[1:] == second[1:]
    assert any(first[2])  # the rollout crossed an episode end, so the reset path is covered too

    reseeded = make_env("MsPacman", seed=99)
    rollout(reseeded, 50)
    reseeded.seed(3)  # re-seeding a used env replays the seed's games from the start
    third = trajectory(rollout(reseeded, 300))
    assert np.array_equal(first[0], third[0]) and first[1:] == third[1:]

    other = trajectory(rollout(make_env("MsPacman", seed=4), 300))
    assert not np.array_equal(first[0], other[0])


def start_observations(env: AtariMultiTaskEnv, games: int) -> List[np.ndarray]:
    """First observation of each of several games (reset() mid-episode starts a new game)."""
    return [env.reset()["observation"] for _ in range(games)]


def test_dynamic_seed_varies_games_and_static_seed_repeats_them():
    static = make_env("MsPacman")
    static.seed(7, dynamic_seed=False)
    starts = start_observations(static, 4)
    assert all(np.array_equal(starts[0], start) for start in starts[1:])

    dynamic = make_env("MsPacman")
    dynamic.seed(7, dynamic_seed=True)
    starts = start_observations(dynamic, 4)
    assert not all(np.array_equal(starts[0], start) for start in starts[1:])
    dynamic.seed(7, dynamic_seed=True)
    assert all(np.array_equal(a, b) for a, b in zip(starts, start_observations(dynamic, 4)))


# ---------------------------------------------------------------- ding integration


def test_registered_in_ding_env_registry():
    import lzero_ext.registry
    from ding.utils import ENV_REGISTRY

    assert ENV_REGISTRY.get("atari_scalezero") is AtariMultiTaskEnv
    assert "atari_scalezero" in lzero_ext.registry.registered_names()["env"]


def test_config_helpers_and_repr():
    cfg = AtariMultiTaskEnv.default_config()
    cfg.update(env_id="Breakout", collector_env_num=2, evaluator_env_num=3)
    collector = AtariMultiTaskEnv.create_collector_env_cfg(cfg)
    evaluator = AtariMultiTaskEnv.create_evaluator_env_cfg(cfg)
    assert cfg.collector_env_num == 2  # the input config is left alone
    assert len(collector) == 2 and all(c.episode_life and c.clip_rewards for c in collector)
    assert len(evaluator) == 3 and not any(c.episode_life or c.clip_rewards for c in evaluator)
    assert repr(AtariMultiTaskEnv(evaluator[0])) == (
        "AtariMultiTaskEnv(game=Breakout, obs=(3, 64, 64), actions=4, mode=eval)"
    )
    assert AtariMultiTaskEnv(collector[0]).reward_space.high[0] == 1.0


def test_pickles_before_reset_and_after_close():
    env = make_env("Pong")
    clone = pickle.loads(pickle.dumps(env))
    assert clone.reset()["observation"].shape == (3, 64, 64)
    env.reset()
    env.close()
    pickle.dumps(env)
    assert env.random_action() in range(6)


def test_runs_in_ding_subprocess_env_manager():
    cfg = AtariMultiTaskEnv.default_config()
    cfg.update(env_id="MsPacmanNoFrameskip-v4", full_action_space=True, collector_env_num=2)
    env_fns = [partial(AtariMultiTaskEnv, cfg=c) for c in AtariMultiTaskEnv.create_collector_env_cfg(cfg)]
    manager_cfg = dict(shared_memory=False, context="spawn")  # spawn: the env must pickle and import cleanly
    manager_cfg = deep_merge_dicts(SyncSubprocessEnvManager.default_config(), manager_cfg)
    manager = create_env_manager(EasyDict(manager_cfg, type="subprocess"), env_fns)
    manager.seed(0)
    manager.launch()
    try:
        assert manager.env_num == 2
        for _ in range(5):
            ready = manager.ready_obs
            assert set(ready) == {0, 1}
            assert all(obs["observation"].shape == (3, 64, 64) for obs in ready.values())
            timesteps = manager.step({env_id: np.array([17]) for env_id in ready})
            assert set(timesteps) == {0, 1}
            assert all(float(t.reward) in (-1.0, 0.0, 1.0) for t in timesteps.values())
        # env 0 and env 1 were seeded 0 and 1: different no-ops, different screens
        ready = manager.ready_obs
        assert not np.array_equal(ready[0]["observation"], ready[1]["observation"])
    finally:
        manager.close()
