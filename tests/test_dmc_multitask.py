"""DMC multi-task with ``sampled_scalezero``: the smoke preset end to end, the presets, and bad input."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lzero_ext  # noqa: F401
from lzero_ext.entry import train_scalezero
from zoo.dmc.config.scalezero_dmc_multitask_config import DMC18_TASKS, PRESETS, build_configs

SMOKE = PRESETS["smoke"]


def _params(policy):
    return {k: v.detach().clone() for k, v in policy._learn_model.state_dict().items()}


@pytest.fixture
def smoke_threads():
    """The smoke preset's thread count (its CLI sets it): much faster for tiny models on a busy CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(SMOKE.torch_threads)
    yield
    torch.set_num_threads(previous)


def test_smoke_preset_end_to_end(tmp_path, monkeypatch, smoke_threads):
    """Two tasks of different obs (5, 17) and action (1, 6) sizes: collect with sampled MCTS, learn, evaluate."""
    monkeypatch.chdir(tmp_path)
    configs = build_configs("smoke", exp_name=str(tmp_path / "exp"), cuda=False)
    assert [c.policy.model.observation_shape for c, _ in configs] == [5, 17]
    assert [c.policy.model.action_space_size for c, _ in configs] == [1, 6]
    result = train_scalezero(configs, max_env_step=SMOKE.max_env_step, max_train_iter=3, exp_name=str(tmp_path / "exp"),
                             score_kind="dmc", checkpoint_freq=100, progress=False)

    summary = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert summary["score_name"] == "return/1000"
    assert [row["name"] for row in summary["tasks"]] == ["cartpole-swingup", "cheetah-run"]
    for row in summary["tasks"]:
        assert row["env_steps"] > 0 and math.isfinite(row["eval_return"]) and math.isfinite(row["normalized"])
        assert row["normalized"] == pytest.approx(row["eval_return"] / 1000)
    assert math.isfinite(summary["mean"]) and math.isfinite(summary["median"])
    assert result.train_iter == 3

    log = result.last_learn_log
    assert log["num_task_batches"] == 2 and math.isfinite(log["weighted_total_loss"])
    for task_id in (0, 1):
        for name in ("loss_total", "loss_policy", "loss_value", "loss_rewards", "loss_obs"):
            assert math.isfinite(log[f"task{task_id}/{name}"]), name

    # The model moved away from its initialisation, including both tasks' own encoder, action embedding and head.
    from ding.policy import create_policy
    from lzero_ext.entry.configs import compile_task_configs

    fresh_cfg = compile_task_configs(configs, seed=0, exp_name=str(tmp_path / "fresh"), save_cfg=False)[0]
    torch.manual_seed(0)
    fresh = _params(create_policy(fresh_cfg.policy, enable_field=["learn"]))
    trained = _params(result.policy)
    changed = {k for k, v in fresh.items() if k in trained and v.shape == trained[k].shape and not torch.equal(v, trained[k])}
    assert len(changed) > len(trained) // 2
    for task_id in (0, 1):
        for part in ("encoder.body.per_task", "act_embedding_table.per_task", "head_policy.per_task"):
            assert any(f"{part}.{task_id}." in k for k in changed), f"task {task_id}: {part} did not train"


def test_presets():
    dmc18 = build_configs("dmc18", exp_name="unused", cuda=False)
    assert [c.env.env_id for c, _ in dmc18] == list(DMC18_TASKS) and len(dmc18) == 18
    main, create = dmc18[12]  # pendulum-swingup
    assert main.env.env_id == "pendulum-swingup" and main.env.action_repeat == 8 and dmc18[0][0].env.action_repeat == 4
    policy, wm = main.policy, main.policy.model.world_model_cfg
    assert create.policy.type == "sampled_scalezero" and create.env.type == "dmc_scalezero"
    assert (policy.num_unroll_steps, wm.context_length, policy.model.num_of_sampled_actions) == (5, 4, 20)
    assert (policy.td_steps, policy.discount_factor, policy.grad_clip_value) == (5, 0.99, 5)
    assert (wm.policy_loss_type, wm.policy_entropy_weight, policy.replay_buffer_size) == ("kl", 5e-2, 1_000_000)
    assert wm.observation_shape_list[12] == 3 and wm.action_space_size_list[5] == 6  # pendulum 3, cheetah 6
    cpu = build_configs("cpu", exp_name="unused", cuda=False)
    sizes = {(c.policy.model.observation_shape, c.policy.model.action_space_size) for c, _ in cpu}
    assert len(cpu) >= 3 and len(sizes) == len(cpu)  # different obs and action sizes


def test_unknown_task_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'cartpole'"):
        build_configs("smoke", tasks=["cartpol-swingup"], exp_name=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "zoo.dmc.config.scalezero_dmc_multitask_config", "--preset", "smoke",
                             "--tasks", "cartpole-swingup", "walker-wlak"], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120)
    assert result.returncode != 0
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "walker-walk" in error_lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_dps_flag_wraps_the_sampled_model_with_dmc_settings(tmp_path):
    from ding.policy import create_policy

    from lzero_ext.dps import StagedLoRALinear, controller_from_config
    from lzero_ext.entry.configs import compile_task_configs

    configs = build_configs("smoke", exp_name=str(tmp_path / "exp"), cuda=False, dps=True)
    cfg = compile_task_configs(configs, seed=0, exp_name=str(tmp_path / "exp"), save_cfg=False)[0].policy
    assert cfg.dps.enabled and cfg.dps.suite == "dmc"
    policy = create_policy(cfg, enable_field=["learn"])
    layers = [m for m in policy._model.modules() if isinstance(m, StagedLoRALinear)]
    assert layers and all(isinstance(layer.lora_dropout, torch.nn.Identity) and layer.scaling == 1.0 / 64
                          for layer in layers)  # DMC: dropout 0, alpha 1, r 64
    controller = controller_from_config(cfg.dps, list(SMOKE.tasks))
    assert controller.targets == {"cartpole-swingup": 750.0, "cheetah-run": 550.0}
    assert controller.min_stage0_iters == SMOKE.dps_min_stage0_iters
