"""One task collected by the batched engine gives the game segments lightzero's own collection gives.

Both sides run lightzero's segment collector on the same real MinAtar envs and the same model weights, from
the same env and numpy seeds (root noise and action sampling draw from numpy in the same order):

* lightzero's path: the policy's own ``collect_mode`` (lightzero's UniZero ``_forward_collect`` with its KV
  caches and ``UniZeroMCTSCtree``), what lightzero's own entries use;
* ours: the task-bound ``task_collect_mode``, the collector a coroutine of the lockstep loop, each step one
  ``policies.batched_act.act`` on the batched KV cache.

Observations, actions, rewards, root values and visit distributions of every segment must be equal.

lightzero's C++ tree breaks ties (every unvisited child of a node visited once ties) with ``rand()`` seeded
from ``gettimeofday``'s microseconds at every traversal, so not even two runs of lightzero's own path agree.
The comparison therefore runs in a subprocess whose ``gettimeofday`` is a constant (a one-line C shim,
``LD_PRELOAD``): every traversal then draws the same tie-breaks, on both paths.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lzero_ext.entry.train_scalezero import MultiTaskTrainer
from zoo.minatar.config.scalezero_minatar_multitask_config import build_configs

SEED = 3


@pytest.fixture
def trainer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    configs = build_configs("smoke", games=["Breakout"], exp_name=str(tmp_path / "exp"), cuda=False)
    main = configs[0][0]
    main.env.collector_env_num = main.policy.collector_env_num = main.policy.num_segments = 2
    main.policy.model.world_model_cfg.collector_env_num = main.policy.model.world_model_cfg.env_num = 2
    main.policy.num_simulations = main.policy.model.world_model_cfg.num_simulations = 6
    trainer = MultiTaskTrainer(configs, seed=0, exp_name=str(tmp_path / "exp"), score_kind="raw", max_env_step=10_000,
                               max_train_iter=10, checkpoint_freq=100, save_replay_buffer=False, progress=False)
    with torch.no_grad():  # lightzero zero-inits the last head layers: random heads make the searches differ
        for param in trainer.policy._model.parameters():
            if param.dim() >= 2:
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(param.numel())) * 0.3)
    yield trainer
    trainer.close()


def _collect(trainer, lightzero: bool):
    policy, task = trainer.policy, trainer.tasks[0]
    task.collector.reset_policy(policy.collect_mode if lightzero else policy.task_collect_mode(0))
    policy.__dict__.pop("_task_states", None)  # every episode starts from an empty context
    policy.recompute_pos_emb_diff_and_clear_cache()
    env = task.collector._env
    env.seed(SEED, dynamic_seed=False)
    env.reset()
    task.collector._policy.reset()
    np.random.seed(SEED)
    job = lambda: task.collector.collect(train_iter=0, policy_kwargs={"temperature": 0.25, "epsilon": 0.0})
    segments, _ = job() if lightzero else policy.run_workers("collect", {0: job})[0]
    return segments


FIXED_CLOCK_C = "#include <sys/time.h>\nint gettimeofday(struct timeval *tv, void *tz) { tv->tv_sec = 1; tv->tv_usec = 7; return 0; }\n"
INNER = "SCALEZERO_TEST_FIXED_CLOCK"  # set in the subprocess only


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler for the fixed-clock shim")
def test_batched_engine_collects_lightzeros_segments_for_one_task(tmp_path):
    if os.environ.get(INNER):
        pytest.skip("the subprocess runs the comparison itself")
    source, shim = tmp_path / "fixed_clock.c", tmp_path / "fixed_clock.so"
    source.write_text(FIXED_CLOCK_C)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(shim), str(source)], check=True)
    env = dict(os.environ, LD_PRELOAD=str(shim), **{INNER: "1"})
    result = subprocess.run([sys.executable, "-m", "pytest", f"{__file__}::test_segments_under_a_fixed_clock",
                             "-o", "addopts=", "-p", "no:cacheprovider", "-p", "no:logging"], env=env, capture_output=True, text=True,
                            cwd=Path(__file__).parent.parent, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout


@pytest.mark.skipif(not os.environ.get(INNER), reason="run by the test above, under the fixed-clock shim")
def test_segments_under_a_fixed_clock(trainer):
    theirs = _collect(trainer, lightzero=True)
    assert [list(s.action_segment) for s in theirs] == [list(s.action_segment) for s in _collect(trainer, lightzero=True)]
    ours = _collect(trainer, lightzero=False)
    assert len(ours) == len(theirs) >= 2
    for mine, want in zip(ours, theirs):
        assert len(mine.action_segment) == len(want.action_segment) > 0
        assert list(mine.action_segment) == list(want.action_segment)
        np.testing.assert_array_equal(np.asarray(mine.obs_segment), np.asarray(want.obs_segment))
        np.testing.assert_array_equal(np.asarray(mine.reward_segment), np.asarray(want.reward_segment))
        assert [list(v) for v in mine.child_visit_segment] == [list(v) for v in want.child_visit_segment]
        np.testing.assert_allclose(np.asarray(mine.root_value_segment), np.asarray(want.root_value_segment), rtol=1e-5,
                                   atol=1e-4)
