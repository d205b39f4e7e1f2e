"""The multi-task entry end to end (smoke preset), resume, and bad input."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lzero_ext  # noqa: F401
from lzero_ext.checkpoint import CheckpointError, load_checkpoint
from lzero_ext.entry import TaskConfigError, train_scalezero
from lzero_ext.entry.train_scalezero import intra_op_threads, usable_cpus
from zoo.atari.config.scalezero_multitask_config import PRESETS, build_configs

REPO = Path(__file__).resolve().parents[1]
SMOKE = PRESETS["smoke"]


def _smoke_configs(tmp_path: Path, **kwargs):
    return build_configs("smoke", exp_name=str(tmp_path / "exp"), cuda=False, **kwargs)


def _params(policy):
    return {k: v.detach().clone() for k, v in policy._learn_model.state_dict().items()}


def test_smoke_preset_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    configs = _smoke_configs(tmp_path)
    result = train_scalezero(configs, max_env_step=SMOKE.max_env_step, max_train_iter=6, exp_name=str(tmp_path / "exp"),
                             score_kind="atari", checkpoint_freq=3, progress=False)
    summary = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert [row["name"] for row in summary["tasks"]] == ["Pong", "Breakout"]
    for row in summary["tasks"]:
        assert row["env_steps"] > 0 and math.isfinite(row["eval_return"]) and math.isfinite(row["normalized"])
    assert math.isfinite(summary["mean"]) and math.isfinite(summary["median"])
    assert (tmp_path / "exp" / "learning_curves.png").stat().st_size > 1000
    assert result.train_iter == 6
    initial = load_checkpoint(tmp_path / "exp" / "ckpt" / "rank0")  # latest
    assert initial["train_iter"] == 6
    # The model moved away from its initialisation: compare with a fresh policy of the same seed.
    from ding.policy import create_policy
    from lzero_ext.entry.configs import compile_task_configs

    fresh_cfg = compile_task_configs(configs, seed=0, exp_name=str(tmp_path / "fresh"), save_cfg=False)[0]
    torch.manual_seed(0)
    fresh = create_policy(fresh_cfg.policy, enable_field=["learn"])
    trained = _params(result.policy)
    changed = [k for k, v in _params(fresh).items() if k in trained and v.shape == trained[k].shape and not torch.equal(v, trained[k])]
    assert len(changed) > len(trained) // 2


def test_learn_losses_are_finite_and_per_task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads_while_learning = []

    def record_threads(iteration, batch):  # runs inside each learner iteration
        threads_while_learning.append(torch.get_num_threads())
        return batch

    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_scalezero(_smoke_configs(tmp_path), max_env_step=SMOKE.max_env_step, max_train_iter=2,
                                 exp_name=str(tmp_path / "exp"), progress=False, learn_threads=2,
                                 batch_transform=record_threads)
        threads_after = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads_before)
    # learning ran on learn_threads (at most the CPUs this process may use); the rest of the run kept its one thread
    assert set(threads_while_learning) == {min(2, usable_cpus())} and threads_after == 1
    log = result.last_learn_log
    for task_id in (0, 1):
        assert math.isfinite(log[f"task{task_id}/loss_total"]) and log[f"task{task_id}/loss_total"] > 0
    assert math.isfinite(log["weighted_total_loss"]) and log["num_task_batches"] == 2
    events = list((tmp_path / "exp" / "log" / "tasks").glob("*/events.out.tfevents.*"))
    assert {p.parent.name for p in events} == {"Pong", "Breakout"}


def test_intra_op_threads_sets_caps_and_restores():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with intra_op_threads(None):
            assert torch.get_num_threads() == 1
        with intra_op_threads(10_000):  # capped at the CPUs this process may use
            assert torch.get_num_threads() == usable_cpus()
        assert torch.get_num_threads() == 1
        with pytest.raises(RuntimeError), intra_op_threads(2):
            raise RuntimeError("a failed learn step")
        assert torch.get_num_threads() == 1  # put back after an error too
    finally:
        torch.set_num_threads(before)


def test_usable_cpus_without_an_affinity_call(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS has none
    assert usable_cpus() == (os.cpu_count() or 1)


def test_resume_continues_counters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = str(tmp_path / "exp")
    first = train_scalezero(_smoke_configs(tmp_path), max_env_step=SMOKE.max_env_step, max_train_iter=3, exp_name=exp,
                            checkpoint_freq=1, progress=False)
    saved = load_checkpoint(Path(exp) / "ckpt" / "rank0")
    steps_before = {t: s["env_steps"] for t, s in saved["tasks"].items()}
    adam_step_before = max(int(s["step"]) for s in saved["policy"]["optimizer_world_model"]["state"].values())
    assert saved["train_iter"] == 3 and first.train_iter == 3

    second = train_scalezero(_smoke_configs(tmp_path), max_env_step=2 * SMOKE.max_env_step, max_train_iter=5, exp_name=exp,
                             resume=True, checkpoint_freq=1, progress=False)
    resumed = load_checkpoint(Path(exp) / "ckpt" / "rank0")
    assert second.train_iter == 5  # continued from 3, did not restart at 0
    adam_step_after = max(int(s["step"]) for s in resumed["policy"]["optimizer_world_model"]["state"].values())
    assert adam_step_after == adam_step_before + 2
    for task_id, steps in steps_before.items():
        assert resumed["tasks"][task_id]["env_steps"] >= steps


def test_corrupt_checkpoint_on_resume_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "exp"
    train_scalezero(_smoke_configs(tmp_path), max_env_step=16, max_train_iter=1, exp_name=str(exp), progress=False)
    latest = json.loads((exp / "ckpt" / "rank0" / "latest.json").read_text())["checkpoint"]
    (exp / "ckpt" / "rank0" / latest).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        train_scalezero(_smoke_configs(tmp_path), max_env_step=16, max_train_iter=2, exp_name=str(exp), resume=True,
                        progress=False)


def test_unknown_game_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Pongg"):
        build_configs("smoke", games=["Pongg"], exp_name=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "zoo.atari.config.scalezero_multitask_config", "--preset", "smoke",
                             "--games", "Pongg"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert "Pongg" in result.stderr and "Traceback" not in result.stderr


def test_mismatched_task_config_is_a_clear_error(tmp_path):
    configs = _smoke_configs(tmp_path)
    configs[1][0].policy.model.world_model_cfg.embed_dim = 64
    with pytest.raises(TaskConfigError, match="task 1 .*embed_dim"):
        train_scalezero(configs, max_env_step=8, max_train_iter=1, progress=False)
    configs = _smoke_configs(tmp_path)
    for main, _ in configs:
        main.policy.task_num = 3
    with pytest.raises(TaskConfigError, match="task_num=3 but 2"):
        train_scalezero(configs, max_env_step=8, max_train_iter=1, progress=False)


def test_diagnostics_reach_summary_and_tensorboard(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    configs = _smoke_configs(tmp_path)
    for main, _ in configs:
        main.policy.diagnostics_freq = 2  # steps 1, 3 (of 4) run the diagnostics
    train_scalezero(configs, max_env_step=SMOKE.max_env_step, max_train_iter=4, exp_name=str(tmp_path / "exp"),
                    progress=False)
    diag = json.loads((tmp_path / "exp" / "summary.json").read_text())["diagnostics"]
    assert diag["records"] == 2 and diag["train_iter"] == {"first": 1, "last": 3}
    assert diag["grad_cos_mean"]["n"] == 2 and -1.0 <= diag["grad_cos_mean"]["last"] <= 1.0
    assert 0.0 <= diag["grad_neg_frac"]["last"] <= 1.0
    assert 0.0 <= diag["dormant_ratio"]["last"] <= 1.0
    # latent-state norm: LayerNorm latents without affine scale have norm about sqrt(embed_dim)
    embed_dim = configs[0][0].policy.model.world_model_cfg.embed_dim
    assert diag["latent_norm"]["n"] == 2 and 0.2 * embed_dim ** 0.5 < diag["latent_norm"]["last"] < 5 * embed_dim ** 0.5
    assert diag["latent_norm/task0"]["n"] == 2 and diag["latent_norm/task1"]["n"] == 2
    # per-task entries land in that task's TensorBoard directory, the rest in the run's
    assert list((tmp_path / "exp" / "log" / "diagnostics" / "rank0").glob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    task_events = EventAccumulator(str(tmp_path / "exp" / "log" / "tasks" / "Breakout")).Reload()
    assert {"diag/grad_norm", "diag/expert_entropy", "diag/expert_max_share",
            "diag/latent_norm"} <= set(task_events.Tags()["scalars"])


def test_worker_chatter_filter_drops_lightzero_worker_info_only():
    import logging
    import os

    from lzero_ext.entry.run_logging import WorkerChatterFilter

    def record(path, level):
        return logging.LogRecord("evaluator_Pong_logger", level, path, 1, "msg", None, None)

    worker = os.path.join("site-packages", "lzero", "worker", "muzero_evaluator.py")
    ours = os.path.join("lzero_ext", "entry", "train_scalezero.py")
    keep = WorkerChatterFilter().filter
    assert not keep(record(worker, logging.INFO))
    assert keep(record(worker, logging.WARNING)) and keep(record(ours, logging.INFO))
