"""Lockstep collection and evaluation (engine='batched'): three Atari tasks step together, one policy forward per
step, while each keeps exactly its own env's data: segments, episode returns and env-step counts."""
import hashlib
from collections import defaultdict
from typing import Any, Dict, List

import numpy as np
import pytest
import torch

import lzero_ext  # noqa: F401
from lzero_ext.entry.train_scalezero import MultiTaskTrainer
from zoo.atari.config.scalezero_multitask_config import build_configs

GAMES = ["Pong", "Breakout", "MsPacman"]
FRAME_CAPS = [48, 72, 100]  # emulator frames per episode (4 per step): episodes end at 12, 18 and 25 steps


def _frame_key(obs: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(obs, dtype=np.float32).tobytes()).hexdigest()


class EnvRecorder:
    """Wraps one task's env manager: records every observation and reward its envs produce."""

    def __init__(self, env_manager: Any) -> None:
        self.env, self.steps = env_manager, 0
        self.frames: set = set()
        self.episode_returns: List[float] = []
        self._running: Dict[int, float] = defaultdict(float)
        original_step = env_manager.step

        def step(actions):
            timesteps = original_step(actions)
            for env_id, timestep in timesteps.items():
                self.steps += 1
                self.frames.add(_frame_key(timestep.obs["observation"]))
                self._running[env_id] += float(timestep.reward)
                if timestep.done:  # the env's raw (unclipped) return, as lightzero's evaluator reads it
                    running = self._running.pop(env_id)
                    self.episode_returns.append(float(timestep.info.get("eval_episode_return", running)))
            return timesteps

        env_manager.step = step

    def note_ready(self) -> None:
        for obs in self.env.ready_obs.values():
            self.frames.add(_frame_key(obs["observation"]))


@pytest.fixture
def trainer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    configs = build_configs("smoke", games=GAMES, exp_name=str(tmp_path / "exp"), cuda=False)
    for (main, _), cap in zip(configs, FRAME_CAPS):
        main.env.max_episode_frames = cap
        main.env.collector_env_num = main.policy.collector_env_num = 2
        main.env.n_evaluator_episode = main.env.evaluator_env_num = main.policy.evaluator_env_num = 2
        main.policy.num_segments = 2
        main.policy.model.world_model_cfg.collector_env_num = 2
        main.policy.model.world_model_cfg.evaluator_env_num = main.policy.model.world_model_cfg.env_num = 2
    trainer = MultiTaskTrainer(configs, seed=0, exp_name=str(tmp_path / "exp"), score_kind="atari", max_env_step=10_000,
                               max_train_iter=10, checkpoint_freq=100, save_replay_buffer=False, progress=False)
    yield trainer
    trainer.close()


def _count_lockstep_forwards(policy) -> List[Dict[int, int]]:
    """Counts the batched forwards; on the first one (every task at its first step, so no MCTS context yet) checks
    that each task got its own predicted values: those of that task's own (single-task) initial inference."""
    calls: List[Dict[int, int]] = []
    original = policy.lockstep_forward

    def counted(mode, requests):
        calls.append({task_id: args[0].shape[0] for task_id, (args, _) in requests.items()})
        outputs = original(mode, requests)
        if len(calls) == 1:
            for task_id, (args, kwargs) in requests.items():
                data = args[0]
                own = policy._model.initial_inference(torch.zeros_like(data), [-1] * data.shape[0], data,
                                                      np.asarray(kwargs["timestep"]), task_id=task_id)
                values = policy.inverse_scalar_transform_handle(own.value).detach().numpy().reshape(-1)
                got = [float(np.asarray(outputs[task_id][env]["predicted_value"]).reshape(-1)[0])
                       for env in sorted(outputs[task_id])]
                np.testing.assert_allclose(got, values, rtol=1e-4, atol=1e-4)
        return outputs

    policy.lockstep_forward = counted
    return calls


def test_lockstep_collection_keeps_each_tasks_own_data(trainer):
    recorders = {task.task_id: EnvRecorder(task.collector._env) for task in trainer.tasks}
    for task in trainer.tasks:
        task.collector._env.reset()  # the collector resets its envs at collect(); record the first frames too
    calls = _count_lockstep_forwards(trainer.policy)
    for task in trainer.tasks:
        recorders[task.task_id].note_ready()
    collected = trainer.collect()

    assert calls and max(len(c) for c in calls) == 3  # one forward served all three tasks on a step
    assert sum(recorder.steps for recorder in recorders.values()) == collected
    for task in trainer.tasks:
        recorder = recorders[task.task_id]
        assert task.env_steps == recorder.steps > 0  # the task's own env-step count
        frames = [obs for segment in task.buffer.game_segment_buffer for obs in segment.obs_segment]
        assert frames and all(_frame_key(f) in recorder.frames for f in frames)  # only this task's own frames
        other = set().union(*(r.frames for t, r in recorders.items() if t != task.task_id))
        assert not any(_frame_key(f) in other - recorder.frames for f in frames)
        # Episodes ended at this task's own frame cap: returns are sums of this env's rewards.
        cap_steps = FRAME_CAPS[task.task_id] // 4
        assert len(recorder.episode_returns) >= 2 * (recorder.steps // (2 * cap_steps)) - 2
    assert len({len(r.episode_returns) for r in recorders.values()}) > 1  # tasks ended episodes at different steps


def test_lockstep_evaluation_reports_each_tasks_own_returns(trainer):
    recorders = {task.task_id: EnvRecorder(task.evaluator._env) for task in trainer.tasks}
    calls = _count_lockstep_forwards(trainer.policy)
    trainer.evaluate(final=True)
    assert calls and max(len(c) for c in calls) == 3
    for task in trainer.tasks:
        recorder = recorders[task.task_id]
        env_step, mean_return = task.record.history[-1]
        assert len(recorder.episode_returns) >= 2
        assert mean_return == pytest.approx(np.mean(recorder.episode_returns[:2]))


def _ready_subset_every(env_manager: Any, period: int) -> Dict[str, int]:
    """Makes ``env_manager`` report only its first env as ready before every ``period``-th step, as a subprocess
    env manager does when one env process answers late (the same answer for every read until the next step)."""
    base, counts = type(env_manager), {"steps": 0, "subset": 0}

    class LateEnvs(base):
        @property
        def ready_obs(self):
            obs = base.ready_obs.fget(self)
            if counts["steps"] > 2 and counts["steps"] % period == 0 and len(obs) > 1:
                return {min(obs): obs[min(obs)]}
            return obs

        def step(self, actions):
            counts["steps"] += 1
            counts["subset"] += len(actions) < self.env_num
            return super().step(actions)

    env_manager.__class__ = LateEnvs
    return counts


def test_lockstep_collection_survives_steps_where_only_some_envs_are_ready(trainer):
    polls = _ready_subset_every(trainer.tasks[1].collector._env._manager, period=3)  # inside the finite-check wrapper
    recorder = EnvRecorder(trainer.tasks[1].collector._env)
    calls = _count_lockstep_forwards(trainer.policy)
    collected = trainer.collect()
    collected += trainer.collect()  # the next round starts from the states the subset steps left

    assert polls["subset"] >= 2
    assert any(c.get(1) == 1 for c in calls)  # task 1 stepped with one of its two envs
    assert collected == sum(task.env_steps for task in trainer.tasks)
    assert trainer.tasks[1].env_steps == recorder.steps > 0
