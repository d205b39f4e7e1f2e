"""MinAtar's minimal action sets as masks over the shared 6 actions, with lightzero's 'varied_action_space':
the search only ever picks a legal action, and the replay buffer's policy targets put no mass on illegal ones."""
import numpy as np

import lzero_ext  # noqa: F401  (registers envs, models)
import policies  # noqa: F401  (registers policies)
from lzero_ext.entry.train_scalezero import MultiTaskTrainer
from lzero_ext.entry.multitask_sampling import sample_tasks
from zoo.minatar.config.scalezero_minatar_multitask_config import build_configs

GAMES = ("Breakout", "Freeway")  # 3 of 6 actions legal each


def test_minimal_action_sets_keep_search_and_policy_targets_on_legal_actions(tmp_path):
    # the preset's option (--set minimal_action_set=True), with epsilon-greedy collection drawing random actions too
    configs = build_configs("smoke", games=list(GAMES), exp_name=str(tmp_path), cuda=False,
                            overrides=dict(minimal_action_set=True, collect_epsilon_decay=1000))
    for main, _ in configs:
        assert main.env.minimal_action_set and main.policy.eps.eps_greedy_exploration_in_collect
        # lightzero maps legal-action visit counts back to all 6 actions
        assert main.policy.action_type == "varied_action_space"
    trainer = MultiTaskTrainer(configs, seed=0, exp_name=str(tmp_path), score_kind="raw", max_env_step=10 ** 6,
                               max_train_iter=10 ** 6, checkpoint_freq=10 ** 6, save_replay_buffer=False, progress=False)
    try:
        while not all(task.has_enough_data() for task in trainer.tasks):
            trainer.collect()
        for task in trainer.tasks:
            segments = task.buffer.game_segment_buffer
            masks = np.concatenate([np.asarray(s.action_mask_segment) for s in segments])
            legal = np.flatnonzero(masks[0])
            assert len(legal) == 3 and (masks == masks[0]).all()
            actions = np.concatenate([np.asarray(s.action_segment) for s in segments])
            assert set(actions.tolist()) <= set(legal.tolist()), (task.name, set(actions.tolist()), legal)
        for task_id, current, target in sample_tasks(trainer.tasks, trainer.policy):
            target_policy = np.asarray(target[2])  # lightzero's [rewards, values, policies]
            illegal = np.setdiff1d(np.arange(6), legal_of(trainer, task_id))
            assert target_policy.shape[-1] == 6
            assert np.abs(target_policy[..., illegal]).max() == 0, trainer.tasks[task_id].name
            assert np.allclose(target_policy.sum(-1)[target_policy.sum(-1) > 0], 1.0, atol=1e-5)
    finally:
        trainer.close()


def legal_of(trainer: MultiTaskTrainer, task_id: int) -> np.ndarray:
    segment = trainer.tasks[task_id].buffer.game_segment_buffer[0]
    return np.flatnonzero(np.asarray(segment.action_mask_segment[0]))
