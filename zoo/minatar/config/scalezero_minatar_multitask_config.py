"""ScaleZero on MinAtar's five games (Asterix, Breakout, Freeway, Seaquest, SpaceInvaders) with one model.

    python -m zoo.minatar.config.scalezero_minatar_multitask_config                 # `cpu` preset (`full` on a GPU)
    python -m zoo.minatar.config.scalezero_minatar_multitask_config --preset smoke  # about 10 s
    python -m zoo.minatar.config.scalezero_minatar_multitask_config --preset cpu --dense  # multi-task UniZero

Observations are every game's (C, 10, 10) grid zero-padded to 10 channels, so the five games share one
image encoder (lzero_ext.model.grid_encoder: lightzero's UniZero encoder without downsampling); the
action space is MinAtar's 6 actions for every game. Every run prints a per-task table of raw eval
returns and writes ``summary.json`` and ``learning_curves.png`` into the experiment directory.
Presets are described in docs/presets.md.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from lzero_ext.entry.run_config import TaskEnvSpec
from lzero_ext.entry.suite import Suite, SuitePreset
from lzero_ext.envs.minatar_scores import DPS_TARGETS

MINATAR5 = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
OBSERVATION_SHAPE = (10, 10, 10)  # every game padded to Seaquest's 10 channels: one shared encoder
NUM_ACTIONS = 6


@dataclass(frozen=True, kw_only=True)
class Preset(SuitePreset):
    """A MinAtar preset: :class:`SuitePreset`'s sizes (one episode per evaluator env), the episode cap and the grid
    encoder's channels."""

    tasks: Tuple[str, ...] = MINATAR5
    max_episode_steps: int  # agent steps (= frames) per episode, train and eval
    encoder_channels: int = 32  # conv channels of the grid encoder
    # epsilon-greedy collection (lightzero's ``policy.eps``): epsilon falls linearly from 1.0 to 0.05 over this many
    # env steps of each game, then stays; None: off (actions from the visit counts only)
    collect_epsilon_decay: Optional[int] = None
    # the visit-count temperature of collection's action sampling, fixed for the whole run; None: lightzero's
    # UniZero default (a fixed 0.25)
    collect_temperature: Optional[float] = None
    # each game's own legal actions only (MinAtar's minimal action set, a mask over the shared 6; Breakout and Freeway
    # have 3): the search spreads its simulations over fewer actions, and lightzero maps the visit counts back to the 6
    # (``action_type='varied_action_space'``)
    minimal_action_set: bool = False


PRESETS: Dict[str, Preset] = {
    # End-to-end check of the whole pipeline on all five games in under a minute; scores mean nothing.
    "smoke": Preset(max_env_step=40, embed_dim=32, num_layers=1, num_heads=2, num_experts=2, num_simulations=2,
                    batch_size=4, collector_env_num=1, evaluator_env_num=1, game_segment_length=12, num_unroll_steps=4,
                    infer_context=2, eval_freq=20, max_episode_steps=30, replay_buffer_size=2000, checkpoint_freq=10,
                    encoder_channels=8, dps_min_stage0_iters=4, dps_max_stage_iters=4, torch_threads=1,
                    eval_env_step_fractions=(), final_eval_episodes=None),  # the baseline and the final evaluation
    # All five games on a 2-core CPU in under 30 minutes; the budget and the exploration were chosen by measurement
    # (docs/results/minatar_budget_notes.md): Breakout and SpaceInvaders learn at 12,000 env steps per game.
    "cpu": Preset(max_env_step=12_000, collect_epsilon_decay=6_000, embed_dim=64, num_layers=2, num_heads=2, num_experts=4, num_simulations=16,
                  batch_size=32, collector_env_num=8, evaluator_env_num=5, n_evaluator_episode=5,
                  game_segment_length=20, num_unroll_steps=5, infer_context=4, eval_freq=100, max_episode_steps=500,
                  replay_buffer_size=100_000, checkpoint_freq=200, encoder_channels=16, update_per_collect=40,
                  learning_rate=1e-3, torch_threads=1,
                  learn_threads=2,  # the learner's batched step (all five games' rows) uses a second core: 1.5x faster
                  # DPS switches at the paper's fractions of training (stage 0 about half, then about a fifth per
                  # stage): 2,880 learner iterations at 12,000 env steps per game
                  dps_min_stage0_iters=1200, dps_max_stage_iters=600),
    # A bigger machine (GPU): 8 experts, 50 simulations, 1M frames per game (MinAtar papers train 5M).
    "full": Preset(max_env_step=1_000_000, embed_dim=256, num_layers=4, num_heads=8, num_experts=8, num_simulations=50,
                   batch_size=64, collector_env_num=8, evaluator_env_num=5, n_evaluator_episode=5,
                   game_segment_length=20, num_unroll_steps=10, infer_context=4, eval_freq=5000,
                   max_episode_steps=10_000, replay_buffer_size=1_000_000, checkpoint_freq=5000, encoder_channels=64,
                   dps_min_stage0_iters=20_000, dps_max_stage_iters=10_000),
}


