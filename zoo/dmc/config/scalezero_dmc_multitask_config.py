"""ScaleZero on several DeepMind Control tasks (state observations, continuous actions) with one model.

    python -m zoo.dmc.config.scalezero_dmc_multitask_config                 # `cpu` preset (or `dmc18` on a GPU)
    python -m zoo.dmc.config.scalezero_dmc_multitask_config --preset smoke  # about a minute
    python -m zoo.dmc.config.scalezero_dmc_multitask_config --preset cpu --tasks cartpole-swingup walker-walk
    python -m lzero_ext.launch --nproc_per_node 2 -m zoo.dmc.config.scalezero_dmc_multitask_config --preset dmc18

Policy ``sampled_scalezero``: per-task MLP encoders (observation sizes differ), a shared latent
LayerNorm, per-task action embeddings and Gaussian policy heads (action sizes differ), one shared
MoE transformer, and lightzero's sampled C++ MCTS with K sampled actions per node (the ScaleZero paper).
Every run prints a per-task table (env steps, latest eval return, return/1000) with mean and median
and writes ``summary.json`` and ``learning_curves.png`` into the experiment directory.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from easydict import EasyDict

from lzero_ext.entry.run_config import RunConfig, TaskEnvSpec, build_task_configs
from lzero_ext.envs.dmc_tasks import DMC18, default_action_repeat, resolve_task

DMC18_TASKS: Tuple[str, ...] = tuple(DMC18)  # the ScaleZero paper


@dataclass(frozen=True, kw_only=True)
class Preset:
    """Sizes that differ between presets; the run-level rest is :class:`RunConfig`'s defaults."""

    tasks: Tuple[str, ...]
    max_env_step: int  # per task, agent steps (each = action_repeat control steps)
    embed_dim: int
    num_layers: int
    num_heads: int
    num_experts: int
    num_simulations: int
    num_sampled_actions: int  # K: actions sampled from the Gaussian policy at every MCTS node
    batch_size: int  # per task
    update_per_collect: Optional[int]  # learner steps per collection round; None: replay_ratio * transitions
    collector_env_num: int
    evaluator_env_num: int
    n_evaluator_episode: int
    game_segment_length: int
    num_unroll_steps: int  # >= 4: lightzero's per-step loss logging indexes the middle of the unroll
    infer_context: int
    eval_freq: int  # learner iterations between evaluations
    max_episode_steps: Optional[int]  # agent steps per episode; None: DMC's 1000 control steps
    replay_buffer_size: int
    checkpoint_freq: int
    torch_threads: Optional[int]  # intra-op CPU threads for a CPU run; None: torch's default
    dps_min_stage0_iters: int = 10_000  # --dps: train iterations before the first stage switch (docs/dps.md)
    dps_max_stage_iters: int = 5_000  # --dps: a stage ends after this many iterations at the latest


PRESETS: Dict[str, Preset] = {
    # End-to-end check of the whole pipeline (two tasks of different obs and action sizes) in about a minute.
    "smoke": Preset(tasks=("cartpole-swingup", "cheetah-run"), max_env_step=40, embed_dim=32, num_layers=1,
                    num_heads=2, num_experts=2, num_simulations=2, num_sampled_actions=3, batch_size=4,
                    update_per_collect=None, collector_env_num=1, evaluator_env_num=1, n_evaluator_episode=1,
                    game_segment_length=10, num_unroll_steps=4, infer_context=2, eval_freq=10, max_episode_steps=20,
                    replay_buffer_size=2000, checkpoint_freq=10, torch_threads=1, dps_min_stage0_iters=4,
                    dps_max_stage_iters=4),
    # A real (small) multi-task run on a 2-core CPU in about 30 minutes: three tasks of obs 5/8/17, actions 1/2/6.
    "cpu": Preset(tasks=("cartpole-swingup", "ball_in_cup-catch", "cheetah-run"), max_env_step=8000, embed_dim=64,
                  num_layers=2, num_heads=4, num_experts=4, num_simulations=8, num_sampled_actions=8, batch_size=16,
                  update_per_collect=None, collector_env_num=2, evaluator_env_num=1, n_evaluator_episode=1,
                  game_segment_length=50, num_unroll_steps=5, infer_context=2, eval_freq=500, max_episode_steps=None,
                  replay_buffer_size=100_000, checkpoint_freq=200, torch_threads=1, dps_min_stage0_iters=500,
                  dps_max_stage_iters=250),
    # Paper settings (ScaleZero, arXiv 2509.07945): DMC-18, 768-wide backbone, 50 simulations, K=20; total batch 512 over 18
    # tasks (28 per task), 200 updates per collection round, buffer 1e6.
    "dmc18": Preset(tasks=DMC18_TASKS, max_env_step=500_000, embed_dim=768, num_layers=4, num_heads=24,
                    num_experts=8, num_simulations=50, num_sampled_actions=20, batch_size=28, update_per_collect=200,
                    collector_env_num=8, evaluator_env_num=3, n_evaluator_episode=3, game_segment_length=100,
                    num_unroll_steps=5, infer_context=2, eval_freq=10_000, max_episode_steps=None,
                    replay_buffer_size=1_000_000, checkpoint_freq=10_000, torch_threads=None),
}


