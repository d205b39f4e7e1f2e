"""The MinAtar env (``minatar_scalezero``): shapes per game, padding, action masks, seeding, caps and
errors; the grid encoder it needs; and the zoo config's ``--preset smoke`` end to end."""
import json
import math

import numpy as np
import pytest
import torch
from ding.envs import BaseEnvTimestep
from ding.utils import ENV_REGISTRY, MODEL_REGISTRY

import lzero_ext.registry  # noqa: F401  (registers envs, models, policies)
from lzero_ext.envs.minatar_env import MinAtarEnv, game_name, list_games, resolve_game

CHANNELS = {"Asterix": 4, "Breakout": 4, "Freeway": 7, "Seaquest": 10, "SpaceInvaders": 6}
MINIMAL = {"Asterix": [0, 1, 2, 3, 4], "Breakout": [0, 1, 3], "Freeway": [0, 2, 4], "Seaquest": [0, 1, 2, 3, 4, 5],
           "SpaceInvaders": [0, 1, 3, 5]}


def _play(env: MinAtarEnv, actions_seed: int = 0, max_steps: int = 10_000):
    rng = np.random.RandomState(actions_seed)
    obs, rewards = [env.reset()["observation"]], []
    for _ in range(max_steps):
        timestep = env.step(rng.choice(env.legal_actions))
        obs.append(timestep.obs["observation"])
        rewards.append(float(timestep.reward))
        if timestep.done:
            break
    return np.stack(obs), np.array(rewards), timestep


def test_registered():
    assert ENV_REGISTRY.get("minatar_scalezero") is MinAtarEnv
    assert "minatar_scalezero" in lzero_ext.registry.registered_names()["env"]
    assert "GridUniZeroModel" in MODEL_REGISTRY
    assert list_games() == list(CHANNELS)


@pytest.mark.parametrize("game", list(CHANNELS))
def test_shapes_per_game_and_padding(game):
    env = MinAtarEnv(dict(env_id=game))
    env.seed(0)
    obs = env.reset()
    assert set(obs) == {"observation", "action_mask", "to_play", "timestep"}
    assert obs["observation"].shape == (CHANNELS[game], 10, 10) and obs["observation"].dtype == np.float32
    assert set(np.unique(obs["observation"])) <= {0.0, 1.0} and obs["observation"].sum() > 0  # something is on the board
    assert obs["action_mask"].tolist() == [1] * 6 and obs["to_play"] == -1 and obs["timestep"] == 0
    assert env.action_space.n == 6 and env.observation_space.shape == (CHANNELS[game], 10, 10)
    timestep = env.step(0)
    assert isinstance(timestep, BaseEnvTimestep) and timestep.reward.shape == () and timestep.obs["timestep"] == 1

    padded = MinAtarEnv(dict(env_id=game, observation_shape=(10, 10, 10)))
    padded.seed(0)
    big = padded.reset()["observation"]
    assert big.shape == (10, 10, 10) and padded.observation_space.shape == (10, 10, 10)
    np.testing.assert_array_equal(big[:CHANNELS[game]], obs["observation"])  # the game's channels first
    assert not big[CHANNELS[game]:].any()  # then zeros


@pytest.mark.parametrize("game", list(CHANNELS))
def test_minimal_action_set_is_a_mask(game):
    env = MinAtarEnv(dict(env_id=game, minimal_action_set=True))
    env.seed(1)
    obs = env.reset()
    assert np.flatnonzero(obs["action_mask"]).tolist() == MINIMAL[game] == env.legal_actions.tolist()
    assert env.action_space.n == 6  # one 6-action layout for every game
    assert {int(env.random_action()) for _ in range(200)} == set(MINIMAL[game])
    illegal = sorted(set(range(6)) - set(MINIMAL[game]))
    if illegal:
        with pytest.raises(ValueError, match="not legal"):
            env.step(illegal[0])


