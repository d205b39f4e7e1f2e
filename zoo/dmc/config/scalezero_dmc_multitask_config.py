"""ScaleZero on several DeepMind Control tasks (state observations, continuous actions) with one model.

    python -m zoo.dmc.config.scalezero_dmc_multitask_config                 # `cpu` preset (or `dmc18` on a GPU)
    python -m zoo.dmc.config.scalezero_dmc_multitask_config --preset smoke  # about 10 s
    python -m zoo.dmc.config.scalezero_dmc_multitask_config --preset cpu --tasks cartpole-swingup walker-walk
    python -m lzero_ext.launch --nproc_per_node 2 -m zoo.dmc.config.scalezero_dmc_multitask_config --preset dmc18

Policy ``sampled_scalezero``: per-task MLP encoders (observation sizes differ), a shared latent
LayerNorm, per-task action embeddings and Gaussian policy heads (action sizes differ), one shared
MoE transformer, and lightzero's sampled C++ MCTS with K sampled actions per node (the ScaleZero paper).
Every run prints a per-task table (env steps, latest eval return, return/1000) with mean and median
and writes ``summary.json`` and ``learning_curves.png`` into the experiment directory.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from lzero_ext.entry.run_config import TaskEnvSpec
from lzero_ext.entry.suite import Suite, SuitePreset
from lzero_ext.envs.dmc_tasks import DMC18, default_action_repeat, resolve_task

DMC18_TASKS: Tuple[str, ...] = tuple(DMC18)  # the ScaleZero paper


@dataclass(frozen=True, kw_only=True)
class Preset(SuitePreset):
    """A DMC preset: :class:`SuitePreset`'s sizes (env steps count agent steps, each = action_repeat control
    steps), the sampled search's K and the episode cap."""

    num_sampled_actions: int  # K: actions sampled from the Gaussian policy at every MCTS node
    max_episode_steps: Optional[int]  # agent steps per episode; None: DMC's 1000 control steps
    dps_min_stage0_iters: int = 10_000  # --dps: train iterations before the first stage switch (docs/dps.md)
    dps_max_stage_iters: int = 5_000  # --dps: a stage ends after this many iterations at the latest


# Small models: one thread per op was 5x faster than two on a busy 2-core CPU (eval step 370 ms -> 73 ms).
PRESETS: Dict[str, Preset] = {
    # End-to-end check of the whole pipeline (two tasks of different obs and action sizes) in about half a minute.
    "smoke": Preset(tasks=("cartpole-swingup", "cheetah-run"), max_env_step=40, embed_dim=32, num_layers=1,
                    num_heads=2, num_experts=2, num_simulations=2, num_sampled_actions=3, batch_size=4,
                    collector_env_num=1, evaluator_env_num=1, n_evaluator_episode=1,
                    game_segment_length=10, num_unroll_steps=4, infer_context=2, eval_freq=10, max_episode_steps=20,
                    replay_buffer_size=2000, checkpoint_freq=10, torch_threads=1, dps_min_stage0_iters=4,
                    dps_max_stage_iters=4,
                    eval_env_step_fractions=(), final_eval_episodes=None),  # the baseline and the final evaluation
    # A real (small) multi-task run on a 2-core CPU in about 30 minutes: three tasks of obs 5/8/17, actions 1/2/6.
    "cpu": Preset(tasks=("cartpole-swingup", "ball_in_cup-catch", "cheetah-run"), max_env_step=8000, embed_dim=64,
                  num_layers=2, num_heads=4, num_experts=4, num_simulations=8, num_sampled_actions=8, batch_size=16,
                  collector_env_num=2, evaluator_env_num=5, n_evaluator_episode=5,
                  game_segment_length=50, num_unroll_steps=5, infer_context=2, eval_freq=500, max_episode_steps=None,
                  replay_buffer_size=100_000, checkpoint_freq=200, torch_threads=1, dps_min_stage0_iters=500,
                  dps_max_stage_iters=250, learn_threads=2),  # learner steps 1.1x faster on a second core
    # Paper settings (ScaleZero, arXiv 2509.07945): DMC-18, 768-wide backbone, 50 simulations, K=20; total batch 512 over 18
    # tasks (28 per task), 200 updates per collection round, buffer 1e6.
    "dmc18": Preset(tasks=DMC18_TASKS, max_env_step=500_000, embed_dim=768, num_layers=4, num_heads=24,
                    num_experts=8, num_simulations=50, num_sampled_actions=20, batch_size=28, update_per_collect=200,
                    collector_env_num=8, evaluator_env_num=5, n_evaluator_episode=5, game_segment_length=100,
                    num_unroll_steps=5, infer_context=2, eval_freq=10_000, max_episode_steps=None,
                    replay_buffer_size=1_000_000, checkpoint_freq=10_000),
}


def task_dims(tasks: Sequence[str]) -> Tuple[List[int], List[int]]:
    """``(obs_dims, action_dims)`` of the tasks, read from their dm_control specs (DMC-18 or any other task)."""
    from lzero_ext.envs.dmc_env import DMCMultiTaskEnv

    envs = [DMCMultiTaskEnv(dict(env_id=t)) for t in tasks]
    return [env.observation_space.shape[0] for env in envs], [env.action_space.shape[0] for env in envs]


def run_fields(preset: Preset, cuda: bool) -> Dict[str, Any]:
    """DMC's RunConfig fields: sampled search with K actions, Gaussian policy heads, KL policy loss."""
    return dict(policy_type="sampled_scalezero", discount_factor=0.99,
                model_extras=dict(num_of_sampled_actions=preset.num_sampled_actions),
                # the sampled search reads the unroll and simulations here too
                world_model_extras=dict(sigma_type="conditioned", bound_type=None, policy_loss_type="kl",
                                        policy_entropy_weight=5e-2, num_unroll_steps=preset.num_unroll_steps,
                                        num_simulations=preset.num_simulations))


def task_spec(env_id: str, preset: Preset, *, obs_dim: int, action_dim: int) -> TaskEnvSpec:
    """One DMC task at the preset's sizes: state observations of ``obs_dim``, ``action_dim`` continuous actions."""
    return TaskEnvSpec(env_type="dmc_scalezero", env_import_names=("lzero_ext.envs.dmc_env",),
                       env=dict(env_id=env_id, action_repeat=default_action_repeat(env_id),  # 4, pendulum 8 (the paper)
                                max_episode_steps=preset.max_episode_steps),
                       observation_shape=obs_dim, action_space_size=action_dim, obs_type="vector", continuous=True,
                       **preset.task_sizes())


def task_specs(preset: Preset, tasks: Sequence[str]) -> List[TaskEnvSpec]:
    for env_id in tasks:
        resolve_task(env_id)  # a clear error for an unknown task, before anything starts
    obs_dims, action_dims = task_dims(tasks)
    return [task_spec(t, preset, obs_dim=o, action_dim=a) for t, o, a in zip(tasks, obs_dims, action_dims)]


SUITE = Suite(name="dmc", doc=__doc__, presets=PRESETS, gpu_preset="dmc18", task_flag="--tasks",
              task_help="override the preset's tasks, e.g. --tasks cartpole-swingup cheetah-run", score_kind="dmc",
              run_fields=run_fields, task_specs=task_specs,
              dps=dict(suite="dmc"))  # DMC targets and LoRA settings (docs/dps.md)
build_configs, run_config, main = SUITE.build_configs, SUITE.run_config, SUITE.main

if __name__ == "__main__":
    main()
