"""One model over several domains end to end: Atari, DMC, MinAtar (and Jericho where its game files are) in one
run of the multidomain zoo config, its resume, and the one-line errors for task lists it cannot serve."""
import json
import math
import subprocess
import sys

import pytest

import lzero_ext  # noqa: F401
from lzero_ext.checkpoint import load_checkpoint
from lzero_ext.entry import train_scalezero
from tests.zoo_snapshot import jericho_available
from zoo.multidomain.config.scalezero_multidomain_config import build_configs, parse_task

TASKS = ["atari:Pong", "dmc:cartpole-swingup", "minatar:Breakout"] + ["jericho:detective"] * jericho_available()
DOMAINS = [parse_task(t)[0] for t in TASKS]
BUDGET = 24  # env steps per task: about two collection rounds of the smoke preset


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    exp = tmp_path_factory.mktemp("multidomain") / "exp"
    configs = build_configs("smoke", tasks=TASKS, exp_name=str(exp), cuda=False)
    result = train_scalezero(configs, max_env_step=BUDGET, exp_name=str(exp), checkpoint_freq=2,
                             progress=False)
    return exp, result


def test_a_mixed_domain_run_trains_every_task_and_summarises_by_domain(mixed_run):
    exp, result = mixed_run
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["kind"] == "domains" and list(summary["domains"]) == DOMAINS
    assert [row["domain"] for row in summary["tasks"]] == DOMAINS
    for row in summary["tasks"]:
        assert row["env_steps"] >= BUDGET and row["updates"] > 0, row
        assert math.isfinite(row["eval_return"]) and math.isfinite(row["normalized"]), row
    assert summary["domains"]["atari"]["score_name"] == "HNS" and summary["domains"]["dmc"]["score_name"] == "return/1000"
    log = result.last_learn_log  # every task's own loss, from one learn step
    for task_id in range(len(TASKS)):
        assert math.isfinite(log[f"task{task_id}/loss_total"]) and log[f"task{task_id}/loss_total"] > 0
    conflict = summary["domain_diagnostics"]["grad_cos"]  # one task per domain: between-domain pairs only
    assert conflict["between"]["samples"] > 0 and -1 <= conflict["between"]["mean_cosine"] <= 1
    assert len(conflict["matrix"]) == len(DOMAINS)
    specialisation = summary["domain_diagnostics"]["expert_usage"]["specialisation"]["mean"]
    assert 0 <= specialisation <= 1 and (exp / summary["files"]["domain_diagnostics"]).stat().st_size > 1000
    world_model = result.policy._model.world_model
    assert world_model.action_kinds == ["discrete", "continuous"] + ["discrete"] * (len(TASKS) - 2)
    assert world_model.observation_layout.obs_types == ("image", "vector", "image") + ("text",) * jericho_available()


def test_a_resumed_mixed_run_continues_every_tasks_counters(mixed_run, tmp_path):
    exp, first = mixed_run
    before = load_checkpoint(exp / "ckpt" / "rank0")
    configs = build_configs("smoke", tasks=TASKS, exp_name=str(exp), cuda=False)
    second = train_scalezero(configs, max_env_step=2 * BUDGET, exp_name=str(exp),
                             resume=True, checkpoint_freq=2, progress=False)
    after = load_checkpoint(exp / "ckpt" / "rank0")
    assert second.train_iter > first.train_iter
    for task_id in before["tasks"]:
        assert after["tasks"][task_id]["env_steps"] > before["tasks"][task_id]["env_steps"] >= BUDGET
        assert after["tasks"][task_id]["updates"] > before["tasks"][task_id]["updates"]
        assert after["tasks"][task_id]["eval_history"][:len(before["tasks"][task_id]["eval_history"])] == \
            before["tasks"][task_id]["eval_history"]


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "atari:Pong", "chess:kasparov"], "task 'chess:kasparov': write <domain>:<name>"),
    (["--tasks", "atari:Pongg"], "Pongg"),
])
def test_a_task_list_the_engine_cannot_serve_is_one_line(argv, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "zoo.multidomain.config.scalezero_multidomain_config", "--preset",
                             "smoke", "--exp-name", str(tmp_path / "exp"), *argv],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1], result.stderr[-1500:]


def test_atari_and_minatar_games_of_one_name_are_two_tasks():
    configs = build_configs("smoke", tasks=["atari:Breakout", "minatar:Breakout"], exp_name="runs/x", cuda=False)
    assert [main.env.env_id for main, _ in configs] == ["Breakout", "MinAtar/Breakout-v1"]
    assert configs[0][0].policy.model.action_space_size == configs[1][0].policy.model.action_space_size == 18
    assert configs[1][0].env.action_space_size == 18 and configs[1][0].policy.action_type == "varied_action_space"


def test_a_mixed_run_is_evaluated_per_domain_and_fine_tuned_from(mixed_run, tmp_path):
    """``lzero_ext.evaluate`` plays every task through both search trees (a DMC task included), with each domain's
    score; a new run starts from the mixed run's checkpoint (LoRA fine-tuning) and trains."""
    from lzero_ext.entry.finetune import FinetuneSpec
    from lzero_ext.evaluate import evaluate_run

    exp, _ = mixed_run
    results = evaluate_run(str(exp), episodes=1, device="cpu")
    assert [r.name for r in results][:3] == ["Pong", "cartpole-swingup", "MinAtar-Breakout-v1"]
    assert all(len(r.returns) == 1 and math.isfinite(r.mean) for r in results)
    assert [r.kind for r in results] == ["atari", "dmc", "raw"] + ["raw"] * jericho_available()
    target = tmp_path / "finetuned"
    configs = build_configs("smoke", tasks=TASKS, exp_name=str(target), cuda=False)
    tuned = train_scalezero(configs, max_env_step=12, max_train_iter=2, exp_name=str(target), progress=False,
                            initial_eval=False, init_from=FinetuneSpec(str(exp), mode="lora"))
    assert tuned.train_iter == 2 and all(math.isfinite(v) for k, v in tuned.last_learn_log.items()
                                         if k.endswith("/loss_total"))


def test_dps_targets_come_from_each_domains_table_and_the_command_line():
    configs = build_configs("smoke", tasks=["atari:Pong", "minatar:Breakout"], exp_name="runs/x", cuda=False,
                            dps_targets={"Pong": 3.0})
    targets = configs[0][0].policy.dps.targets
    assert targets["Pong"] == 3.0 and targets["MinAtar-Breakout-v1"] == 2.0  # the command line's over MinAtar's table
    with pytest.raises(ValueError, match=r"no DPS target return for task\(s\) \['fish-swim'\].*--dps-target NAME=SCORE"):
        build_configs("smoke", tasks=["atari:Pong", "dmc:fish-swim"], exp_name="runs/x", cuda=False, dps=True)
