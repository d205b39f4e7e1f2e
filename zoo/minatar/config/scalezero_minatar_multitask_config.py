"""ScaleZero on MinAtar's five games (Asterix, Breakout, Freeway, Seaquest, SpaceInvaders) with one model.

    python -m zoo.minatar.config.scalezero_minatar_multitask_config                 # `cpu` preset (`full` on a GPU)
    python -m zoo.minatar.config.scalezero_minatar_multitask_config --preset smoke  # < 1 minute
    python -m zoo.minatar.config.scalezero_minatar_multitask_config --preset cpu --dense  # multi-task UniZero

Observations are every game's (C, 10, 10) grid zero-padded to 10 channels, so the five games share one
image encoder (lzero_ext.model.grid_encoder: lightzero's UniZero encoder without downsampling); the
action space is MinAtar's 6 actions for every game. Every run prints a per-task table of raw eval
returns and writes ``summary.json`` and ``learning_curves.png`` into the experiment directory.
Presets are described in docs/presets.md.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from easydict import EasyDict

from lzero_ext.entry.run_config import RunConfig, TaskEnvSpec, build_task_configs

MINATAR5 = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
OBSERVATION_SHAPE = (10, 10, 10)  # every game padded to Seaquest's 10 channels: one shared encoder
NUM_ACTIONS = 6


@dataclass(frozen=True, kw_only=True)
class Preset:
    """Sizes that differ between presets; the run-level rest is :class:`RunConfig`'s defaults."""

    max_env_step: int  # per task
    embed_dim: int
    num_layers: int
    num_heads: int
    num_experts: int
    num_simulations: int
    batch_size: int  # per task
    collector_env_num: int
    evaluator_env_num: int  # = episodes per evaluation
    game_segment_length: int
    num_unroll_steps: int
    infer_context: int
    eval_freq: int  # learner iterations between evaluations
    max_episode_steps: int  # agent steps (= frames) per episode, train and eval
    replay_buffer_size: int
    checkpoint_freq: int
    encoder_channels: int = 32  # conv channels of the grid encoder
    updates_per_round: Optional[int] = None  # learner steps per collection round; None: replay ratio 0.25
    learning_rate: float = 1e-4
    games: Tuple[str, ...] = MINATAR5
    dps_min_stage0_iters: int = 50_000  # --dps: train iterations before the first stage switch
    dps_max_stage_iters: int = 20_000  # --dps: a stage ends after this many iterations at the latest
    torch_threads: Optional[int] = None  # intra-op CPU threads of a CPU run (--threads overrides); None: torch's default


PRESETS: Dict[str, Preset] = {
    # End-to-end check of the whole pipeline on all five games in under a minute; scores mean nothing.
    "smoke": Preset(max_env_step=40, embed_dim=32, num_layers=1, num_heads=2, num_experts=2, num_simulations=2,
                    batch_size=4, collector_env_num=1, evaluator_env_num=1, game_segment_length=12, num_unroll_steps=4,
                    infer_context=2, eval_freq=20, max_episode_steps=30, replay_buffer_size=2000, checkpoint_freq=10,
                    encoder_channels=8, dps_min_stage0_iters=4, dps_max_stage_iters=4, torch_threads=1),
    # All five games on a 2-core CPU in at most 45 minutes (docs/results/minatar_budget_notes.md: how it was chosen).
    "cpu": Preset(max_env_step=3000, embed_dim=64, num_layers=2, num_heads=2, num_experts=4, num_simulations=16,
                  batch_size=32, collector_env_num=8, evaluator_env_num=3, game_segment_length=20, num_unroll_steps=5,
                  infer_context=4, eval_freq=100, max_episode_steps=500, replay_buffer_size=100_000,
                  checkpoint_freq=200, encoder_channels=16, updates_per_round=40, learning_rate=1e-3,
                  dps_min_stage0_iters=300, dps_max_stage_iters=150, torch_threads=1),
    # A bigger machine (GPU): 8 experts, 50 simulations, 1M frames per game (MinAtar papers train 5M).
    "full": Preset(max_env_step=1_000_000, embed_dim=256, num_layers=4, num_heads=8, num_experts=8, num_simulations=50,
                   batch_size=64, collector_env_num=8, evaluator_env_num=5, game_segment_length=20, num_unroll_steps=10,
                   infer_context=4, eval_freq=5000, max_episode_steps=10_000, replay_buffer_size=1_000_000,
                   checkpoint_freq=5000, encoder_channels=64, dps_min_stage0_iters=20_000, dps_max_stage_iters=10_000),
}


