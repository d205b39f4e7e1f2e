"""ScaleZero on several Jericho text adventures with one model.

    python -m zoo.jericho.config.scalezero_jericho_multitask_config                 # `cpu` preset (or `jericho4` on a GPU)
    python -m zoo.jericho.config.scalezero_jericho_multitask_config --preset smoke  # about two minutes
    python -m zoo.jericho.config.scalezero_jericho_multitask_config --games detective zork1 --game-dir /data/jericho

Game files are not shipped: they are read from ``--game-dir``, else ``$SCALEZERO_JERICHO_DIR``, else
``../shared/jericho-games`` next to the repository. Observations are the game text (prefixed with
the valid actions) as token ids; one pretrained sentence encoder (all-MiniLM-L6-v2, frozen, with a
trained projection) encodes them for every game. An action is an index into the state's valid-action
list; all games share one action space padded to the largest count (detective 12, omniquest 25,
acorncourt 45, zork1 55) and masked per state. The reward is the change of the game score, and
the per-task table reports raw scores (ScaleZero paper: zork1 44.0, detective 280).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from easydict import EasyDict

from lzero_ext.entry.run_config import RunConfig, TaskEnvSpec, build_task_configs
from lzero_ext.envs.jericho_env import GAMES, check_game_known, game_dir, game_spec, resolve_game_file
from lzero_ext.envs.zmachine import check_story_file

JERICHO4: Tuple[str, ...] = ("detective", "omniquest", "acorncourt", "zork1")  # the ScaleZero paper


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
    batch_size: int  # per task
    collector_env_num: int
    evaluator_env_num: int
    n_evaluator_episode: int
    game_segment_length: int
    num_unroll_steps: int
    infer_context: int
    eval_freq: int  # learner iterations between evaluations
    max_steps: Optional[int]  # steps per episode; None: each game's default (the ScaleZero paper)
    max_seq_len: int  # tokens per observation
    replay_buffer_size: int
    checkpoint_freq: int
    dps_min_stage0_iters: int = 50_000  # --dps: train iterations before the first stage switch
    dps_max_stage_iters: int = 20_000  # --dps: a stage ends after this many iterations at the latest


PRESETS: Dict[str, Preset] = {
    # End-to-end check of the whole pipeline on two real games in about two minutes: one 12-step episode per game,
    # longer than a 10-step game segment, so segment padding is exercised too.
    "smoke": Preset(games=("detective", "omniquest"), max_env_step=12, embed_dim=32, num_layers=1, num_heads=2,
                    num_experts=2, num_simulations=2, batch_size=4, collector_env_num=1, evaluator_env_num=1,
                    n_evaluator_episode=1, game_segment_length=10, num_unroll_steps=4, infer_context=2, eval_freq=20,
                    max_steps=12, max_seq_len=64, replay_buffer_size=2000, checkpoint_freq=10,
                    dps_min_stage0_iters=4, dps_max_stage_iters=4),
    # A real (small) multi-task run on a 2-core CPU in about 30 minutes: ~1.5 s per env step (search, valid actions,
    # encoder) were measured on a busy 2-core machine; 900 collected + ~600 evaluation steps. acorncourt is left out:
    # each new state costs up to ~6 s of valid-action search there. Episodes are capped at 50 steps.
    "cpu": Preset(games=("detective", "omniquest", "zork1"), max_env_step=300, embed_dim=64, num_layers=2,
                  num_heads=4, num_experts=4, num_simulations=8, batch_size=16, collector_env_num=1,
                  evaluator_env_num=1, n_evaluator_episode=1, game_segment_length=20, num_unroll_steps=5,
                  infer_context=2, eval_freq=50, max_steps=50, max_seq_len=256, replay_buffer_size=100_000,
                  checkpoint_freq=50, dps_min_stage0_iters=100, dps_max_stage_iters=50),
    # The four ScaleZero games with the paper's backbone and search settings for Atari and each
    # game's own episode length; the paper gives no Jericho budget here, so the env-step budget is our choice.
    "jericho4": Preset(games=JERICHO4, max_env_step=500_000, embed_dim=768, num_layers=2, num_heads=8, num_experts=8,
                       num_simulations=50, batch_size=64, collector_env_num=4, evaluator_env_num=2,
                       n_evaluator_episode=2, game_segment_length=20, num_unroll_steps=10, infer_context=4,
                       eval_freq=10_000, max_steps=None, max_seq_len=512, replay_buffer_size=500_000,
                       checkpoint_freq=10_000),
}


def action_space_size(games: Sequence[str]) -> int:
    """The shared action-space width: the largest valid-action count of ``games`` (smaller games are masked)."""
    return max(game_spec(g).max_action_num for g in games)


def build_configs(preset_name: str, *, games: Optional[Sequence[str]] = None,
                  games_dir: Optional[Union[str, Path]] = None, dense: bool = False, exp_name: Optional[str] = None,
                  cuda: Optional[bool] = None, dps_targets: Optional[Dict[str, float]] = None,
                  engine: Optional[str] = None, amp: Optional[str] = None,
                  compile: Optional[bool] = None, allow_unknown_game: bool = False) -> List[Tuple[EasyDict, EasyDict]]:
    """All tasks' config pairs for a preset (``games`` overrides the preset's games; ``games_dir`` the game
    directory; ``dps_targets`` turns DPS on with these target scores; ``engine``, ``amp`` and ``compile`` are
    :class:`RunConfig`'s, None: the policy's defaults). Every game file is looked up first, so a
    missing one, or one whose checksum Jericho does not know (unless ``allow_unknown_game``: then a
    warning), is a clear error before anything starts."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose from {sorted(PRESETS)}")
    preset = PRESETS[preset_name]
    games = list(games or preset.games)
    if len(set(games)) != len(games):
        raise ValueError(f"games must be distinct, got {games}")
    unknown = [g for g in games if game_spec(g) is None]
    if unknown:  # story files without defaults would need max_action_num / max_steps: not offered on the CLI
        raise ValueError(f"no ScaleZero defaults for {unknown}: choose games from {sorted(GAMES)}")
    directory = str(game_dir(games_dir).resolve())  # absolute: subprocess envs may run elsewhere
    for game in games:
        check_story_file(resolve_game_file(game, directory))  # a clear error before anything starts
        check_game_known(resolve_game_file(game, directory), allow_unknown=allow_unknown_game)
    cuda = torch.cuda.is_available() if cuda is None else cuda
    exp_name = exp_name or f"data_scalezero/jericho_{preset_name}_{'dense' if dense else 'moe'}_{len(games)}games"
    if dps_targets is not None and set(dps_targets) != set(games):
        raise ValueError(f"--dps needs one --dps-target per game: missing {sorted(set(games) - set(dps_targets))}, "
                         f"unknown {sorted(set(dps_targets) - set(games))}")
    run = run_config(preset, exp_name=exp_name, cuda=cuda, dense=dense, dps_targets=dps_targets, engine=engine, amp=amp,
                     compile=compile)
    num_actions = action_space_size(games)
    return build_task_configs(run, [task_spec(g, preset, num_actions=num_actions, games_dir=directory,
                                              allow_unknown_game=allow_unknown_game) for g in games])


