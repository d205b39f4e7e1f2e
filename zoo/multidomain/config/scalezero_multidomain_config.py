"""ScaleZero on Atari, DMControl, MinAtar and Jericho tasks together: one model for every domain.

    python -m zoo.multidomain.config.scalezero_multidomain_config                 # `cpu` preset (`full` on a GPU)
    python -m zoo.multidomain.config.scalezero_multidomain_config --preset smoke  # one task per domain
    python -m zoo.multidomain.config.scalezero_multidomain_config --tasks atari:Pong dmc:cartpole-swingup minatar:Breakout

A task is ``<domain>:<name>`` with each domain's own names (docs/presets.md). One MoE transformer serves them all
(docs/architecture.md, "Several domains in one model"): Atari's 64x64 RGB frames and MinAtar's 10x10 grids each get
a shared image encoder, every DMC task its own state MLP, Jericho's text the frozen MiniLM encoder, each into the
same latent width. Discrete tasks (Atari, MinAtar, Jericho) share one action space padded to the widest and
masked per task, searched by lightzero's UniZero tree; DMC tasks keep their own action dims, Gaussian heads and
the sampled tree. The summary table groups tasks by domain, each with its own score (HNS, return/1000, raw).
Jericho's game files are read from ``--game-dir`` (as the Jericho zoo config).
"""
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from lzero_ext.entry.run_config import TaskEnvSpec
from lzero_ext.entry.suite import Suite, SuiteFlag, SuitePreset

DOMAINS = ("atari", "dmc", "minatar", "jericho")
SCORE_KINDS = {"atari": "atari", "dmc": "dmc", "minatar": "raw", "jericho": "raw"}


@dataclass(frozen=True, kw_only=True)
class Preset(SuitePreset):
    """A multi-domain preset: :class:`SuitePreset`'s sizes (env counts and batch per task) and each domain's caps."""

    atari_episode_frames: int  # Atari emulator frames per episode
    dmc_episode_steps: Optional[int]  # DMC agent steps per episode; None: 1000 control steps
    num_sampled_actions: int  # K of the sampled search (DMC)
    minatar_episode_steps: int  # MinAtar steps per episode
    jericho_max_steps: Optional[int]  # Jericho steps per episode; None: each game's default
    max_seq_len: int  # Jericho tokens per observation


PRESETS: Dict[str, Preset] = {
    # One task per domain end to end in under two minutes; scores mean nothing.
    "smoke": Preset(tasks=("atari:Pong", "dmc:cartpole-swingup", "minatar:Breakout", "jericho:detective"),
                    max_env_step=24, embed_dim=32, num_layers=1, num_heads=2, num_experts=2, num_simulations=2,
                    batch_size=4, collector_env_num=1, evaluator_env_num=1, n_evaluator_episode=1,
                    game_segment_length=12, num_unroll_steps=4, infer_context=2, eval_freq=20, replay_buffer_size=2000,
                    checkpoint_freq=10, atari_episode_frames=200, dmc_episode_steps=20, num_sampled_actions=3,
                    minatar_episode_steps=30, jericho_max_steps=12, max_seq_len=64,
                    torch_threads=1, dps_min_stage0_iters=4, dps_max_stage_iters=4,
                    eval_env_step_fractions=(), final_eval_episodes=None),
    # Seven tasks of four domains on a 2-core CPU (docs/presets.md gives its measured time).
    "cpu": Preset(tasks=("atari:Pong", "atari:MsPacman", "dmc:cartpole-swingup", "dmc:ball_in_cup-catch",
                         "minatar:Breakout", "minatar:SpaceInvaders", "jericho:detective"),
                  max_env_step=2000, embed_dim=64, num_layers=2, num_heads=4, num_experts=4, num_simulations=8,
                  batch_size=8, collector_env_num=2, evaluator_env_num=5, n_evaluator_episode=5,
                  game_segment_length=20, num_unroll_steps=5, infer_context=2, eval_freq=200,
                  replay_buffer_size=100_000, checkpoint_freq=200, atari_episode_frames=4000, dmc_episode_steps=None,
                  num_sampled_actions=8, minatar_episode_steps=500, jericho_max_steps=50, max_seq_len=256,
                  torch_threads=1, dps_min_stage0_iters=300, dps_max_stage_iters=150,
                  learn_threads=2,  # the learner's step over all seven tasks' rows: 1.7x faster on a second core
                  eval_env_step_fractions=(0.5,), final_eval_episodes=10),  # 3 evaluations: 7 tasks' episodes cost
    # The paper's three benchmarks' task sets in one model, for GPUs: Atari-8, DMC-18, Jericho-4, and MinAtar's five.
    "full": Preset(tasks=tuple([f"atari:{g}" for g in ("Pong", "MsPacman", "Seaquest", "Boxing", "Alien",
                                                       "ChopperCommand", "Hero", "RoadRunner")]
                               + [f"dmc:{t}" for t in ("acrobot-swingup", "cartpole-balance", "cartpole-balance_sparse",
                                                       "cartpole-swingup", "cartpole-swingup_sparse", "cheetah-run",
                                                       "ball_in_cup-catch", "finger-spin", "finger-turn_easy",
                                                       "finger-turn_hard", "hopper-hop", "hopper-stand",
                                                       "pendulum-swingup", "reacher-easy", "reacher-hard", "walker-run",
                                                       "walker-stand", "walker-walk")]
                               + [f"minatar:{g}" for g in ("Asterix", "Breakout", "Freeway", "Seaquest",
                                                           "SpaceInvaders")]
                               + [f"jericho:{g}" for g in ("detective", "omniquest", "acorncourt", "zork1")]),
                   max_env_step=400_000, embed_dim=768, num_layers=4, num_heads=24, num_experts=8, num_simulations=50,
                   batch_size=32, collector_env_num=8, evaluator_env_num=5, n_evaluator_episode=5,
                   game_segment_length=20, num_unroll_steps=10, infer_context=4, eval_freq=10_000,
                   replay_buffer_size=500_000, checkpoint_freq=10_000, atari_episode_frames=108_000,
                   dmc_episode_steps=None, num_sampled_actions=20, minatar_episode_steps=10_000,
                   jericho_max_steps=None, max_seq_len=512),
}


