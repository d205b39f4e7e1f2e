"""The DMC env: spaces and shapes, action mapping, seeding, action repeat, episode end, bad task ids."""
import numpy as np
import pytest
from ding.envs import BaseEnvTimestep
from ding.utils import ENV_REGISTRY

import lzero_ext.registry  # noqa: F401  (registers the env)
from lzero_ext.envs.dmc_env import DMCMultiTaskEnv
from lzero_ext.envs.dmc_tasks import DMC18, default_action_repeat, list_tasks, resolve_task

# (task, obs dim, action dim): different sizes, the ScaleZero paper.
SIZES = [("cartpole-swingup", 5, 1), ("cheetah-run", 17, 6), ("walker-walk", 24, 6), ("pendulum-swingup", 3, 1)]


def _env(env_id: str, **cfg) -> DMCMultiTaskEnv:
    env = DMCMultiTaskEnv(dict(env_id=env_id, **cfg))
    env.seed(0)
    return env


def _rollout(env: DMCMultiTaskEnv, steps: int, action_seed: int = 1):
    rng = np.random.RandomState(action_seed)
    obs = [env.reset()['observation']]
    rewards = []
    for _ in range(steps):
        timestep = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        obs.append(timestep.obs['observation'])
        rewards.append(float(timestep.reward))
    return np.stack(obs), np.array(rewards)


def test_registered():
    assert ENV_REGISTRY.get('dmc_scalezero') is DMCMultiTaskEnv
    assert 'dmc_scalezero' in lzero_ext.registry.registered_names()['env']


@pytest.mark.parametrize("env_id,obs_dim,action_dim", SIZES)
def test_shapes_spaces_and_bounds(env_id, obs_dim, action_dim):
    env = _env(env_id)
    assert env.observation_space.shape == (obs_dim,) and env.observation_space.dtype == np.float32
    assert env.action_space.shape == (action_dim,)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    assert env.reward_space.shape == (1,) and env.reward_space.high[0] == env.action_repeat
    obs = env.reset()
    assert set(obs) == {'observation', 'action_mask', 'to_play', 'timestep'}
    assert obs['observation'].shape == (obs_dim,) and obs['observation'].dtype == np.float32
    assert obs['action_mask'] is None and obs['to_play'] == -1 and obs['timestep'] == 0
    for action in (np.full(action_dim, -1.0), np.full(action_dim, 5.0), env.random_action()):  # 5.0 is clipped to 1
        timestep = env.step(action)
        assert isinstance(timestep, BaseEnvTimestep)
        assert timestep.obs['observation'].shape == (obs_dim,) and np.all(np.isfinite(timestep.obs['observation']))
        assert timestep.reward.shape == () and timestep.reward.dtype == np.float32
        assert 0.0 <= float(timestep.reward) <= env.action_repeat
    assert timestep.obs['timestep'] == 3
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(action_dim + 1))
    env.close()


def test_action_mapped_to_spec_bounds():
    env = _env("cartpole-swingup")
    env._action_low, env._action_high = np.array([-3.0], np.float32), np.array([5.0], np.float32)  # pretend spec
    assert env._scale_action([-1.0])[0] == -3.0 and env._scale_action([1.0])[0] == 5.0
    assert env._scale_action([0.0])[0] == 1.0 and env._scale_action([2.0])[0] == 5.0


def test_dmc18_table_matches_dm_control():
    assert len(DMC18) == 18
    for env_id in ("acrobot-swingup", "ball_in_cup-catch", "finger-turn_hard", "hopper-hop", "reacher-easy"):
        env = DMCMultiTaskEnv(dict(env_id=env_id))
        assert (env.observation_space.shape[0], env.action_space.shape[0]) == (DMC18[env_id].obs_dim, DMC18[env_id].action_dim)
    assert set(DMC18) <= set(list_tasks())


def test_deterministic_by_seed():
    first_obs, first_rewards = _rollout(_env("cheetah-run"), 5)
    again_obs, again_rewards = _rollout(_env("cheetah-run"), 5)
    np.testing.assert_array_equal(first_obs, again_obs)
    np.testing.assert_array_equal(first_rewards, again_rewards)
    other = DMCMultiTaskEnv(dict(env_id="cheetah-run"))
    other.seed(1)
    assert not np.array_equal(other.reset()['observation'], first_obs[0])
    # Fixed seed (evaluators): every episode starts alike. Dynamic seed: consecutive episodes differ.
    env = _env("cartpole-swingup")
    env.seed(3, dynamic_seed=False)
    np.testing.assert_array_equal(env.reset()['observation'], env.reset()['observation'])
    env.seed(3, dynamic_seed=True)
    assert not np.array_equal(env.reset()['observation'], env.reset()['observation'])


@pytest.mark.parametrize("env_id,repeat", [("cartpole-swingup", 4), ("pendulum-swingup", 8), ("walker-walk", 2)])
def test_action_repeat_advances_control_steps(env_id, repeat):
    env = _env(env_id, action_repeat=None if repeat != 2 else 2)
    assert env.action_repeat == repeat and (repeat == 2 or default_action_repeat(env_id) == repeat)
    env.reset()
    control_dt = env._env.control_timestep()
    start = env.physics.time()
    env.step(np.zeros(env.action_space.shape))
    assert env.physics.time() - start == pytest.approx(repeat * control_dt)
    env.step(np.zeros(env.action_space.shape))
    assert env.physics.time() - start == pytest.approx(2 * repeat * control_dt)


def test_episode_end_and_return():
    env = _env("pendulum-swingup")  # 1000 control steps / repeat 8 = 125 agent steps
    obs, rewards = _rollout(env, 124)
    timestep = env.step(np.zeros(1))
    assert timestep.done and timestep.obs['timestep'] == 125
    assert timestep.info['TimeLimit.truncated'] is True
    assert timestep.info['eval_episode_return'] == pytest.approx(rewards.sum() + float(timestep.reward), rel=1e-5)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1))
    capped = _env("cartpole-swingup", max_episode_steps=3)
    _, capped_rewards = _rollout(capped, 2)
    timestep = capped.step(np.zeros(1))
    assert timestep.done and 'eval_episode_return' in timestep.info
    assert timestep.info['eval_episode_return'] == pytest.approx(capped_rewards.sum() + float(timestep.reward), rel=1e-5)
    assert capped.reset()['timestep'] == 0


def test_unknown_domain_or_task_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Unknown DMC domain 'cartpol'.*Did you mean 'cartpole'"):
        DMCMultiTaskEnv(dict(env_id="cartpol-swingup"))
    with pytest.raises(ValueError, match=r"Unknown task 'swingupp'.*Did you mean 'cartpole-swingup'"):
        DMCMultiTaskEnv(dict(env_id="cartpole-swingupp"))
    with pytest.raises(ValueError, match="'<domain>-<task>'"):
        resolve_task("cartpole_swingup")
    with pytest.raises(ValueError, match="action_repeat"):
        DMCMultiTaskEnv(dict(env_id="cartpole-swingup", action_repeat=0))
    assert resolve_task("ball_in_cup-catch") == ("ball_in_cup", "catch")
