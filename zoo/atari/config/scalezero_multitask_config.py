"""ScaleZero on several Atari games with one model — the project's main job.

    python -m zoo.atari.config.scalezero_multitask_config                 # `cpu` preset (or `atari8` on a GPU)
    python -m zoo.atari.config.scalezero_multitask_config --preset smoke  # < 2 minutes
    python -m lzero_ext.launch --nproc_per_node 2 -m zoo.atari.config.scalezero_multitask_config --preset atari8

Every run prints a per-task table (env steps, latest eval return, HNS) with HNS mean and median and
writes ``summary.json`` and ``learning_curves.png`` into the experiment directory. Presets are
described in docs/presets.md; ``--dense`` gives the multi-task UniZero baseline (same everything,
dense FFN).
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from easydict import EasyDict

from lzero_ext.entry.run_config import RunConfig, TaskEnvSpec, build_task_configs

ATARI8 = ["Pong", "MsPacman", "Seaquest", "Boxing", "Alien", "ChopperCommand", "Hero", "RoadRunner"]
ATARI26 = ATARI8 + ["Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "CrazyClimber", "DemonAttack",
                    "Freeway", "Frostbite", "Gopher", "Jamesbond", "Kangaroo", "Krull", "KungFuMaster",
                    "PrivateEye", "UpNDown", "Qbert", "Breakout"]
OBSERVATION_SHAPE = (3, 64, 64)  # RGB at 64x64 for every game: one shared image encoder
NUM_ACTIONS = 18  # the full action space: one action embedding for every game


@dataclass(frozen=True, kw_only=True)
class Preset:
    """Sizes that differ between presets; the run-level rest is :class:`RunConfig`'s defaults."""

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
    # A real (small) multi-task run on a 2-core laptop CPU in about 17 minutes (docs/benchmarks.md). Torch keeps its
    # default threads: on a quiet 2-core machine 2 threads learn 1.85x faster than 1 and collect as fast (--threads 1
    # helps on a busy one).
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


def build_configs(preset_name: str, *, games: Optional[Sequence[str]] = None, dense: bool = False,
                  exp_name: Optional[str] = None, cuda: Optional[bool] = None, dps: bool = False,
                  engine: Optional[str] = None, amp: Optional[str] = None,
                  compile: Optional[bool] = None) -> List[Tuple[EasyDict, EasyDict]]:
    """All tasks' config pairs for a preset (``games`` overrides the preset's game list; ``engine``, ``amp``
    and ``compile`` are :class:`RunConfig`'s, None: the policy's defaults)."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose from {sorted(PRESETS)}")
    from lzero_ext.envs.atari_games import resolve_game

    preset = PRESETS[preset_name]
    games = list(games or preset.games)
    for game in games:
        resolve_game(game)  # a clear error for an unknown game, before anything starts
    cuda = torch.cuda.is_available() if cuda is None else cuda
    variant = ("dense" if dense else "moe") + ("_dps" if dps else "")
    run = run_config(preset, exp_name=exp_name or f"data_scalezero/atari_{preset_name}_{variant}_{len(games)}games",
                     cuda=cuda, dense=dense, dps=dps, engine=engine, amp=amp, compile=compile)
    return build_task_configs(run, [task_spec(g, preset) for g in games])


def run_config(preset: Preset, *, exp_name: str, cuda: bool, dense: bool = False, dps: bool = False,
               engine: Optional[str] = None, amp: Optional[str] = None, compile: Optional[bool] = None) -> RunConfig:
    """The run-level settings of an Atari run at the preset's sizes (one image encoder, 18 shared actions)."""
    return RunConfig(
        exp_name=exp_name, cuda=cuda,
        embed_dim=preset.embed_dim, num_layers=preset.num_layers, num_heads=preset.num_heads, dense=dense,
        num_experts=preset.num_experts, vit=preset.vit, num_simulations=preset.num_simulations,
        num_unroll_steps=preset.num_unroll_steps, infer_context=preset.infer_context,
        game_segment_length=preset.game_segment_length, eval_freq=preset.eval_freq,
        replay_buffer_size=preset.replay_buffer_size, engine=engine, amp=amp, compile=compile,
        # Dynamic Parameter Scaling (--dps): Atari targets and LoRA settings, iteration limits scaled per preset.
        dps=dict(enabled=dps, suite="atari", min_stage0_iters=preset.dps_min_stage0_iters,
                 max_stage_iters=preset.dps_max_stage_iters),
        world_model_extras=dict(encoder_max_batch=None if cuda else 192),  # CPU caches: encode a mixed batch in chunks
    )


def task_spec(game: str, preset: Preset) -> TaskEnvSpec:
    """One game at the preset's sizes: (3, 64, 64) RGB and the full 18-action space shared by every game."""
    return TaskEnvSpec(env_type="atari_scalezero", env_import_names=("lzero_ext.envs.atari_env",),
                       env=dict(env_id=game, observation_shape=OBSERVATION_SHAPE, full_action_space=True,
                                max_episode_frames=preset.max_episode_frames),
                       observation_shape=OBSERVATION_SHAPE, action_space_size=NUM_ACTIONS, obs_type="image",
                       batch_size=preset.batch_size, collector_env_num=preset.collector_env_num,
                       evaluator_env_num=preset.evaluator_env_num, n_evaluator_episode=preset.n_evaluator_episode,
                       env_manager="subprocess" if preset.collector_env_num > 1 else "base")


def main(argv: Optional[Sequence[str]] = None) -> None:
    from lzero_ext.entry.cli import parse_scalezero_args, run_cli, scalezero_arg_parser

    parser = scalezero_arg_parser(__doc__, presets=PRESETS, default_preset="atari8" if torch.cuda.is_available() else "cpu",
                                  task_flag="--games", task_help="override the preset's games, e.g. --games Pong Breakout")
    args = parse_scalezero_args(parser, argv)
    preset = PRESETS[args.preset]
    run_cli(args, lambda **run_keys: build_configs(args.preset, games=args.tasks, dense=args.dense,
                                                   exp_name=args.exp_name, cuda=args.cuda, dps=args.dps, **run_keys),
            torch_threads=preset.torch_threads, max_env_step=args.max_env_step or preset.max_env_step, score_kind="atari",
            checkpoint_freq=preset.checkpoint_freq)


if __name__ == "__main__":
    main()
