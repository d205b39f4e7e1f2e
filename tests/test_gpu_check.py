"""The one-shot GPU check's pieces that run without a GPU, and its CPU dry run (lzero_ext/gpu_check.py)."""
import importlib
import sys

import pytest
import torch

from lzero_ext import gpu_check


def test_missing_compiled_trees_get_stand_ins_that_fail_clearly(monkeypatch):
    real_import = importlib.import_module

    def no_trees(name, *args):
        if name in gpu_check.COMPILED_TREES:
            raise ImportError(f"{name}: cpython-311 extension")
        return real_import(name, *args)

    for name in gpu_check.COMPILED_TREES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(importlib, "import_module", no_trees)
    message = gpu_check.ensure_lightzero_importable()
    assert "do not load" in message and "not exercised" in message
    stand_in = sys.modules[gpu_check.COMPILED_TREES[0]]
    with pytest.raises(RuntimeError, match="do not load on this Python"):
        stand_in.Roots(1, [])
    monkeypatch.setattr(importlib, "import_module", real_import)
    for name in gpu_check.COMPILED_TREES:  # the real trees again for the rest of the session
        sys.modules.pop(name, None)
    assert gpu_check.ensure_lightzero_importable() == "lightzero's compiled MCTS trees load"


def test_dmc_smoke_model_runs_inference_and_a_finite_learn_step_on_cpu():
    result = gpu_check.check_domain("dmc", torch.device("cpu"), text_model_dir=None, small=True)
    assert result.startswith("SampledScaleZeroModel") and "losses" in result


def test_cpu_dry_run_runs_every_step_of_the_check(tmp_path):
    """``--cpu-dry-run``: the smoke pipeline per domain, the forced (device-strict) collectives and every timing,
    on the CPU at tiny sizes; the table has every row and none failed."""
    import os
    import subprocess

    from lzero_ext.envs.jericho_env import game_dir

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "disabled"}
    result = subprocess.run([sys.executable, "-m", "lzero_ext.gpu_check", "--cpu-dry-run", "--jericho-dir", str(game_dir())],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    table = result.stdout[result.stdout.rindex("\nenvironment "):]
    rows = {line.split("  ")[0]: line for line in table.strip().splitlines()}
    expected = ["environment", "lightzero MCTS trees", "atari smoke end to end on cpu", "dmc smoke end to end on cpu",
                "collectives forced at world size 1 (gloo)", "atari8 learn step, fp32", "atari8 learn step, bf16",
                "atari8 learn step, bf16 + compile", "atari8 inference step, fp32", "atari8 inference step, bf16 + compile",
                "search, 2 simulations x 4 roots", "collection (2 tasks)"]
    assert all(name in rows for name in expected), table
    assert "jericho smoke end to end on cpu" in rows or "jericho smoke model + learn step on cpu" in rows, table
    assert "device-strict" in rows["collectives forced at world size 1 (gloo)"]
    assert "graphs compiled after warm-up: 0" in rows["atari8 learn step, bf16 + compile"]
    assert "graphs compiled after warm-up: 0" in rows["atari8 inference step, bf16 + compile"]
    assert "FAILED" not in table and result.returncode == 0, table + result.stdout[-3000:] + result.stderr[-3000:]
