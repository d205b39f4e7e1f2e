"""Sampling every task's learner batch with one target-model forward gives the batches of task-by-task sampling."""
import numpy as np
import pytest
import torch

from lzero_ext.entry.multitask_sampling import sample_tasks
from lzero_ext.entry.train_scalezero import MultiTaskTrainer
from zoo.dmc.config.scalezero_dmc_multitask_config import build_configs as dmc_configs
from zoo.minatar.config.scalezero_minatar_multitask_config import build_configs as minatar_configs


def _trainer(configs, tmp_path):
    trainer = MultiTaskTrainer(configs, seed=0, exp_name=str(tmp_path / "exp"), score_kind="raw", max_env_step=10_000,
                               max_train_iter=10, checkpoint_freq=100, save_replay_buffer=False, progress=False)
    with torch.no_grad():  # zero-initialised heads would give every position the same bootstrap value
        for param in trainer.policy._target_model.parameters():
            if param.dim() >= 2:
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(param.numel())) * 0.2)
    while not all(task.has_enough_data() for task in trainer.tasks):
        trainer.collect()
    return trainer


def _assert_same(got, want) -> None:
    if isinstance(want, (list, tuple)):
        assert len(got) == len(want)
        for a, b in zip(got, want):
            _assert_same(a, b)
    elif isinstance(want, (np.ndarray, torch.Tensor)) or np.isscalar(want):
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("suite", ["minatar", "dmc"])
def test_one_target_forward_gives_task_by_task_batches(suite, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if suite == "minatar":
        configs = minatar_configs("smoke", games=["Breakout", "Asterix"], exp_name=str(tmp_path / "exp"), cuda=False)
    else:
        configs = dmc_configs("smoke", exp_name=str(tmp_path / "exp"), cuda=False)
    trainer = _trainer(configs, tmp_path)
    try:
        np.random.seed(11)
        want = [task.sample(trainer.policy) for task in trainer.tasks]
        np.random.seed(11)
        got = sample_tasks(trainer.tasks, trainer.policy)
        assert [t for t, _, _ in got] == [t for t, _, _ in want]
        for (_, current, target), (_, want_current, want_target) in zip(got, want):
            _assert_same(current, want_current)
            _assert_same(target, want_target)
            values = np.asarray(target[1])
            assert values.std() > 0  # bootstrap values vary: the comparison is not of constants
    finally:
        trainer.close()
