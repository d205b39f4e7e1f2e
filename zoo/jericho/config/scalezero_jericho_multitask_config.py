"""ScaleZero on several Jericho text adventures with one model.

    python -m zoo.jericho.config.scalezero_jericho_multitask_config                 # `cpu` preset (or `jericho4` on a GPU)
    python -m zoo.jericho.config.scalezero_jericho_multitask_config --preset smoke  # about 20 s
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
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from lzero_ext.entry.run_config import TaskEnvSpec
from lzero_ext.entry.suite import Suite, SuiteFlag, SuitePreset
from lzero_ext.envs.jericho_env import GAMES, check_game_known, game_dir, game_spec, resolve_game_file
from lzero_ext.envs.zmachine import check_story_file

JERICHO4: Tuple[str, ...] = ("detective", "omniquest", "acorncourt", "zork1")  # the ScaleZero paper


@dataclass(frozen=True, kw_only=True)
class Preset(SuitePreset):
    """A Jericho preset: :class:`SuitePreset`'s sizes, the episode cap and the tokens per observation."""

    max_steps: Optional[int]  # steps per episode; None: each game's default (the ScaleZero paper)
    max_seq_len: int  # tokens per observation


PRESETS: Dict[str, Preset] = {
    # End-to-end check of the whole pipeline on two real games in under a minute: one 12-step episode per game,
    # longer than a 10-step game segment, so segment padding is exercised too.
    "smoke": Preset(tasks=("detective", "omniquest"), max_env_step=12, embed_dim=32, num_layers=1, num_heads=2,
                    num_experts=2, num_simulations=2, batch_size=4, collector_env_num=1, evaluator_env_num=1,
                    n_evaluator_episode=1, game_segment_length=10, num_unroll_steps=4, infer_context=2, eval_freq=20,
                    max_steps=12, max_seq_len=64, replay_buffer_size=2000, checkpoint_freq=10,
                    dps_min_stage0_iters=4, dps_max_stage_iters=4,
                    eval_env_step_fractions=(), final_eval_episodes=None),  # the baseline and the final evaluation
    # A real (small) multi-task run on a 2-core CPU in about 30 minutes: ~1.5 s per env step (search, valid actions,
    # encoder) were measured on a busy 2-core machine; 900 collected + ~600 evaluation steps. acorncourt is left out:
    # each new state costs up to ~6 s of valid-action search there. Episodes are capped at 50 steps.
    "cpu": Preset(tasks=("detective", "omniquest", "zork1"), max_env_step=300, embed_dim=64, num_layers=2,
                  num_heads=4, num_experts=4, num_simulations=8, batch_size=16, collector_env_num=1,
                  evaluator_env_num=5, n_evaluator_episode=5, game_segment_length=20, num_unroll_steps=5,
                  infer_context=2, eval_freq=50, max_steps=50, max_seq_len=256, replay_buffer_size=100_000,
                  checkpoint_freq=50, dps_min_stage0_iters=100, dps_max_stage_iters=50),
    # The four ScaleZero games with the paper's backbone and search settings for Atari and each
    # game's own episode length; the paper gives no Jericho budget here, so the env-step budget is our choice.
    "jericho4": Preset(tasks=JERICHO4, max_env_step=500_000, embed_dim=768, num_layers=2, num_heads=8, num_experts=8,
                       num_simulations=50, batch_size=64, collector_env_num=4, evaluator_env_num=5,
                       n_evaluator_episode=5, game_segment_length=20, num_unroll_steps=10, infer_context=4,
                       eval_freq=10_000, max_steps=None, max_seq_len=512, replay_buffer_size=500_000,
                       checkpoint_freq=10_000),
}


def action_space_size(games: Sequence[str]) -> int:
    """The shared action-space width: the largest valid-action count of ``games`` (smaller games are masked)."""
    return max(game_spec(g).max_action_num for g in games)


def run_fields(preset: Preset, cuda: bool) -> Dict[str, Any]:
    """Jericho's RunConfig fields: masked varied action spaces and the frozen text encoder."""
    return dict(discount_factor=0.99,
                # MCTS visit counts cover the legal actions only, and those change every step: the buffer maps them
                # back to action indices with the stored masks.
                policy_extras=dict(action_type="varied_action_space"),
                world_model_extras=dict(text_encoder=dict(model_path=None, freeze=True),  # the env tokenizer's model
                                        num_unroll_steps=preset.num_unroll_steps,
                                        num_simulations=preset.num_simulations))


def task_spec(game: str, preset: Preset, *, num_actions: int, games_dir: str,
              allow_unknown_game: bool = False) -> TaskEnvSpec:
    """One game at the preset's sizes: token-id observations, ``num_actions`` (the shared, masked width) actions;
    ``allow_unknown_game``: the env accepts a story file Jericho does not know (with a warning)."""
    return TaskEnvSpec(env_type="jericho_scalezero", env_import_names=("lzero_ext.envs.jericho_env",),
                       env=dict(game=game, env_id=game,  # env_id: the task's name in logs and the summary table
                                game_dir=games_dir, action_space_size=num_actions, max_steps=preset.max_steps,
                                max_seq_len=preset.max_seq_len, allow_unknown_game=allow_unknown_game),
                       observation_shape=preset.max_seq_len, action_space_size=num_actions, obs_type="text",
                       **preset.task_sizes())


def task_specs(preset: Preset, games: Sequence[str], *, games_dir: Optional[Union[str, Path]] = None,
               allow_unknown_game: bool = False) -> List[TaskEnvSpec]:
    """Every game's spec; each game file is looked up first, so a missing one, or one whose checksum Jericho does not
    know (unless ``allow_unknown_game``: then a warning), is a clear error before anything starts."""
    unknown = [g for g in games if game_spec(g) is None]
    if unknown:  # story files without defaults would need max_action_num / max_steps: not offered on the CLI
        raise ValueError(f"no ScaleZero defaults for {unknown}: choose games from {sorted(GAMES)}")
    directory = str(game_dir(games_dir).resolve())  # absolute: subprocess envs may run elsewhere
    for game in games:
        check_story_file(resolve_game_file(game, directory))
        check_game_known(resolve_game_file(game, directory), allow_unknown=allow_unknown_game)
    num_actions = action_space_size(games)
    return [task_spec(g, preset, num_actions=num_actions, games_dir=directory, allow_unknown_game=allow_unknown_game)
            for g in games]


SUITE = Suite(
    name="jericho", doc=__doc__, presets=PRESETS, gpu_preset="jericho4", task_flag="--games",
    task_help=f"override the preset's games (from {sorted(GAMES)})", score_kind="raw",
    run_fields=run_fields, task_specs=task_specs,
    # No Jericho target table: the targets are the user's (--dps-target); LoRA settings as for Atari.
    dps=dict(suite=None, num_stages=5, rank=64, alpha=32.0, dropout=0.1), needs_dps_targets=True,
    flags=(SuiteFlag("--game-dir", "games_dir", dict(
               type=Path, metavar="GAME_DIR",
               help="directory of the game files (default: $SCALEZERO_JERICHO_DIR, else ../shared/jericho-games)")),
           SuiteFlag("--allow-unknown-game", "allow_unknown_game", dict(
               action="store_true", help="train on a story file whose checksum Jericho does not know (it turns scoring "
               "and valid actions off for such files), with a warning, instead of refusing it"))),
)
build_configs, run_config, main = SUITE.build_configs, SUITE.run_config, SUITE.main

if __name__ == "__main__":
    main()
