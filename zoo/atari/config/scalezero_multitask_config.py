"""ScaleZero on several Atari games with one model — the project's main job.

    python -m zoo.atari.config.scalezero_multitask_config                 # `cpu` preset (or `atari8` on a GPU)
    python -m zoo.atari.config.scalezero_multitask_config --preset smoke  # < 2 minutes
    torchrun --nproc_per_node 2 -m zoo.atari.config.scalezero_multitask_config --preset atari8

Every run prints a per-task table (env steps, latest eval return, HNS) with HNS mean and median and
writes ``summary.json`` and ``learning_curves.png`` into the experiment directory. Presets are
described in docs/presets.md; ``--dense`` gives the multi-task UniZero baseline (same everything,
dense FFN).
"""
import copy
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from easydict import EasyDict

from lzero_ext.model.vit_encoder import VIT_SIZES

ATARI8 = ["Pong", "MsPacman", "Seaquest", "Boxing", "Alien", "ChopperCommand", "Hero", "RoadRunner"]
ATARI26 = ATARI8 + ["Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "CrazyClimber", "DemonAttack",
                    "Freeway", "Frostbite", "Gopher", "Jamesbond", "Kangaroo", "Krull", "KungFuMaster",
                    "PrivateEye", "UpNDown", "Qbert", "Breakout"]


@dataclass(frozen=True, kw_only=True)
class Preset:
    """Sizes that differ between presets; everything else is in :func:`build_task_config`."""

    games: Tuple[str, ...]
    max_env_step: int  # per task
    embed_dim: int
    num_layers: int
    num_heads: int
    num_experts: int
    num_simulations: int
    batch_size: int
    collector_env_num: int
    evaluator_env_num: int
    n_evaluator_episode: int
    game_segment_length: int
    num_unroll_steps: int
    infer_context: int
    eval_freq: int  # learner iterations between evaluations
    max_episode_frames: int  # emulator frames per episode (108k = Atari100k protocol)
    replay_buffer_size: int
    checkpoint_freq: int
    dps_min_stage0_iters: int = 50_000  # --dps: train iterations before the first stage switch (docs/dps.md)
    dps_max_stage_iters: int = 20_000  # --dps: a stage ends after this many iterations at the latest
    torch_threads: Optional[int] = None  # intra-op CPU threads of a CPU run (--threads overrides); None: torch's default
    vit: Optional[str] = None  # image encoder: a ViT size of lzero_ext.model.vit_encoder.VIT_SIZES; None: lightzero's ResNet


PRESETS: Dict[str, Preset] = {
    # End-to-end check of the whole pipeline in under two minutes.
    "smoke": Preset(games=("Pong", "Breakout"), max_env_step=64, embed_dim=32, num_layers=1, num_heads=2,
                    num_experts=2, num_simulations=2, batch_size=4, collector_env_num=1, evaluator_env_num=1,
                    n_evaluator_episode=1, game_segment_length=12, num_unroll_steps=4, infer_context=2, eval_freq=20,
                    max_episode_frames=200, replay_buffer_size=2000, checkpoint_freq=10, dps_min_stage0_iters=4,
                    dps_max_stage_iters=4),
    # A real (small) multi-task run on a 2-core laptop CPU in about 30 minutes. Torch keeps its default threads: on a
    # quiet 2-core machine 2 threads learn 1.85x faster than 1 and collect as fast (--threads 1 helps on a busy one).
    "cpu": Preset(games=("Pong", "Breakout", "MsPacman"), max_env_step=4000, embed_dim=64, num_layers=2, num_heads=4,
                  num_experts=4, num_simulations=8, batch_size=8, collector_env_num=2, evaluator_env_num=1,
                  n_evaluator_episode=1, game_segment_length=20, num_unroll_steps=5, infer_context=2, eval_freq=400,
                  max_episode_frames=4000, replay_buffer_size=100_000, checkpoint_freq=200, dps_min_stage0_iters=300,
                  dps_max_stage_iters=150),
    # Paper settings (ScaleZero, arXiv 2509.07945): Atari-8 / Atari-26, 768-wide backbone, 50 simulations.
    # Paper encoder: ViT 'small' (depth 6) for up to 8 tasks, 'base' (depth 12) for 26.
    "atari8": Preset(games=tuple(ATARI8), max_env_step=400_000, embed_dim=768, num_layers=2, num_heads=8,
                     num_experts=8, num_simulations=50, batch_size=64, collector_env_num=8, evaluator_env_num=3,
                     n_evaluator_episode=3, game_segment_length=20, num_unroll_steps=10, infer_context=4,
                     eval_freq=10_000, max_episode_frames=108_000, replay_buffer_size=500_000,
                     checkpoint_freq=10_000, vit="small"),
    "atari26": Preset(games=tuple(ATARI26), max_env_step=400_000, embed_dim=768, num_layers=4, num_heads=24,
                      num_experts=8, num_simulations=50, batch_size=64, collector_env_num=8, evaluator_env_num=3,
                      n_evaluator_episode=3, game_segment_length=20, num_unroll_steps=10, infer_context=4,
                      eval_freq=10_000, max_episode_frames=108_000, replay_buffer_size=500_000,
                      checkpoint_freq=10_000, vit="base"),
}


