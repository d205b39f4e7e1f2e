"""The one-shot GPU check's pieces that run without a GPU (lzero_ext/gpu_check.py)."""
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