def run_config(preset: Preset, *, exp_name: str, cuda: bool, dense: bool = False,
               dps_targets: Optional[Dict[str, float]] = None, engine: Optional[str] = None, amp: Optional[str] = None,
               compile: Optional[bool] = None) -> RunConfig:
    """The run-level settings of a Jericho run at the preset's sizes (``dps_targets`` turns DPS on)."""
    return RunConfig(
        exp_name=exp_name, cuda=cuda, embed_dim=preset.embed_dim, num_layers=preset.num_layers,
        num_heads=preset.num_heads, dense=dense, num_experts=preset.num_experts, num_simulations=preset.num_simulations,
        num_unroll_steps=preset.num_unroll_steps, infer_context=preset.infer_context, discount_factor=0.99,
        game_segment_length=preset.game_segment_length, eval_freq=preset.eval_freq,
        replay_buffer_size=preset.replay_buffer_size, engine=engine, amp=amp, compile=compile,
        # Dynamic Parameter Scaling (--dps with --dps-target per game): no Jericho target table exists, so the
        # targets are the user's; LoRA settings as for Atari, iteration limits scaled per preset.
        dps=dict(enabled=dps_targets is not None, suite=None, num_stages=5, rank=64, alpha=32.0, dropout=0.1,
                 min_stage0_iters=preset.dps_min_stage0_iters, max_stage_iters=preset.dps_max_stage_iters,
                 targets=dps_targets),
        # MCTS visit counts cover the legal actions only, and those change every step: the buffer maps them back
        # to action indices with the stored masks.
        policy_extras=dict(action_type="varied_action_space"),
        world_model_extras=dict(text_encoder=dict(model_path=None, freeze=True),  # the env tokenizer's model
                                num_unroll_steps=preset.num_unroll_steps, num_simulations=preset.num_simulations),
    )


