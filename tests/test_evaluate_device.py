"""``lzero_ext.evaluate --device``: cuda when available, else cpu; a clear error for a device that is not there."""
import pytest
import torch

import policies  # noqa: F401  (imported now: ding's CUDA timer, imported with it, would build CUDA events under the
# monkeypatched torch.cuda.is_available below)
from lzero_ext import evaluate


def test_default_device_is_cuda_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert evaluate.resolve_device(None) == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert evaluate.resolve_device(None) == "cpu"
    assert evaluate.resolve_device("cpu") == "cpu"


def test_unavailable_or_unknown_device_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(evaluate.EvaluateError, match="no CUDA device is visible"):
        evaluate.resolve_device("cuda:0")
    with pytest.raises(evaluate.EvaluateError, match="not a device"):
        evaluate.resolve_device("gpu")


def test_run_config_is_built_for_the_chosen_device(monkeypatch, tmp_path):
    """``load_run_policy`` puts the requested device into every task's policy and world-model config."""
    seen = {}

    def stop(exp_dir):
        cfgs = [evaluate.EasyDict(policy=evaluate.EasyDict(model=evaluate.EasyDict(world_model_cfg=evaluate.EasyDict())))]
        seen["cfgs"] = cfgs
        return cfgs

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(evaluate, "load_task_configs", stop)
    with pytest.raises(evaluate.EvaluateError, match="no such file"):  # stops at the checkpoint, after the config
        evaluate.load_run_policy(str(tmp_path), str(tmp_path / "missing.pth.tar"))
    policy = seen["cfgs"][0].policy
    assert (policy.device, policy.cuda, policy.model.world_model_cfg.device) == ("cuda", True, "cuda")


def test_cli_reports_a_missing_cuda_device(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device is visible"):
        evaluate.main(["--exp-name", str(tmp_path), "--device", "cuda"])