def task_dims(tasks: Sequence[str]) -> Tuple[List[int], List[int]]:
    """``(obs_dims, action_dims)`` of the tasks, read from their dm_control specs (DMC-18 or any other task)."""
    from lzero_ext.envs.dmc_env import DMCMultiTaskEnv

    envs = [DMCMultiTaskEnv(dict(env_id=t)) for t in tasks]
    return [env.observation_space.shape[0] for env in envs], [env.action_space.shape[0] for env in envs]


def build_configs(preset_name: str, *, tasks: Optional[Sequence[str]] = None, dense: bool = False,
                  exp_name: Optional[str] = None, cuda: Optional[bool] = None, dps: bool = False,
                  engine: Optional[str] = None, amp: Optional[str] = None,
                  compile: Optional[bool] = None) -> List[Tuple[EasyDict, EasyDict]]:
    """All tasks' config pairs for a preset (``tasks`` overrides the preset's task list; ``engine``, ``amp``
    and ``compile`` are :class:`RunConfig`'s, None: the policy's defaults)."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose from {sorted(PRESETS)}")
    preset = PRESETS[preset_name]
    tasks = list(tasks or preset.tasks)
    for env_id in tasks:
        resolve_task(env_id)  # a clear error for an unknown task, before anything starts
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be distinct, got {tasks}")
    cuda = torch.cuda.is_available() if cuda is None else cuda
    variant = ("dense" if dense else "moe") + ("_dps" if dps else "")
    run = run_config(preset, exp_name=exp_name or f"data_scalezero/dmc_{preset_name}_{variant}_{len(tasks)}tasks",
                     cuda=cuda, dense=dense, dps=dps, engine=engine, amp=amp, compile=compile)
    obs_dims, action_dims = task_dims(tasks)
    return build_task_configs(run, [task_spec(t, preset, obs_dim=o, action_dim=a)
                                    for t, o, a in zip(tasks, obs_dims, action_dims)])


def run_config(preset: Preset, *, exp_name: str, cuda: bool, dense: bool = False, dps: bool = False,
               engine: Optional[str] = None, amp: Optional[str] = None, compile: Optional[bool] = None) -> RunConfig:
    """The run-level settings of a DMC run at the preset's sizes (sampled search, Gaussian policy heads)."""
    return RunConfig(
        exp_name=exp_name, cuda=cuda,
        policy_type="sampled_scalezero", embed_dim=preset.embed_dim, num_layers=preset.num_layers,
        num_heads=preset.num_heads, dense=dense, num_experts=preset.num_experts,
        num_simulations=preset.num_simulations, num_unroll_steps=preset.num_unroll_steps,
        infer_context=preset.infer_context, discount_factor=0.99, game_segment_length=preset.game_segment_length,
        update_per_collect=preset.update_per_collect, eval_freq=preset.eval_freq,
        replay_buffer_size=preset.replay_buffer_size, engine=engine, amp=amp, compile=compile,
        # Dynamic Parameter Scaling (--dps): DMC targets and LoRA settings, iteration limits scaled per preset.
        dps=dict(enabled=dps, suite="dmc", min_stage0_iters=preset.dps_min_stage0_iters,
                 max_stage_iters=preset.dps_max_stage_iters),
        model_extras=dict(num_of_sampled_actions=preset.num_sampled_actions),
        # Gaussian policy heads, KL policy loss; the sampled search reads the unroll and simulations here too.
        world_model_extras=dict(sigma_type="conditioned", bound_type=None, policy_loss_type="kl",
                                policy_entropy_weight=5e-2, num_unroll_steps=preset.num_unroll_steps,
                                num_simulations=preset.num_simulations),
    )


def task_spec(env_id: str, preset: Preset, *, obs_dim: int, action_dim: int) -> TaskEnvSpec:
    """One DMC task at the preset's sizes: state observations of ``obs_dim``, ``action_dim`` continuous actions."""
    return TaskEnvSpec(env_type="dmc_scalezero", env_import_names=("lzero_ext.envs.dmc_env",),
                       env=dict(env_id=env_id, action_repeat=default_action_repeat(env_id),  # 4, pendulum 8 (the paper)
                                max_episode_steps=preset.max_episode_steps),
                       observation_shape=obs_dim, action_space_size=action_dim, obs_type="vector", continuous=True,
                       batch_size=preset.batch_size, collector_env_num=preset.collector_env_num,
                       evaluator_env_num=preset.evaluator_env_num, n_evaluator_episode=preset.n_evaluator_episode,
                       env_manager="subprocess" if preset.collector_env_num > 1 else "base")


def main(argv: Optional[Sequence[str]] = None) -> None:
    from lzero_ext.entry.cli import parse_scalezero_args, run_cli, scalezero_arg_parser

    parser = scalezero_arg_parser(__doc__, presets=PRESETS, default_preset="dmc18" if torch.cuda.is_available() else "cpu",
                                  task_flag="--tasks",
                                  task_help="override the preset's tasks, e.g. --tasks cartpole-swingup cheetah-run")
    args = parse_scalezero_args(parser, argv)
    preset = PRESETS[args.preset]
    # Small models: one thread per op was 5x faster than two on a busy 2-core CPU (eval step 370 ms -> 73 ms).
    run_cli(args, lambda **run_keys: build_configs(args.preset, tasks=args.tasks, dense=args.dense,
                                                   exp_name=args.exp_name, cuda=args.cuda, dps=args.dps, **run_keys),
            torch_threads=preset.torch_threads, max_env_step=args.max_env_step or preset.max_env_step,
            score_kind="dmc", checkpoint_freq=preset.checkpoint_freq)


if __name__ == "__main__":
    main()
