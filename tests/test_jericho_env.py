"""The `jericho_scalezero` env: observations, masks, score rewards, episode caps, the valid-action
cache, game lookup and its errors. Uses detective mostly (acorncourt's valid actions take seconds)."""
import pickle

import numpy as np
import pytest
from ding.utils import ENV_REGISTRY

from lzero_ext.envs.jericho_env import (GAME_DIR_ENV_VAR, GAMES, JerichoMultiTaskEnv, ValidActionCache, game_dir,
                                        resolve_game_file)
from lzero_ext.model.text_encoder import load_tokenizer

GAME_DIR = game_dir()
needs_games = pytest.mark.skipif(
    not (GAME_DIR / "detective.z5").is_file(),
    reason=f"Jericho game files not found in {GAME_DIR} (set ${GAME_DIR_ENV_VAR} to the directory that holds them)")


def make_env(game: str = "detective", **overrides) -> JerichoMultiTaskEnv:
    return JerichoMultiTaskEnv(dict(game=game, **overrides))


@needs_games
@pytest.mark.parametrize("game", ["detective", "omniquest", "zork1"])
def test_reset_and_step(game):
    env = make_env(game)
    obs = env.reset()
    n = GAMES[game].max_action_num
    assert set(obs) == {"observation", "action_mask", "to_play", "timestep"}
    assert obs["observation"].shape == (512,) and obs["observation"].dtype == np.int64
    assert obs["action_mask"].shape == (n,) and obs["action_mask"].dtype == np.int8
    assert obs["to_play"] == -1 and obs["timestep"] == 0
    assert env.action_space.n == n and env.observation_space.shape == (512,)
    assert 0 < len(env.valid_actions) <= n and env.valid_actions == sorted(env.valid_actions)
    assert obs["action_mask"].tolist() == [1] * len(env.valid_actions) + [0] * (n - len(env.valid_actions))

    timestep = env.step(0)
    assert timestep.obs["timestep"] == 1 and timestep.reward.dtype == np.float32 and timestep.reward.shape == ()
    assert timestep.obs["action_mask"].sum() == max(1, len(env.valid_actions))
    env.close()


@needs_games
def test_acorncourt_sizes_without_playing():
    env = make_env("acorncourt")  # no reset: its valid-action search takes seconds
    assert env.action_space.n == 45 and "acorncourt" in repr(env)


@needs_games
def test_observation_is_the_tokenised_text_with_valid_actions():
    env = make_env("detective", max_seq_len=256)
    obs = env.reset()
    assert obs["observation"].shape == (256,)
    text = load_tokenizer().decode(obs["observation"], skip_special_tokens=True)
    assert text.startswith("valid actions : " + ", ".join(env.valid_actions))  # the MiniLM tokenizer lower-cases
    assert "chief" in text
    env.close()


@needs_games
def test_score_reward_and_mask_follow_the_game():
    env = make_env("detective")
    env.reset()
    timestep = env.step(env.valid_actions.index("take paper"))  # +10 in detective (score 10 -> 20)
    assert float(timestep.reward) == 10.0 and timestep.info["score"] == 20
    assert "put paper down" in env.valid_actions and "take paper" not in env.valid_actions

    rng = np.random.RandomState(0)
    score, total = timestep.info["score"], float(timestep.reward)
    for _ in range(15):
        obs = timestep.obs
        assert obs["action_mask"].sum() == max(1, len(env.valid_actions))
        timestep = env.step(rng.randint(obs["action_mask"].sum()))
        assert float(timestep.reward) == timestep.info["score"] - score  # reward == score delta
        score, total = timestep.info["score"], total + float(timestep.reward)
        if timestep.done:
            break
    env.close()


@needs_games
def test_episode_cap_and_return():
    env = make_env("detective", max_steps=3)
    env.reset()
    rewards = []
    for step in range(3):
        timestep = env.step(env.valid_actions.index("take paper") if step == 0 else 0)
        rewards.append(float(timestep.reward))
    assert timestep.done and timestep.info["TimeLimit.truncated"]
    assert timestep.info["eval_episode_return"] == sum(rewards) >= 10.0
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


@needs_games
def test_padded_action_space_and_invalid_actions():
    env = make_env("detective", action_space_size=55)
    obs = env.reset()
    assert obs["action_mask"].shape == (55,) and obs["action_mask"].sum() == len(env.valid_actions)
    with pytest.raises(ValueError, match="not valid in detective"):
        env.step(len(env.valid_actions))  # masked out
    with pytest.raises(ValueError, match="action_space_size"):
        make_env("detective", max_action_num=12, action_space_size=5)


@needs_games
def test_valid_actions_are_cached_by_world_state():
    env = make_env("detective")
    env.reset()
    first = env.valid_actions
    cache = ValidActionCache._by_game[str(resolve_game_file("detective"))]
    hits = cache.hits
    other = make_env("detective")  # same process, same game: shares the cache
    other.reset()
    assert other.valid_actions == first and cache.hits == hits + 1
    uncached = make_env("detective", valid_action_cache_size=0)
    uncached.reset()
    assert uncached.valid_actions == first and cache.hits == hits + 1


@needs_games
def test_env_pickles_and_is_registered():
    env = make_env("detective")
    clone = pickle.loads(pickle.dumps(env))  # subprocess env managers pickle envs before reset
    assert repr(clone) == repr(env)
    assert ENV_REGISTRY.get("jericho_scalezero") is JerichoMultiTaskEnv
    import lzero_ext.registry

    assert "jericho_scalezero" in lzero_ext.registry.registered_names()["env"]


def test_missing_game_file_names_directory_and_file(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        make_env("detective", game_dir=str(tmp_path))
    assert str(tmp_path) in str(error.value) and "detective.z5" in str(error.value)
    missing_dir = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="does not exist") as error:
        resolve_game_file("zork1", str(missing_dir))
    assert str(missing_dir) in str(error.value) and "zork1.z5" in str(error.value)


def test_game_directory_from_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(GAME_DIR_ENV_VAR, str(tmp_path))
    assert game_dir() == tmp_path and game_dir("/elsewhere") == game_dir("/elsewhere")
    (tmp_path / "mystery.z5").write_bytes(b"")
    assert resolve_game_file("mystery.z5") == (tmp_path / "mystery.z5").resolve()
    with pytest.raises(FileNotFoundError, match=GAME_DIR_ENV_VAR):
        resolve_game_file("omniquest")
    with pytest.raises(ValueError, match="max_action_num must be given"):
        make_env("mystery.z5")  # a custom story file needs its sizes


def test_unknown_game():
    with pytest.raises(ValueError, match="unknown Jericho game 'zork9'.*detective"):
        make_env("zork9")