def parse_task(task: str) -> Tuple[str, str]:
    """``'atari:Pong'`` -> ``('atari', 'Pong')``; a clear error for a missing or unknown domain."""
    domain, sep, name = task.partition(":")
    if not sep or domain not in DOMAINS or not name:
        raise ValueError(f"task {task!r}: write <domain>:<name> with a domain from {list(DOMAINS)}, "
                         f"e.g. atari:Pong, dmc:cartpole-swingup, minatar:Breakout, jericho:detective")
    return domain, name


def tasks_by_domain(tasks: Sequence[str]) -> Dict[str, List[str]]:
    """``<domain>:<name>`` tasks grouped by domain, in order of first appearance (each domain's own run)."""
    groups: Dict[str, List[str]] = {}
    for task in tasks:
        groups.setdefault(parse_task(task)[0], []).append(task)
    return groups


def run_fields(preset: Preset, cuda: bool) -> Dict[str, Any]:
    """The run-level keys every domain's tasks share: one discount, the sampled search's policy settings (used by the
    continuous tasks only) and the text encoder (text tasks only). The image encoders keep lightzero's 64 channels
    (its 64x64 encoder is sized for them) and downsample where lightzero's encoder can (Atari, not MinAtar's grids)."""
    return dict(discount_factor=0.99, model_extras=dict(frame_stack_num=1, downsample=True, norm_type="LN"),
                world_model_extras=dict(sigma_type="conditioned", bound_type=None, policy_loss_type="kl",
                                        policy_entropy_weight=5e-3, num_unroll_steps=preset.num_unroll_steps,
                                        num_simulations=preset.num_simulations,
                                        text_encoder=dict(model_path=None, freeze=True),
                                        encoder_max_batch=None if cuda else 192))


def _domain_preset(preset: Preset, **caps: Any) -> SimpleNamespace:
    """What a domain's own ``task_spec`` reads of its preset: the shared sizes and that domain's caps."""
    return SimpleNamespace(task_sizes=preset.task_sizes, **caps)


def _atari(game: str, preset: Preset, width: int) -> TaskEnvSpec:
    from lzero_ext.envs.atari_games import resolve_game
    from zoo.atari.config.scalezero_multitask_config import task_spec

    resolve_game(game)
    spec = task_spec(game, _domain_preset(preset, max_episode_frames=preset.atari_episode_frames))
    return dataclasses.replace(spec, env={**spec.env, "action_space_size": width}, action_space_size=width,
                               model_extras=dict(image_channel=3))


def _minatar(game: str, preset: Preset, width: int) -> TaskEnvSpec:
    from lzero_ext.envs.minatar_env import game_name
    from zoo.minatar.config.scalezero_minatar_multitask_config import task_spec

    spec = task_spec(game_name(game), _domain_preset(preset, max_episode_steps=preset.minatar_episode_steps,
                                                     minimal_action_set=False),
                     action_space_size=width)
    # env id 'MinAtar/<Game>-v1': its own name beside Atari's game of the same name (Breakout, Seaquest, ...)
    return dataclasses.replace(spec, env={**spec.env, "env_id": f"MinAtar/{game_name(game)}-v1"},
                               action_space_size=width, model_extras=dict(image_channel=spec.observation_shape[0]),
                               policy_extras=dict(action_type="varied_action_space"))  # 6 of the width are legal


