"""Swapping ScaleZero into lightzero's own UniZero CartPole pipeline by changing only the policy type."""
import copy
import importlib.util
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lzero_ext  # noqa: F401
from lzero_ext.entry import train_scalezero


def test_lightzero_cartpole_unizero_config_trains_with_scalezero(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from zoo.classic_control.cartpole.config.cartpole_unizero_config import create_config, main_config

    cfg, create = copy.deepcopy(main_config), copy.deepcopy(create_config)
    create.policy.type = "scalezero"  # the swap: these two keys only
    create.policy.import_names = ["policies.scalezero"]
    # a tiny budget (not part of the swap)
    cfg.env.update(collector_env_num=2, evaluator_env_num=1, n_evaluator_episode=1)
    cfg.policy.update(collector_env_num=2, evaluator_env_num=1, num_segments=2, cuda=False, num_simulations=5,
                      batch_size=16, eval_freq=1000)
    cfg.policy.model.world_model_cfg.update(env_num=2, collector_env_num=2, evaluator_env_num=1)
    create.env_manager.type = "base"

    result = train_scalezero([(cfg, create)], max_env_step=300, max_train_iter=4, exp_name="swap", progress=False)
    assert result.train_iter == 4
    assert type(result.policy).__name__ == "ScaleZeroPolicy"
    assert type(result.policy._model._orig_mod if hasattr(result.policy._model, "_orig_mod") else result.policy._model).__name__ == "ScaleZeroModel"
    assert math.isfinite(result.last_learn_log["task0/loss_total"])
    (row,) = result.summary["tasks"]
    assert row["name"] == "CartPole-v0" and row["eval_return"] >= 1


def _tiny_swapped_cartpole():
    from zoo.classic_control.cartpole.config.cartpole_unizero_config import create_config, main_config

    cfg, create = copy.deepcopy(main_config), copy.deepcopy(create_config)
    create.policy.type = "scalezero"
    create.policy.import_names = ["policies.scalezero"]
    cfg.env.update(collector_env_num=1, evaluator_env_num=1, n_evaluator_episode=1)
    cfg.policy.update(collector_env_num=1, evaluator_env_num=1, num_segments=1, cuda=False, num_simulations=3,
                      batch_size=8, eval_freq=1000)
    cfg.policy.model.world_model_cfg.update(env_num=1, collector_env_num=1, evaluator_env_num=1)
    create.env_manager.type = "base"
    return cfg, create


def test_lightzero_train_unizero_still_rejects_other_policy_types(tmp_path, monkeypatch):
    """The blocker documented in docs/policy_swap.md: if lightzero drops its assert, this fails and the docs change."""
    monkeypatch.chdir(tmp_path)
    from lzero.entry import train_unizero as lightzero_train_unizero

    with pytest.raises(AssertionError, match="only supports"):
        lightzero_train_unizero(list(_tiny_swapped_cartpole()), max_train_iter=1)


def test_drop_in_train_unizero_runs_the_swapped_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from lzero_ext.entry import train_unizero

    policy = train_unizero(list(_tiny_swapped_cartpole()), seed=0, max_env_step=200, max_train_iter=2)
    assert type(policy).__name__ == "ScaleZeroPolicy"
    cfg, create = _tiny_swapped_cartpole()
    create.policy.type = "muzero"
    with pytest.raises(ValueError, match="runs policy types"):
        train_unizero([cfg, create])


UPSTREAM_PATCH = Path(__file__).resolve().parents[1] / "docs" / "upstream" / "lightzero-train_unizero.patch"


def _patched_lightzero_entry(tmp_path: Path):
    """lightzero 0.2.0's installed ``train_unizero.py`` with docs/upstream's patch applied, loaded as a module
    of the ``lzero.entry`` package (its relative imports resolve against the installed lightzero)."""
    import lzero.entry

    if shutil.which("git") is None:
        pytest.skip("git is needed to apply the patch")
    tree = tmp_path / "lightzero"
    (tree / "lzero" / "entry").mkdir(parents=True)
    shutil.copy(Path(lzero.entry.__file__).parent / "train_unizero.py", tree / "lzero" / "entry")
    applied = subprocess.run(["git", "apply", str(UPSTREAM_PATCH)], cwd=tree, capture_output=True, text=True)
    assert applied.returncode == 0, f"the upstream patch no longer applies to lightzero's file: {applied.stderr}"
    spec = importlib.util.spec_from_file_location("lzero.entry._train_unizero_upstream_patched",
                                                  tree / "lzero" / "entry" / "train_unizero.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_upstream_patch_lets_lightzero_train_unizero_run_the_two_key_swap(tmp_path, monkeypatch):
    """The proposed upstream change (docs/upstream/): lightzero's own entry then trains the swapped config,
    and still refuses a policy that is not a UniZero subclass, with a clear error."""
    entry = _patched_lightzero_entry(tmp_path)
    monkeypatch.chdir(tmp_path)
    policy = entry.train_unizero(list(_tiny_swapped_cartpole()), seed=0, max_env_step=200, max_train_iter=2)
    assert type(policy).__name__ == "ScaleZeroPolicy"
    model = getattr(policy._model, "_orig_mod", policy._model)
    assert type(model).__name__ == "ScaleZeroModel"

    from lzero.mcts import SampledUniZeroGameBuffer, UniZeroGameBuffer

    cfg, create = _tiny_swapped_cartpole()
    assert entry.unizero_game_buffer_class(create.policy) is UniZeroGameBuffer
    create.policy.update(type="sampled_scalezero")
    assert entry.unizero_game_buffer_class(create.policy) is SampledUniZeroGameBuffer
    create.policy.update(type="muzero", import_names=["lzero.policy.muzero"])
    with pytest.raises(TypeError, match="UniZeroPolicy or SampledUniZeroPolicy subclass.*'muzero'"):
        entry.unizero_game_buffer_class(create.policy)
