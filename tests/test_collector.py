"""``MaskAwareSegmentCollector``: action masks follow the current observation, and padded segments keep
their masks aligned with their MCTS visit counts (two lightzero 0.2.0 bugs with varied action spaces)."""
from types import SimpleNamespace

import gym
import numpy as np
from easydict import EasyDict

import lzero_ext  # noqa: F401
from lzero.mcts.buffer.game_segment import GameSegment
from lzero_ext.collector import MaskAwareSegmentCollector
from policies.scalezero import ScaleZeroPolicy

ACTIONS = 5


def _policy_config(unroll: int = 2, td: int = 2) -> EasyDict:
    cfg = ScaleZeroPolicy.default_config()
    cfg.num_unroll_steps, cfg.td_steps = unroll, td
    cfg.model.observation_shape, cfg.model.action_space_size, cfg.model.frame_stack_num = 3, ACTIONS, 1
    return cfg


def _bare_collector(**attrs) -> MaskAwareSegmentCollector:
    """The collector without lightzero's constructor (which needs envs and a policy): only what is tested."""
    collector = object.__new__(MaskAwareSegmentCollector)
    collector.__dict__.update(attrs)
    return collector


def _segment(cfg: EasyDict, legal_counts) -> GameSegment:
    """A segment whose step t offers ``legal_counts[t]`` actions; its visit counts have one entry per legal action."""
    segment = GameSegment(gym.spaces.Discrete(ACTIONS), game_segment_length=len(legal_counts), config=cfg)
    segment.reset([np.zeros(3)])
    for t, n in enumerate(legal_counts):
        mask = np.array([1] * n + [0] * (ACTIONS - n), dtype=np.int8)
        segment.store_search_stats([1.0 / n] * n, 0.0)
        segment.append(0, np.full(3, t + 1.0), 0.0, mask, -1, timestep=t)
    return segment


def test_masks_follow_the_ready_observations():
    obs = {0: {"action_mask": np.array([1, 0, 0]), "to_play": -1, "timestep": 3}}
    collector = _bare_collector(_env=SimpleNamespace(ready_obs=obs))
    collector.action_mask_dict = {0: None}  # lightzero's assignments are ignored
    assert collector.action_mask_dict[0].tolist() == [1, 0, 0] and collector.timestep_dict[0] == 3
    obs[0] = {"action_mask": np.array([1, 1, 1]), "to_play": -1, "timestep": 4}  # the env stepped
    assert collector.action_mask_dict[0].tolist() == [1, 1, 1] and collector.timestep_dict[0] == 4
    assert collector.to_play_dict[0] == -1


def test_padding_keeps_masks_aligned_with_visit_counts():
    cfg = _policy_config()
    last, following = _segment(cfg, [2, 3, 4]), _segment(cfg, [1, 5, 2, 3])
    collector = _bare_collector(policy_config=cfg, unroll_plus_td_steps=cfg.num_unroll_steps + cfg.td_steps,
                                game_segment_pool=[])
    collector.pad_and_save_last_trajectory(0, [last], [None], [following], np.array([False]))
    (saved, _, _), = collector.game_segment_pool
    assert len(saved.child_visit_segment) == len(saved.action_mask_segment) == 3 + 4
    for visits, mask in zip(saved.child_visit_segment, saved.action_mask_segment):
        assert len(visits) == int(np.sum(mask))  # one visit count per legal action, also in the padding
    assert len(saved.to_play_segment) == 7
