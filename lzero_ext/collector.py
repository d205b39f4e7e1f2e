"""lightzero's segment collector, fixed for action masks that change from step to step (Jericho).

Two bugs of lightzero 0.2.0's ``MuZeroSegmentCollector`` that go unnoticed with Atari's all-ones
masks but break any env whose legal actions vary (``policy.action_type='varied_action_space'``):

1. **Stale masks.** ``collect()`` fills ``action_mask_dict``, ``to_play_dict`` and ``timestep_dict``
   from the observations at its start only. Every step it copies them into ``*_tmp`` dicts, writes
   the new observation's values into those copies, and throws the copies away at the next step.
   The policy keeps acting with the first observation's mask (and timestep) for the whole round,
   after episode resets too, so it picks actions the current state does not have.
2. **Unpadded masks.** When a segment is full, its actions and MCTS visit counts are padded with
   the next segment's first ``num_unroll_steps + td_steps`` steps (targets near the segment end
   need them), but its action masks and to-play ids are not. The replay buffer then pairs those
   padded visit counts (one entry per legal action of that step) with all-ones masks, and the
   policy targets are wrong or raise ``IndexError``.

``MaskAwareSegmentCollector`` reads the three dicts from the env manager's current observations
whenever the collector looks them up, and pads masks and to-play ids like the visit counts.
It is also a :class:`lzero_ext.workers.UniZeroFamilySegmentCollector`, so the per-step cache call that
lightzero makes for ``unizero`` reaches ScaleZero policies too. Everything else is lightzero's collector.
"""
from typing import Any, Dict, List

import numpy as np
from ding.torch_utils import to_ndarray
from lzero.mcts.buffer.game_segment import GameSegment
from lzero.worker import MuZeroSegmentCollector

from lzero_ext.workers import UniZeroFamilySegmentCollector


def _live_obs_field(key: str, default: Any) -> property:
    """A property ``{env_id: obs[key]}`` over the env manager's ready observations; assignments are ignored
    (lightzero assigns these dicts from the same observations)."""

    def get(self: MuZeroSegmentCollector) -> Dict[int, Any]:
        return {env_id: to_ndarray(obs.get(key, default)) for env_id, obs in self._env.ready_obs.items()}

    def ignore(self: MuZeroSegmentCollector, value: Any) -> None:
        pass

    return property(get, ignore, doc=f"Current '{key}' of every ready env (read from the env manager).")


class MaskAwareSegmentCollector(UniZeroFamilySegmentCollector):
    """``MuZeroSegmentCollector`` whose action masks, to-play ids and timesteps follow the current observations,
    and whose padded segments keep masks aligned with visit counts (see the module docstring).

    Same constructor and ``collect`` as lightzero's collector.

    Example::

        collector = MaskAwareSegmentCollector(env=env_manager, policy=policy.collect_mode, tb_logger=writer,
                                              exp_name=exp_name, policy_config=cfg.policy)
        segments = collector.collect(train_iter=0, policy_kwargs={"temperature": 1.0, "epsilon": 0.0})
    """

    action_mask_dict = _live_obs_field('action_mask', None)
    to_play_dict = _live_obs_field('to_play', -1)
    timestep_dict = _live_obs_field('timestep', -1)

    def pad_and_save_last_trajectory(self, i: int, last_game_segments: List[GameSegment],
                                     last_game_priorities: List[np.ndarray], game_segments: List[GameSegment],
                                     done: np.ndarray) -> None:
        """lightzero's padding of the finished segment ``last_game_segments[i]`` with the first steps of
        ``game_segments[i]``, masks and to-play ids included."""
        steps = self.policy_config.num_unroll_steps + self.policy_config.td_steps  # as lightzero pads visit counts
        last, following = last_game_segments[i], game_segments[i]
        last.action_mask_segment.extend(following.action_mask_segment[:steps])
        last.to_play_segment.extend(following.to_play_segment[:steps])
        super().pad_and_save_last_trajectory(i, last_game_segments, last_game_priorities, game_segments, done)