@pytest.mark.parametrize("game", ["Breakout", "SpaceInvaders", "Seaquest"])
def test_seeding_replays_episodes(game):
    def episodes(seed, dynamic, sticky=0.1):
        env = MinAtarEnv(dict(env_id=game, sticky_action_prob=sticky, max_episode_steps=200))
        env.seed(seed, dynamic_seed=dynamic)
        return [_play(env, actions_seed=7) for _ in range(2)]

    first, again, other = episodes(5, True), episodes(5, True), episodes(6, True)
    for (obs_a, rew_a, _), (obs_b, rew_b, _) in zip(first, again):
        np.testing.assert_array_equal(obs_a, obs_b)
        np.testing.assert_array_equal(rew_a, rew_b)
    assert any(a[0].shape != b[0].shape or not np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    fixed = episodes(5, False)
    np.testing.assert_array_equal(fixed[0][0], fixed[1][0])  # fixed seed (evaluators): the same episode each time


def test_sticky_actions_change_the_game():
    def trajectory(sticky):
        env = MinAtarEnv(dict(env_id="Breakout", sticky_action_prob=sticky, max_episode_steps=60))
        env.seed(3, dynamic_seed=False)
        return _play(env, actions_seed=1)[0]

    always = trajectory(1.0)  # every action repeats the first one (no-op): the paddle never moves
    paddle = always[:, 0, 9, :]  # channel 0 = paddle, bottom row
    assert all(np.array_equal(paddle[0], row) for row in paddle)
    assert not np.array_equal(trajectory(0.0)[:, 0, 9, :], paddle[:len(trajectory(0.0))])


def test_frame_cap_and_episode_return():
    env = MinAtarEnv(dict(env_id="Freeway", max_episode_steps=25))
    env.seed(0)
    _, rewards, last = _play(env)
    assert len(rewards) == 25 and last.done and last.info["TimeLimit.truncated"]
    assert last.info["eval_episode_return"] == pytest.approx(rewards.sum())
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env = MinAtarEnv(dict(env_id="Breakout", max_episode_steps=None))
    _, rewards, last = _play(env)
    assert not last.info["TimeLimit.truncated"] and last.info["eval_episode_return"] == pytest.approx(rewards.sum())


def test_game_names():
    assert [resolve_game(n) for n in ("SpaceInvaders", "space_invaders", "MinAtar/SpaceInvaders-v1")] == \
        ["space_invaders"] * 3
    assert game_name("breakout") == "Breakout"


@pytest.mark.parametrize("cfg,match", [
    (dict(env_id="Pong"), "unknown MinAtar game 'Pong'"),
    (dict(env_id="Seaquest", observation_shape=(4, 10, 10)), "Seaquest has 10 observation channels"),
    (dict(env_id="Breakout", observation_shape=(3, 64, 64)), "10x10 grids"),
    (dict(env_id="Breakout", observation_shape=(4, 10)), r"\(channels, 10, 10\)"),
    (dict(env_id="Breakout", sticky_action_prob=1.5), "sticky_action_prob"),
    (dict(env_id="Breakout", max_episode_steps=0), "max_episode_steps"),
])
def test_config_errors(cfg, match):
    with pytest.raises(ValueError, match=match):
        MinAtarEnv(cfg)


def test_grid_encoder_on_10x10():
    from lzero.model.common import RepresentationNetworkUniZero

    from lzero_ext.model.grid_encoder import GridRepresentationNetwork, image_representation_network

    with pytest.raises(AttributeError):  # why the grid encoder exists: lightzero's has no last layer for 10x10
        RepresentationNetworkUniZero((10, 10, 10), 1, 16, False, norm_type='LN', embedding_dim=32)(torch.rand(2, 10, 10, 10))
    net = image_representation_network((10, 10, 10), 1, 16, False, norm_type='LN', embedding_dim=32)
    assert isinstance(net, GridRepresentationNetwork)
    x = torch.rand(3, 10, 10, 10)
    out = net(x)
    assert out.shape == (3, 32) and torch.isfinite(out).all()
    out.sum().backward()
    assert net.conv.weight.grad is not None and net.last_linear.weight.grad.abs().sum() > 0
    flipped = x.clone()
    flipped[:, :, 0, 0] = 1 - flipped[:, :, 0, 0]
    assert not torch.allclose(net(flipped)[0], net(x)[0])  # a single cell changes the latent
    assert type(image_representation_network((3, 64, 64), 1, 64, True, norm_type='LN', embedding_dim=32)) \
        is RepresentationNetworkUniZero
    with pytest.raises(ValueError, match="downsample=False"):
        image_representation_network((10, 10, 10), 1, 16, True, norm_type='LN', embedding_dim=32)


def test_smoke_preset_end_to_end(tmp_path):
    from zoo.minatar.config.scalezero_minatar_multitask_config import main

    main(["--preset", "smoke", "--exp-name", str(tmp_path / "run")])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [t["name"] for t in summary["tasks"]] == list(CHANNELS)
    for task in summary["tasks"]:
        assert task["env_steps"] >= 40 and math.isfinite(task["eval_return"]) and len(task["history"]) >= 2
    assert math.isfinite(summary["mean"]) and summary["num_scored"] == 5
    assert (tmp_path / "run" / "learning_curves.png").stat().st_size > 10_000
    assert summary["capped_tasks"] == list(CHANNELS)  # 30-step smoke episodes: marked as cut short

    import imageio.v3 as iio

    from lzero_ext.evaluate import main as evaluate

    results = evaluate(["--exp-name", str(tmp_path / "run"), "--video", str(tmp_path / "videos"), "--device", "cpu"])
    assert [r.video for r in results] == [str(tmp_path / "videos" / f"{game}.gif") for game in CHANNELS]
    for game in CHANNELS:
        frames = iio.imread(tmp_path / "videos" / f"{game}.gif", index=None)  # (N, 320, 320, 3)
        boards = frames[:, 64:, :, :3]  # below the score strip
        assert frames.shape[0] >= 2 and frames.shape[1:3] == (320, 320), (game, frames.shape)
        assert any((board != boards[0]).any() for board in boards[1:]), f"{game}: the board never changes"
        assert len(np.unique(frames.reshape(-1, frames.shape[-1])[:, :3], axis=0)) >= 3, f"{game}: not in colour"


def test_zoo_config_rejects_unknown_game(capsys):
    from zoo.minatar.config.scalezero_minatar_multitask_config import main

    with pytest.raises(SystemExit) as exit_info:  # the CLI prints one error line and exits 1
        main(["--preset", "smoke", "--games", "Pong", "Breakout"])
    assert exit_info.value.code == 1
    assert "unknown MinAtar game 'Pong'" in capsys.readouterr().err