def build_configs(preset_name: str, *, games: Optional[Sequence[str]] = None, dense: bool = False,
                  exp_name: Optional[str] = None, cuda: Optional[bool] = None, dps: bool = False,
                  engine: Optional[str] = None, amp: Optional[str] = None,
                  compile: Optional[bool] = None) -> List[Tuple[EasyDict, EasyDict]]:
    """All games' config pairs for a preset (``games`` overrides the preset's five; ``engine``, ``amp`` and
    ``compile`` are :class:`RunConfig`'s, None: the policy's defaults)."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose from {sorted(PRESETS)}")
    from lzero_ext.envs.minatar_env import game_name

    preset = PRESETS[preset_name]
    games = [game_name(g) for g in (games or preset.games)]  # a clear error for an unknown game, before anything starts
    cuda = torch.cuda.is_available() if cuda is None else cuda
    variant = ("dense" if dense else "moe") + ("_dps" if dps else "")
    run = run_config(preset, exp_name=exp_name or f"data_scalezero/minatar_{preset_name}_{variant}_{len(games)}games",
                     cuda=cuda, dense=dense, dps=dps, engine=engine, amp=amp, compile=compile)
    return build_task_configs(run, [task_spec(g, preset) for g in games])


def run_config(preset: Preset, *, exp_name: str, cuda: bool, dense: bool = False, dps: bool = False,
               engine: Optional[str] = None, amp: Optional[str] = None, compile: Optional[bool] = None) -> RunConfig:
    """The run-level settings of a MinAtar run at the preset's sizes (one grid encoder, 6 shared actions)."""
    from lzero_ext.envs.minatar_scores import DPS_TARGETS

    return RunConfig(
        exp_name=exp_name, cuda=cuda, embed_dim=preset.embed_dim, num_layers=preset.num_layers,
        num_heads=preset.num_heads, dense=dense, num_experts=preset.num_experts,
        num_simulations=preset.num_simulations, num_unroll_steps=preset.num_unroll_steps,
        infer_context=preset.infer_context, discount_factor=0.99, game_segment_length=preset.game_segment_length,
        learning_rate=preset.learning_rate, update_per_collect=preset.updates_per_round, eval_freq=preset.eval_freq,
        replay_buffer_size=preset.replay_buffer_size, engine=engine, amp=amp, compile=compile,
        # Dynamic Parameter Scaling (--dps): this project's MinAtar targets (lzero_ext.envs.minatar_scores).
        dps=dict(enabled=dps, suite=None, num_stages=3, rank=8, alpha=8.0, dropout=0.0,
                 min_stage0_iters=preset.dps_min_stage0_iters, max_stage_iters=preset.dps_max_stage_iters,
                 targets=dict(DPS_TARGETS)),
        policy_extras=dict(use_augmentation=False),
        model_extras=dict(
            image_channel=OBSERVATION_SHAPE[0],  # lightzero slices stacked frames by it (its default is RGB's 3)
            frame_stack_num=1,
            downsample=False,  # 10x10 grids: lzero_ext.model.grid_encoder keeps every cell
            norm_type="LN",
            num_channels=preset.encoder_channels,
        ),
    )


def task_spec(game: str, preset: Preset, **env_keys: Any) -> TaskEnvSpec:
    """One game at the preset's sizes; ``env_keys`` add or replace env keys (e.g. ``sticky_action_prob``)."""
    env = dict(env_id=game, observation_shape=OBSERVATION_SHAPE, max_episode_steps=preset.max_episode_steps)
    return TaskEnvSpec(env_type="minatar_scalezero", env_import_names=("lzero_ext.envs.minatar_env",),
                       env={**env, **env_keys}, observation_shape=OBSERVATION_SHAPE, action_space_size=NUM_ACTIONS,
                       obs_type="image", batch_size=preset.batch_size, collector_env_num=preset.collector_env_num,
                       evaluator_env_num=preset.evaluator_env_num,  # one episode per evaluator env
                       env_manager="base")  # MinAtar steps take microseconds: subprocesses would only add overhead


def main(argv: Optional[Sequence[str]] = None) -> None:
    from lzero_ext.entry.cli import parse_scalezero_args, run_cli, scalezero_arg_parser

    parser = scalezero_arg_parser(__doc__, presets=PRESETS, default_preset="full" if torch.cuda.is_available() else "cpu",
                                  task_flag="--games", task_help="override the preset's games, e.g. --games Breakout Freeway")
    args = parse_scalezero_args(parser, argv)
    preset = PRESETS[args.preset]
    run_cli(args, lambda **run_keys: build_configs(args.preset, games=args.tasks, dense=args.dense,
                                                   exp_name=args.exp_name, cuda=args.cuda, dps=args.dps, **run_keys),
            torch_threads=preset.torch_threads, max_env_step=args.max_env_step or preset.max_env_step, score_kind="raw",
            checkpoint_freq=preset.checkpoint_freq)


if __name__ == "__main__":
    main()
