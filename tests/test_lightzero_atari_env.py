"""lightzero's own Atari env (``atari_lightzero``, gym ids such as ``PongNoFrameskip-v4``) in the pinned stack:
gym 0.25.1 gets ALE's ids from ``lzero_ext.envs.ale_gym``; the project's ``atari_scalezero`` is unaffected."""
from functools import partial

import gym
import numpy as np
from ding.envs import SyncSubprocessEnvManager

import lzero_ext  # noqa: F401  (registers ALE's ids with gym)
from lzero_ext.envs.ale_gym import ALEGymEnv, REGISTERED_ALE_IDS, register_ale_ids
from lzero_ext.envs.atari_env import AtariMultiTaskEnv


def _lightzero_env_cfgs(env_id: str = "PongNoFrameskip-v4", evaluator: bool = False):
    from zoo.atari.envs.atari_lightzero_env import AtariEnvLightZero

    cfg = AtariEnvLightZero.default_config()
    cfg.update(env_id=env_id, observation_shape=(3, 64, 64), gray_scale=False, collector_env_num=2,
               evaluator_env_num=1)
    make = AtariEnvLightZero.create_evaluator_env_cfg if evaluator else AtariEnvLightZero.create_collector_env_cfg
    return AtariEnvLightZero, make(cfg)


def test_ale_ids_are_registered_with_their_ale_kwargs():
    assert {"PongNoFrameskip-v4", "Pong-v4", "BreakoutNoFrameskip-v4", "ALE/Pong-v5"} <= set(REGISTERED_ALE_IDS)
    spec = gym.spec("PongNoFrameskip-v4")
    assert spec.kwargs == dict(game="pong", obs_type="rgb", repeat_action_probability=0.0, full_action_space=False,
                               max_num_frames_per_episode=108000, frameskip=1)
    assert register_ale_ids() == []  # nothing is registered twice


def test_gym_make_gives_the_old_step_api():
    env = gym.make("PongNoFrameskip-v4")
    assert isinstance(env.unwrapped, ALEGymEnv) and env.unwrapped.get_action_meanings()[0] == "NOOP"
    first = env.reset(seed=3)
    assert first.shape == (210, 160, 3) and first.dtype == np.uint8
    obs, reward, done, info = env.step(0)
    assert obs.shape == (210, 160, 3) and not done and info["lives"] == env.unwrapped.ale.lives()
    env.close()


def _rollout(env, steps: int, seed: int = 0):
    env.seed(seed, dynamic_seed=False)
    first = env.reset()
    rng = np.random.RandomState(seed)
    frames, rewards = [first["observation"]], []
    for _ in range(steps):
        timestep = env.step(rng.randint(6))
        frames.append(timestep.obs["observation"])
        rewards.append(float(timestep.reward))
        if timestep.done:
            break
    env.close()
    return first, np.stack(frames), rewards


def test_lightzero_atari_env_resets_and_steps():
    env_cls, cfgs = _lightzero_env_cfgs()
    first, frames, rewards = _rollout(env_cls(cfgs[0]), steps=200)
    assert first["observation"].shape == (3, 64, 64) and first["observation"].dtype == np.float32
    assert first["action_mask"].tolist() == [1] * 6 and first["to_play"] == -1 and first["timestep"] == 0
    assert len(frames) == 201 and 0.0 <= frames.min() and frames.max() <= 1.0
    assert np.abs(np.diff(frames, axis=0)).sum(axis=(1, 2, 3)).max() > 0  # the picture moves
    assert set(rewards) <= {-1.0, 0.0, 1.0}
    # seeded: the same seed and actions give the same game
    _, again, _ = _rollout(env_cls(cfgs[0]), steps=200)
    np.testing.assert_array_equal(frames, again)


def test_lightzero_atari_env_plays_a_whole_pong_game():
    env_cls, cfgs = _lightzero_env_cfgs(evaluator=True)
    env = env_cls(cfgs[0])
    env.seed(0, dynamic_seed=False)
    env.reset()
    total, timestep = 0.0, None
    for _ in range(27_000):
        timestep = env.step(np.random.randint(6))
        total += float(timestep.reward)
        if timestep.done:
            break
    env.close()
    assert timestep.done and timestep.info["eval_episode_return"] == total and -21 <= total < 21


def test_lightzero_atari_env_runs_in_lightzero_subprocess_env_manager():
    """lightzero's Atari configs use ding's subprocess manager; the forked workers inherit the gym ids."""
    env_cls, cfgs = _lightzero_env_cfgs()
    manager_cfg = SyncSubprocessEnvManager.default_config()  # lightzero's Atari configs: type 'subprocess'
    manager_cfg.update(shared_memory=False)
    manager = SyncSubprocessEnvManager([partial(env_cls, cfg=c) for c in cfgs], manager_cfg)
    manager.seed(0)
    manager.launch()
    try:
        assert sorted(manager.ready_obs) == [0, 1]
        timesteps = manager.step({0: 1, 1: 2})
        assert all(ts.obs["observation"].shape == (3, 64, 64) for ts in timesteps.values())
    finally:
        manager.close()


def test_atari_scalezero_env_still_plays_the_same_game():
    """The project's own ALE env is untouched by the gym registrations."""
    env = AtariMultiTaskEnv(dict(env_id="PongNoFrameskip-v4"))
    env.seed(0)
    obs = env.reset()
    assert obs["observation"].shape == (3, 64, 64) and obs["action_mask"].shape == (6,)
    assert env.step(0).obs["observation"].shape == (3, 64, 64)
    env.close()