def run_fields(preset: Preset, cuda: bool) -> Dict[str, Any]:
    """MinAtar's RunConfig fields: the grid encoder (no downsampling, LayerNorm, the preset's channels)."""
    eps = {} if preset.collect_epsilon_decay is None else dict(eps=dict(
        eps_greedy_exploration_in_collect=True, type="linear", start=1.0, end=0.05, decay=preset.collect_epsilon_decay))
    temperature = {} if preset.collect_temperature is None else dict(
        manual_temperature_decay=False, fixed_temperature_value=preset.collect_temperature)
    return dict(discount_factor=0.99, policy_extras=dict(use_augmentation=False, **eps, **temperature),
                model_extras=dict(
                    image_channel=OBSERVATION_SHAPE[0],  # lightzero slices stacked frames by it (its default is RGB's 3)
                    frame_stack_num=1,
                    downsample=False,  # 10x10 grids: lzero_ext.model.grid_encoder keeps every cell
                    norm_type="LN",
                    num_channels=preset.encoder_channels,
                ))


def task_spec(game: str, preset: Preset, **env_keys: Any) -> TaskEnvSpec:
    """One game at the preset's sizes; ``env_keys`` add or replace env keys (e.g. ``sticky_action_prob``)."""
    env = dict(env_id=game, observation_shape=OBSERVATION_SHAPE, max_episode_steps=preset.max_episode_steps)
    sizes = dict(preset.task_sizes(),
                 env_manager="base")  # MinAtar steps take microseconds: subprocesses would only add overhead
    if preset.minimal_action_set:  # legal actions as a mask; lightzero maps their visit counts back to all 6
        env["minimal_action_set"] = True
        sizes["policy_extras"] = dict(action_type="varied_action_space")
    return TaskEnvSpec(env_type="minatar_scalezero", env_import_names=("lzero_ext.envs.minatar_env",),
                       env={**env, **env_keys}, observation_shape=OBSERVATION_SHAPE, action_space_size=NUM_ACTIONS,
                       obs_type="image", **sizes)


def task_specs(preset: Preset, games: Sequence[str]) -> List[TaskEnvSpec]:
    from lzero_ext.envs.minatar_env import game_name

    return [task_spec(game_name(g), preset) for g in games]  # a clear error for an unknown game, before anything starts


SUITE = Suite(name="minatar", doc=__doc__, presets=PRESETS, gpu_preset="full", task_flag="--games",
              task_help="override the preset's games, e.g. --games Breakout Freeway", score_kind="raw",
              run_fields=run_fields, task_specs=task_specs,
              # This project's MinAtar targets (lzero_ext.envs.minatar_scores), 3 stages of rank-8 adapters.
              dps=dict(suite=None, num_stages=3, rank=8, alpha=8.0, dropout=0.0, targets=dict(DPS_TARGETS)))
build_configs, run_config, main = SUITE.build_configs, SUITE.run_config, SUITE.main

if __name__ == "__main__":
    main()
