"""ScaleZero on several Atari games with one model — the project's main job.

    python -m zoo.atari.config.scalezero_multitask_config                 # `cpu` preset (or `atari8` on a GPU)
    python -m zoo.atari.config.scalezero_multitask_config --preset smoke  # about 15 s
    python -m lzero_ext.launch --nproc_per_node 2 -m zoo.atari.config.scalezero_multitask_config --preset atari8

Every run prints a per-task table (env steps, latest eval return, HNS) with HNS mean and median and
writes ``summary.json`` and ``learning_curves.png`` into the experiment directory. Presets are
described in docs/presets.md; ``--dense`` gives the multi-task UniZero baseline (same everything,
dense FFN).
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from lzero_ext.entry.run_config import TaskEnvSpec
from lzero_ext.entry.suite import Suite, SuitePreset

ATARI8 = ["Pong", "MsPacman", "Seaquest", "Boxing", "Alien", "ChopperCommand", "Hero", "RoadRunner"]
ATARI26 = ATARI8 + ["Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "CrazyClimber", "DemonAttack",
                    "Freeway", "Frostbite", "Gopher", "Jamesbond", "Kangaroo", "Krull", "KungFuMaster",
                    "PrivateEye", "UpNDown", "Qbert", "Breakout"]
OBSERVATION_SHAPE = (3, 64, 64)  # RGB at 64x64 for every game: one shared image encoder
NUM_ACTIONS = 18  # the full action space: one action embedding for every game


@dataclass(frozen=True, kw_only=True)
class Preset(SuitePreset):
    """An Atari preset: :class:`SuitePreset`'s sizes, the episode cap and the image encoder."""

    max_episode_frames: int  # emulator frames per episode (108k = Atari100k protocol)
    vit: Optional[str] = None  # image encoder: a ViT size of lzero_ext.model.vit_encoder.VIT_SIZES; None: lightzero's ResNet


PRESETS: Dict[str, Preset] = {
    # End-to-end check of the whole pipeline in under a minute.
    "smoke": Preset(tasks=("Pong", "Breakout"), max_env_step=64, embed_dim=32, num_layers=1, num_heads=2,
                    num_experts=2, num_simulations=2, batch_size=4, collector_env_num=1, evaluator_env_num=1,
                    n_evaluator_episode=1, game_segment_length=12, num_unroll_steps=4, infer_context=2, eval_freq=20,
                    max_episode_frames=200, replay_buffer_size=2000, checkpoint_freq=10, dps_min_stage0_iters=4,
                    dps_max_stage_iters=4,
                    eval_env_step_fractions=(), final_eval_episodes=None),  # the baseline and the final evaluation
    # A real (small) multi-task run on a 2-core laptop CPU in about 14 minutes (docs/benchmarks.md). Torch keeps its
    # default threads: on a quiet 2-core machine 2 threads learn 1.85x faster than 1 and collect as fast (--threads 1
    # helps on a busy one).
    # It evaluates once, after training: 10 episodes per game, all in parallel (one search over every env's root
    # costs little more than over half of them). At 4,000 env steps per game a baseline and evaluations at 25/50/75%
    # took 29% of the wall time; add them back with --set initial_eval=True --set "eval_env_step_fractions=(0.5,)".
    "cpu": Preset(tasks=("Pong", "Breakout", "MsPacman"), max_env_step=4000, embed_dim=64, num_layers=2, num_heads=4,
                  num_experts=4, num_simulations=8, batch_size=8, collector_env_num=2, evaluator_env_num=10,
                  n_evaluator_episode=10, game_segment_length=20, num_unroll_steps=5, infer_context=2, eval_freq=400,
                  max_episode_frames=4000, replay_buffer_size=100_000, checkpoint_freq=200, dps_min_stage0_iters=300,
                  dps_max_stage_iters=150, eval_env_step_fractions=(), initial_eval=False),
    # Paper settings (ScaleZero, arXiv 2509.07945): Atari-8 / Atari-26, 768-wide backbone, 50 simulations.
    # Paper encoder: ViT 'small' (depth 6) for up to 8 tasks, 'base' (depth 12) for 26.
    "atari8": Preset(tasks=tuple(ATARI8), max_env_step=400_000, embed_dim=768, num_layers=2, num_heads=8,
                     num_experts=8, num_simulations=50, batch_size=64, collector_env_num=8, evaluator_env_num=5,
                     n_evaluator_episode=5, game_segment_length=20, num_unroll_steps=10, infer_context=4,
                     eval_freq=10_000, max_episode_frames=108_000, replay_buffer_size=500_000,
                     checkpoint_freq=10_000, vit="small"),
    "atari26": Preset(tasks=tuple(ATARI26), max_env_step=400_000, embed_dim=768, num_layers=4, num_heads=24,
                      num_experts=8, num_simulations=50, batch_size=64, collector_env_num=8, evaluator_env_num=5,
                      n_evaluator_episode=5, game_segment_length=20, num_unroll_steps=10, infer_context=4,
                      eval_freq=10_000, max_episode_frames=108_000, replay_buffer_size=500_000,
                      checkpoint_freq=10_000, vit="base"),
}


def run_fields(preset: Preset, cuda: bool) -> Dict[str, Any]:
    """Atari's RunConfig fields: the preset's image encoder; on a CPU, encode a mixed batch in chunks."""
    return dict(vit=preset.vit, world_model_extras=dict(encoder_max_batch=None if cuda else 192))


def task_spec(game: str, preset: Preset) -> TaskEnvSpec:
    """One game at the preset's sizes: (3, 64, 64) RGB and the full 18-action space shared by every game."""
    return TaskEnvSpec(env_type="atari_scalezero", env_import_names=("lzero_ext.envs.atari_env",),
                       env=dict(env_id=game, observation_shape=OBSERVATION_SHAPE, full_action_space=True,
                                max_episode_frames=preset.max_episode_frames),
                       observation_shape=OBSERVATION_SHAPE, action_space_size=NUM_ACTIONS, obs_type="image",
                       **preset.task_sizes())


def task_specs(preset: Preset, games: Sequence[str]) -> List[TaskEnvSpec]:
    from lzero_ext.envs.atari_games import resolve_game

    for game in games:
        resolve_game(game)  # a clear error for an unknown game, before anything starts
    return [task_spec(game, preset) for game in games]


SUITE = Suite(name="atari", doc=__doc__, presets=PRESETS, gpu_preset="atari8", task_flag="--games",
              task_help="override the preset's games, e.g. --games Pong Breakout", score_kind="atari",
              run_fields=run_fields, task_specs=task_specs,
              dps=dict(suite="atari"))  # Atari targets and LoRA settings (docs/dps.md)
build_configs, run_config, main = SUITE.build_configs, SUITE.run_config, SUITE.main

if __name__ == "__main__":
    main()
