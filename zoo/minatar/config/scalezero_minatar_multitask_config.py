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
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from easydict import EasyDict

MINATAR5 = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
OBSERVATION_SHAPE = (10, 10, 10)  # every game padded to Seaquest's 10 channels: one shared encoder
NUM_ACTIONS = 6


@dataclass(frozen=True, kw_only=True)
class Preset:
    """Sizes that differ between presets; everything else is in :func:`build_task_config`."""

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


def build_task_config(game: str, task_id: int, task_num: int, preset: Preset, *, dense: bool, exp_name: str,
                      cuda: bool, dps: bool = False) -> Tuple[EasyDict, EasyDict]:
    """One game's LightZero ``(main_config, create_config)`` pair."""
    from lzero_ext.envs.minatar_scores import DPS_TARGETS

    main = dict(
        exp_name=exp_name,
        env=dict(
            env_id=game,
            observation_shape=OBSERVATION_SHAPE,
            max_episode_steps=preset.max_episode_steps,
            collector_env_num=preset.collector_env_num,
            evaluator_env_num=preset.evaluator_env_num,
            n_evaluator_episode=preset.evaluator_env_num,
            manager=dict(shared_memory=False),
        ),
        policy=dict(
            task_num=task_num,
            task_id=task_id,
            cuda=cuda,
            model=dict(
                observation_shape=OBSERVATION_SHAPE,
                action_space_size=NUM_ACTIONS,
                model_type="conv",
                image_channel=OBSERVATION_SHAPE[0],  # lightzero slices stacked frames by it (its default is RGB's 3)
                frame_stack_num=1,
                downsample=False,  # 10x10 grids: lzero_ext.model.grid_encoder keeps every cell
                norm_type="LN",
                num_channels=preset.encoder_channels,
                world_model_cfg=dict(
                    num_tasks=task_num,
                    obs_type="image",
                    action_space_size=NUM_ACTIONS,
                    embed_dim=preset.embed_dim,
                    num_layers=preset.num_layers,
                    num_heads=preset.num_heads,
                    max_blocks=preset.num_unroll_steps,
                    max_tokens=2 * preset.num_unroll_steps,
                    context_length=2 * preset.infer_context,
                    env_num=max(preset.collector_env_num, preset.evaluator_env_num),
                    collector_env_num=preset.collector_env_num,
                    evaluator_env_num=preset.evaluator_env_num,
                    device="cuda" if cuda else "cpu",
                    predict_latent_loss_type="mse",  # with LayerNorm latents (the ScaleZero paper)
                    moe=dict(enabled=not dense, num_experts=preset.num_experts, top_k=1, num_shared_experts=1),
                ),
            ),
            num_unroll_steps=preset.num_unroll_steps,
            game_segment_length=preset.game_segment_length,
            num_segments=preset.collector_env_num,
            collector_env_num=preset.collector_env_num,
            evaluator_env_num=preset.evaluator_env_num,
            num_simulations=preset.num_simulations,
            batch_size=preset.batch_size,
            replay_ratio=0.25,
            **({} if preset.updates_per_round is None else dict(update_per_collect=preset.updates_per_round)),
            learning_rate=preset.learning_rate,
            weight_decay=1e-2,
            grad_clip_value=5,
            eval_freq=preset.eval_freq,
            replay_buffer_size=preset.replay_buffer_size,
            td_steps=5,
            discount_factor=0.99,
            use_augmentation=False,
            use_wandb=False,
            # Dynamic Parameter Scaling (--dps): this project's MinAtar targets (lzero_ext.envs.minatar_scores).
            dps=dict(enabled=dps, suite=None, num_stages=3, rank=8, alpha=8.0, dropout=0.0,
                     min_stage0_iters=preset.dps_min_stage0_iters, max_stage_iters=preset.dps_max_stage_iters,
                     targets=dict(DPS_TARGETS)),
        ),
    )
    create = dict(
        env=dict(type="minatar_scalezero", import_names=["lzero_ext.envs.minatar_env"]),
        env_manager=dict(type="base"),  # MinAtar steps take microseconds: subprocesses would only add overhead
        policy=dict(type="scalezero", import_names=["policies.scalezero"]),
    )
    return EasyDict(main), EasyDict(create)


def build_configs(preset_name: str, *, games: Optional[Sequence[str]] = None, dense: bool = False,
                  exp_name: Optional[str] = None, cuda: Optional[bool] = None, dps: bool = False) -> List[Tuple[EasyDict, EasyDict]]:
    """All games' config pairs for a preset (``games`` overrides the preset's five)."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose from {sorted(PRESETS)}")
    from lzero_ext.envs.minatar_env import game_name

    preset = PRESETS[preset_name]
    games = [game_name(g) for g in (games or preset.games)]  # a clear error for an unknown game, before anything starts
    cuda = torch.cuda.is_available() if cuda is None else cuda
    variant = ("dense" if dense else "moe") + ("_dps" if dps else "")
    exp_name = exp_name or f"data_scalezero/minatar_{preset_name}_{variant}_{len(games)}games"
    return [build_task_config(g, i, len(games), preset, dense=dense, exp_name=exp_name, cuda=cuda, dps=dps)
            for i, g in enumerate(games)]


def main(argv: Optional[Sequence[str]] = None) -> None:
    from lzero_ext.entry.cli import parse_scalezero_args, run_cli, scalezero_arg_parser

    parser = scalezero_arg_parser(__doc__, presets=PRESETS, default_preset="full" if torch.cuda.is_available() else "cpu",
                                  task_flag="--games", task_help="override the preset's games, e.g. --games Breakout Freeway")
    args = parse_scalezero_args(parser, argv)
    preset = PRESETS[args.preset]
    run_cli(args, lambda: build_configs(args.preset, games=args.tasks, dense=args.dense, exp_name=args.exp_name,
                                        cuda=args.cuda, dps=args.dps),
            torch_threads=preset.torch_threads, max_env_step=args.max_env_step or preset.max_env_step, score_kind="raw",
            checkpoint_freq=preset.checkpoint_freq)


if __name__ == "__main__":
    main()
