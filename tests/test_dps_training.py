"""DPS in the training loop: a solved task stops, the stage advances, training goes on, resume keeps it all."""
import json

import torch

import lzero_ext  # noqa: F401
from lzero_ext.checkpoint import load_checkpoint
from lzero_ext.entry import train_scalezero
from zoo.atari.config.scalezero_multitask_config import PRESETS, build_configs

SMOKE = PRESETS["smoke"]
# Pong is solved at its first evaluation, Breakout never; stage 1 starts right after iteration 2.
DPS = dict(enabled=True, suite="atari", num_stages=3, min_stage0_iters=2, max_stage_iters=100, rank=4,
           targets={"Pong": -1e9, "Breakout": 1e9})


def _dps_configs(exp):
    configs = build_configs("smoke", exp_name=exp, cuda=False, dps=True)
    for main, _ in configs:
        main.policy.dps = dict(DPS)
        main.policy.diagnostics_freq = 0
        main.policy.update_per_collect = 2  # several collect rounds within a few iterations
    return configs


def _run(exp, max_train_iter, resume=False):
    return train_scalezero(_dps_configs(exp), max_env_step=SMOKE.max_env_step * 4, max_train_iter=max_train_iter,
                           exp_name=exp, checkpoint_freq=1000, resume=resume, progress=False)


def test_solved_task_stops_stage_advances_and_resume_keeps_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = str(tmp_path / "exp")
    first = _run(exp, max_train_iter=6)
    dps = first.summary["dps"]
    assert dps["solved"] == ["Pong"] and dps["unsolved"] == ["Breakout"]
    assert dps["stage"] == 1 and dps["switches"][0]["reason"] == "solved"
    steps = {row["name"]: row["env_steps"] for row in first.summary["tasks"]}
    assert steps["Pong"] < steps["Breakout"]  # Pong stopped collecting once solved
    # the final evaluation covers the solved task too, on the final model, at the env step where it stopped
    pong = next(row for row in first.summary["tasks"] if row["name"] == "Pong")
    assert pong["history"][-1][0] == steps["Pong"] > pong["history"][0][0] == 0
    assert dps["total_env_steps"] == first.summary["total_env_steps"] == sum(steps.values())
    assert "task1/loss_total" in first.last_learn_log and "task0/loss_total" not in first.last_learn_log
    before = load_checkpoint(tmp_path / "exp" / "ckpt" / "rank0")
    assert before["dps"]["stage"] == 1 and before["dps"]["solved"] == ["Pong"]

    second = _run(exp, max_train_iter=10, resume=True)
    assert second.train_iter == 10
    assert second.summary["dps"]["stage"] == 1 and second.summary["dps"]["solved"] == ["Pong"]
    resumed_steps = {row["name"]: row["env_steps"] for row in second.summary["tasks"]}
    assert resumed_steps["Pong"] == steps["Pong"] and resumed_steps["Breakout"] > steps["Breakout"]

    old, new = before["policy"]["model"], load_checkpoint(tmp_path / "exp" / "ckpt" / "rank0")["policy"]["model"]
    base = [k for k in old if ".transformer." in k and "lora_" not in k and k.endswith("weight")]
    assert base and all(torch.equal(old[k], new[k]) for k in base)  # the backbone stays frozen in stage 1
    adapter = [k for k in old if k.endswith("lora_B.0")]
    assert adapter and any(not torch.equal(old[k], new[k]) for k in adapter)  # adapter 1 trains
    later_adapter = [k for k in old if k.endswith("lora_B.1")]
    assert all(torch.equal(new[k], torch.zeros_like(new[k])) for k in later_adapter)  # adapter 2 not yet
    heads = [k for k in old if "head_value" in k and k.endswith("weight")]
    assert any(not torch.equal(old[k], new[k]) for k in heads)  # heads keep training
    summary = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert summary["dps"]["targets"] == {"Pong": -1e9, "Breakout": 1e9}