def task_spec(game: str, preset: Preset, *, num_actions: int, games_dir: str,
              allow_unknown_game: bool = False) -> TaskEnvSpec:
    """One game at the preset's sizes: token-id observations, ``num_actions`` (the shared, masked width) actions;
    ``allow_unknown_game``: the env accepts a story file Jericho does not know (with a warning)."""
    return TaskEnvSpec(env_type="jericho_scalezero", env_import_names=("lzero_ext.envs.jericho_env",),
                       env=dict(game=game, env_id=game,  # env_id: the task's name in logs and the summary table
                                game_dir=games_dir, action_space_size=num_actions, max_steps=preset.max_steps,
                                max_seq_len=preset.max_seq_len, allow_unknown_game=allow_unknown_game),
                       observation_shape=preset.max_seq_len, action_space_size=num_actions, obs_type="text",
                       batch_size=preset.batch_size, collector_env_num=preset.collector_env_num,
                       evaluator_env_num=preset.evaluator_env_num, n_evaluator_episode=preset.n_evaluator_episode,
                       env_manager="subprocess" if preset.collector_env_num > 1 else "base")


def parse_targets(pairs: Sequence[str]) -> Dict[str, float]:
    """``['detective=100', 'zork1=20']`` -> ``{'detective': 100.0, 'zork1': 20.0}`` (clear error otherwise)."""
    targets = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            targets[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise ValueError(f"--dps-target takes GAME=SCORE, got {pair!r}")
    return targets


def main(argv: Optional[Sequence[str]] = None) -> None:
    from lzero_ext.entry.cli import parse_scalezero_args, run_cli, scalezero_arg_parser

    parser = scalezero_arg_parser(__doc__, presets=PRESETS, default_preset="jericho4" if torch.cuda.is_available() else "cpu",
                                  task_flag="--games", task_help=f"override the preset's games (from {sorted(GAMES)})")
    parser.add_argument("--game-dir", type=Path,
                        help="directory of the game files (default: $SCALEZERO_JERICHO_DIR, else ../shared/jericho-games)")
    parser.add_argument("--allow-unknown-game", action="store_true",
                        help="train on a story file whose checksum Jericho does not know (it turns scoring and valid "
                             "actions off for such files), with a warning, instead of refusing it")
    parser.add_argument("--dps-target", nargs="+", default=[], metavar="GAME=SCORE",
                        help="with --dps: the score that counts each game as solved (Jericho has no target table)")
    args = parse_scalezero_args(parser, argv)
    if args.dps and not args.dps_target:
        parser.error("--dps on Jericho needs --dps-target GAME=SCORE for every game (there is no target table)")
    preset = PRESETS[args.preset]
    run_cli(args, lambda **run_keys: build_configs(args.preset, games=args.tasks, games_dir=args.game_dir,
                                                   dense=args.dense, exp_name=args.exp_name, cuda=args.cuda,
                                                   dps_targets=parse_targets(args.dps_target) if args.dps else None,
                                                   allow_unknown_game=args.allow_unknown_game, **run_keys),
            max_env_step=args.max_env_step or preset.max_env_step, score_kind="raw", checkpoint_freq=preset.checkpoint_freq)


if __name__ == "__main__":
    main()