def _dmc(tasks: Sequence[str], preset: Preset) -> List[TaskEnvSpec]:
    from lzero_ext.envs.dmc_tasks import resolve_task
    from zoo.dmc.config.scalezero_dmc_multitask_config import task_dims, task_spec

    for task in tasks:
        resolve_task(task)
    obs_dims, action_dims = task_dims(tasks)
    view = _domain_preset(preset, max_episode_steps=preset.dmc_episode_steps)
    return [dataclasses.replace(task_spec(t, view, obs_dim=o, action_dim=a),
                                model_extras=dict(num_of_sampled_actions=preset.num_sampled_actions))
            for t, o, a in zip(tasks, obs_dims, action_dims)]


def _jericho(games: Sequence[str], preset: Preset, width: int, games_dir: Optional[Union[str, Path]]) -> List[TaskEnvSpec]:
    from zoo.jericho.config.scalezero_jericho_multitask_config import task_specs

    view = _domain_preset(preset, max_steps=preset.jericho_max_steps, max_seq_len=preset.max_seq_len)
    specs = task_specs(view, games, games_dir=games_dir)  # checks every game file first
    return [dataclasses.replace(spec, env={**spec.env, "action_space_size": width}, action_space_size=width,
                                policy_extras=dict(action_type="varied_action_space")) for spec in specs]


def discrete_width(by_domain: Dict[str, List[str]]) -> int:
    """The one action space of the discrete tasks: Atari's 18, MinAtar's 6, the largest Jericho game's count."""
    from lzero_ext.envs.jericho_env import game_spec
    from zoo.atari.config.scalezero_multitask_config import NUM_ACTIONS as ATARI_ACTIONS
    from zoo.minatar.config.scalezero_minatar_multitask_config import NUM_ACTIONS as MINATAR_ACTIONS

    widths = [ATARI_ACTIONS] * bool(by_domain["atari"]) + [MINATAR_ACTIONS] * bool(by_domain["minatar"])
    widths += [game_spec(g).max_action_num for g in by_domain["jericho"] if game_spec(g) is not None]
    return max(widths, default=MINATAR_ACTIONS)


def task_specs(preset: Preset, tasks: Sequence[str], *, games_dir: Optional[Union[str, Path]] = None) -> List[TaskEnvSpec]:
    """Every ``<domain>:<name>`` task's spec, in the given order, each marked with its domain and score."""
    parsed = [parse_task(t) for t in tasks]
    by_domain: Dict[str, List[str]] = {d: [n for domain, n in parsed if domain == d] for d in DOMAINS}
    width = discrete_width(by_domain)
    built: Dict[Tuple[str, str], TaskEnvSpec] = {}
    built.update({("dmc", t): s for t, s in zip(by_domain["dmc"], _dmc(by_domain["dmc"], preset))})
    if by_domain["jericho"]:
        built.update({("jericho", g): s for g, s in zip(by_domain["jericho"],
                                                        _jericho(by_domain["jericho"], preset, width, games_dir))})
    for domain, name in parsed:
        if domain == "atari":
            built[(domain, name)] = _atari(name, preset, width)
        elif domain == "minatar":
            built[(domain, name)] = _minatar(name, preset, width)
    return [dataclasses.replace(built[key], domain=key[0], score_kind=SCORE_KINDS[key[0]]) for key in parsed]


def _dps_targets() -> Dict[str, float]:
    """DPS targets of every domain's table, by the task names of this suite (MinAtar's as 'MinAtar-<Game>-v1')."""
    from lzero_ext.dps.controller import ATARI_DPS_TARGETS, DMC_DPS_TARGETS
    from lzero_ext.envs.minatar_scores import DPS_TARGETS as MINATAR_DPS_TARGETS

    minatar = {f"MinAtar-{game}-v1": target for game, target in MINATAR_DPS_TARGETS.items()}
    return {**ATARI_DPS_TARGETS, **DMC_DPS_TARGETS, **minatar}


SUITE = Suite(
    name="multidomain", doc=__doc__, presets=PRESETS, gpu_preset="full", task_flag="--tasks",
    task_help=f"override the preset's tasks as <domain>:<name>, domains {list(DOMAINS)}", score_kind="raw",
    run_fields=run_fields, task_specs=task_specs,
    # Each domain's own targets (Jericho has no table: --dps refuses a Jericho task); small adapters, as MinAtar's.
    dps=dict(suite=None, num_stages=3, rank=8, alpha=8.0, dropout=0.0, targets=_dps_targets()),
    flags=(SuiteFlag("--game-dir", "games_dir", dict(
        type=Path, metavar="GAME_DIR",
        help="directory of the Jericho game files (default: $SCALEZERO_JERICHO_DIR, else ../shared/jericho-games)")),),
)
build_configs, run_config, main = SUITE.build_configs, SUITE.run_config, SUITE.main

if __name__ == "__main__":
    main()