def build_task_config(game: str, task_id: int, task_num: int, preset: Preset, *, dense: bool, exp_name: str,
                      cuda: bool, dps: bool = False) -> Tuple[EasyDict, EasyDict]:
    """One task's LightZero ``(main_config, create_config)`` pair."""
    main = dict(
        exp_name=exp_name,
        env=dict(
            env_id=game,
            observation_shape=(3, 64, 64),
            full_action_space=True,  # all games share the 18-action space and one action embedding
            max_episode_frames=preset.max_episode_frames,
            collector_env_num=preset.collector_env_num,
            evaluator_env_num=preset.evaluator_env_num,
            n_evaluator_episode=preset.n_evaluator_episode,
            manager=dict(shared_memory=False),
        ),
        policy=dict(
            task_num=task_num,
            task_id=task_id,
            cuda=cuda,
            model=dict(
                observation_shape=(3, 64, 64),
                action_space_size=18,
                model_type="conv",
                world_model_cfg=dict(
                    num_tasks=task_num,
                    obs_type="image",
                    action_space_size=18,
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
                    encoder_max_batch=None if cuda else 192,  # CPU caches: encode a mixed batch in chunks
                    moe=dict(enabled=not dense, num_experts=preset.num_experts, top_k=1, num_shared_experts=1),
                    **({} if preset.vit is None else dict(encoder="vit", vit=dict(VIT_SIZES[preset.vit]))),
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
            learning_rate=1e-4,
            weight_decay=1e-2,
            grad_clip_value=5,
            eval_freq=preset.eval_freq,
            replay_buffer_size=preset.replay_buffer_size,
            td_steps=5,
            discount_factor=0.997,
            use_wandb=False,
            # Dynamic Parameter Scaling (--dps): Atari targets and LoRA settings, iteration limits scaled per preset.
            dps=dict(enabled=dps, suite="atari", min_stage0_iters=preset.dps_min_stage0_iters,
                     max_stage_iters=preset.dps_max_stage_iters),
        ),
    )
    create = dict(
        env=dict(type="atari_scalezero", import_names=["lzero_ext.envs.atari_env"]),
        env_manager=dict(type="subprocess" if preset.collector_env_num > 1 else "base"),
        policy=dict(type="scalezero", import_names=["policies.scalezero"]),
    )
    return EasyDict(main), EasyDict(create)


def build_configs(preset_name: str, *, games: Optional[Sequence[str]] = None, dense: bool = False,
                  exp_name: Optional[str] = None, cuda: Optional[bool] = None, dps: bool = False) -> List[Tuple[EasyDict, EasyDict]]:
    """All tasks' config pairs for a preset (``games`` overrides the preset's game list)."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose from {sorted(PRESETS)}")
    from lzero_ext.envs.atari_games import resolve_game

    preset = PRESETS[preset_name]
    games = list(games or preset.games)
    for game in games:
        resolve_game(game)  # a clear error for an unknown game, before anything starts
    cuda = torch.cuda.is_available() if cuda is None else cuda
    variant = ("dense" if dense else "moe") + ("_dps" if dps else "")
    exp_name = exp_name or f"data_scalezero/atari_{preset_name}_{variant}_{len(games)}games"
    return [build_task_config(g, i, len(games), preset, dense=dense, exp_name=exp_name, cuda=cuda, dps=dps)
            for i, g in enumerate(games)]


def main(argv: Optional[Sequence[str]] = None) -> None:
    from lzero_ext.entry.cli import parse_scalezero_args, run_cli, scalezero_arg_parser

    parser = scalezero_arg_parser(__doc__, presets=PRESETS, default_preset="atari8" if torch.cuda.is_available() else "cpu",
                                  task_flag="--games", task_help="override the preset's games, e.g. --games Pong Breakout")
    args = parse_scalezero_args(parser, argv)
    preset = PRESETS[args.preset]
    run_cli(args, lambda: build_configs(args.preset, games=args.tasks, dense=args.dense, exp_name=args.exp_name,
                                        cuda=args.cuda, dps=args.dps),
            torch_threads=preset.torch_threads, max_env_step=args.max_env_step or preset.max_env_step, score_kind="atari",
            checkpoint_freq=preset.checkpoint_freq)


if __name__ == "__main__":
    main()
