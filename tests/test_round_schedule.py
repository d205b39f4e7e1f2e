"""Evaluations on an env-step schedule and equal env steps per round, on real tiny runs (CartPole, Acrobot)."""
import json
from dataclasses import replace
from pathlib import Path

import pytest

import lzero_ext  # noqa: F401  (registers envs, models, policies)
from lzero_ext.bench.fault_job import TASKS, TINY
from lzero_ext.bench.learning_configs import classic_configs
from lzero_ext.entry.train_scalezero import MultiTaskTrainer

BUDGET = 40  # env steps per task


def _trainer(tmp_path, settings=TINY, cartpole_steps: int = 2, **policy_keys) -> MultiTaskTrainer:
    # CartPole's episodes end after 2 steps, Acrobot's after 20 (10x longer): a collector round (one finished
    # segment per env) gives CartPole 2 steps and Acrobot 20
    specs = [replace(TASKS["CartPole"], max_episode_steps=cartpole_steps), TASKS["Acrobot"]]
    configs = classic_configs(specs, settings, moe=True, exp_name=str(tmp_path), seed=0)
    for main, _ in configs:
        main.policy.update(policy_keys)
    return MultiTaskTrainer(configs, seed=0, exp_name=str(tmp_path), score_kind="raw", max_env_step=BUDGET,
                            max_train_iter=10 ** 6, checkpoint_freq=10 ** 6, save_replay_buffer=False, progress=False)


def _record_eval_episodes(trainer: MultiTaskTrainer) -> dict:
    episodes = {task.name: [] for task in trainer.tasks}
    for task in trainer.tasks:
        original = task.evaluator.eval

        def spy(*args, _original=original, _name=task.name, **kwargs):
            episodes[_name].append(kwargs.get("n_episode"))
            return _original(*args, **kwargs)
        task.evaluator.eval = spy
    return episodes


def test_evaluations_follow_the_env_step_schedule_and_rounds_give_equal_steps(tmp_path):
    trainer = _trainer(tmp_path, eval_env_step_fractions=[0.5], collect_env_steps_per_round=20, final_eval_episodes=3)
    episodes = _record_eval_episodes(trainer)
    per_round = {task.name: [] for task in trainer.tasks}
    collect = trainer._collect_task

    def counting(task):
        before = task.env_steps
        collect(task)
        per_round[task.name].append(task.env_steps - before)
    trainer._collect_task = counting
    try:
        summary = trainer.run().summary
    finally:
        trainer.close()
    for task in trainer.tasks:
        steps = [step for step, _ in task.record.history]
        # the baseline, once at half the budget (not again before the end), the final evaluation
        assert len(steps) == 3 and steps[0] == 0 and BUDGET / 2 <= steps[1] < BUDGET and steps[2] >= BUDGET, steps
        # in-training evaluations as configured; the final one's 3 episodes as 3 rounds of the one evaluator env
        assert episodes[task.name] == [None, None, 1, 1, 1]
    assert per_round == {"CartPole-v1": [20, 20], "Acrobot-v1": [20, 20]}  # CartPole: 10 collector rounds per round
    rows = {row["name"]: row for row in summary["tasks"]}
    for name, row in rows.items():
        assert row["updates"] == trainer.train_iter > 0
        assert row["updates_per_env_step"] == pytest.approx(trainer.train_iter / row["env_steps"])
        assert row["eval_episodes"] == 3  # the final evaluation's episodes, for the learned rule
    extra = json.loads((Path(trainer.exp_dir) / "summary.json").read_text())["extra"]
    assert extra["wall_seconds"] > sum(extra["phase_seconds"].values()) > 0


def test_without_the_settings_rounds_are_one_collector_round_and_evaluation_follows_eval_freq(tmp_path):
    trainer = _trainer(tmp_path)
    per_round = []
    collect = trainer._collect_task

    def counting(task):
        before = task.env_steps
        collect(task)
        per_round.append((task.name, task.env_steps - before))
    trainer._collect_task = counting
    try:
        trainer.collect()
        trainer.evaluate()
    finally:
        trainer.close()
    assert dict(per_round) == {"CartPole-v1": 2, "Acrobot-v1": 20}
    assert all(len(task.record.history) == 1 for task in trainer.tasks)  # the baseline only (eval_freq 1000)


def test_lightzero_eps_config_sets_the_collect_epsilon_by_env_step(tmp_path):
    from easydict import EasyDict

    from lzero_ext.entry.task_runtime import collect_epsilon
    off = EasyDict(eps=dict(eps_greedy_exploration_in_collect=False, type='linear', start=1.0, end=0.1, decay=100))
    assert collect_epsilon(off, 0) == 0.0
    on = EasyDict(eps=dict(off.eps, eps_greedy_exploration_in_collect=True))
    assert [collect_epsilon(on, s) for s in (0, 50, 100, 1000)] == pytest.approx([1.0, 0.55, 0.1, 0.1])

    trainer = _trainer(tmp_path, eps=dict(on.eps))  # a run passes it to lightzero's collector on every round
    seen = []
    task = trainer.tasks[0]
    original = task.collector.collect

    def spy(*args, **kwargs):
        seen.append(kwargs["policy_kwargs"]["epsilon"])
        return original(*args, **kwargs)
    task.collector.collect = spy
    try:
        trainer._collect_task(task)
        trainer._collect_task(task)
    finally:
        trainer.close()
    assert seen[0] == 1.0 and 0.1 <= seen[1] < 1.0


def test_minatar_collect_temperature_is_lightzeros_default_unless_the_preset_sets_one(tmp_path):
    from lzero.policy import visit_count_temperature

    from lzero_ext.entry.configs import compile_task_configs
    from zoo.minatar.config.scalezero_minatar_multitask_config import build_configs

    def temperature(**overrides) -> float:
        configs = build_configs("smoke", exp_name=str(tmp_path), games=["Breakout"], overrides=overrides)
        policy = compile_task_configs(configs, seed=0, exp_name=str(tmp_path), save_cfg=False)[0].policy
        return visit_count_temperature(policy.manual_temperature_decay, policy.fixed_temperature_value,
                                       policy.threshold_training_steps_for_final_temperature, trained_steps=10 ** 6)
    assert temperature() == 0.25
    assert temperature(collect_temperature=1.0) == 1.0


def test_more_final_episodes_than_envs_run_in_rounds_of_one_per_env(tmp_path):
    """Episodes of different lengths over several envs: lightzero's evaluator alone fails on more episodes than
    envs when a fast env takes a slow one's share; rounds of one episode per env do not."""
    from lzero_ext.entry.task_runtime import TaskRuntime

    # 3 evaluator envs; CartPole's episodes end anywhere up to 60 steps under an untrained policy
    trainer = _trainer(tmp_path, settings=replace(TINY, evaluator_env_num=3), cartpole_steps=60)
    task = trainer.tasks[0]
    env_num = task.evaluator._env_num
    assert env_num == 3
    returns = []
    original = task.evaluator.eval

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        returns.append(list(out[1]["eval_episode_return"]))
        return out
    task.evaluator.eval = spy
    try:
        mean = TaskRuntime.evaluate(task, 0, episodes=2 * env_num + 1)
    finally:
        trainer.close()
    assert len(returns) == 3 and all(len(r) == env_num for r in returns)
    assert mean == pytest.approx(sum(map(sum, returns)) / (3 * env_num))
