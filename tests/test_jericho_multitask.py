"""ScaleZero on Jericho games end to end (tiny budgets), the zoo config, and the CLI's errors."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lzero_ext.registry  # noqa: F401  (registers envs, models, policies)
from lzero_ext.entry import train_scalezero
from lzero_ext.envs.jericho_env import GAME_DIR_ENV_VAR, game_dir
from lzero_ext.model.text_encoder import TextEncoder
from zoo.jericho.config.scalezero_jericho_multitask_config import PRESETS, build_configs

REPO = Path(__file__).resolve().parents[1]
SMOKE = PRESETS["smoke"]
needs_games = pytest.mark.skipif(
    not all((game_dir() / f"{g}.z5").is_file() for g in SMOKE.tasks),
    reason=f"Jericho game files {list(SMOKE.tasks)} not found in {game_dir()} (set ${GAME_DIR_ENV_VAR})")


def _tiny_configs(tmp_path: Path, *, max_steps: int = 4, seq_len: int = 32):
    """The smoke preset with 4-step episodes and 32-token observations."""
    configs = build_configs("smoke", exp_name=str(tmp_path / "exp"), cuda=False)
    for main, _ in configs:
        main.env.max_steps, main.env.max_seq_len = max_steps, seq_len
        main.policy.model.observation_shape = seq_len
    return configs


def _check_run(tmp_path: Path, result, games) -> None:
    summary = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert summary["kind"] == "raw" and [row["name"] for row in summary["tasks"]] == list(games)
    for row in summary["tasks"]:
        assert row["env_steps"] > 0 and math.isfinite(row["eval_return"])
    assert (tmp_path / "exp" / "learning_curves.png").stat().st_size > 1000
    assert result.train_iter >= 1
    for task_id in range(len(games)):
        assert math.isfinite(result.last_learn_log[f"task{task_id}/loss_total"])
    encoder = result.policy._learn_model.representation_network.body
    assert not any(p.requires_grad for p in encoder.pretrained.parameters())  # frozen MiniLM, trained projection


@needs_games
def test_tiny_run_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = train_scalezero(_tiny_configs(tmp_path), max_env_step=8, max_train_iter=2, exp_name=str(tmp_path / "exp"),
                             score_kind="raw", checkpoint_freq=100, progress=False)
    _check_run(tmp_path, result, SMOKE.tasks)

    # The frozen MiniLM stays the installed one in both models (the target update skips it, and lightzero's
    # init_weights pass must not re-initialise it).
    fresh = TextEncoder(32).pretrained.state_dict()
    for model in (result.policy._learn_model, result.policy._target_model):
        weights = model.representation_network.body.pretrained.state_dict()
        assert all(torch.equal(fresh[k], v) for k, v in weights.items())
    # Checkpoints leave the frozen MiniLM out (it comes from text_encoder.model_path); resume puts it back.
    from lzero_ext.checkpoint import load_checkpoint

    ckpt_dir = tmp_path / "exp" / "ckpt" / "rank0"
    size_mb = sum(f.stat().st_size for f in ckpt_dir.rglob("*") if f.is_file()) / 2 ** 20
    assert size_mb < 40, f"checkpoint {size_mb:.0f} MB: the frozen pretrained encoder was saved"
    state = load_checkpoint(ckpt_dir)["policy"]
    assert not [k for k in (*state["model"], *state["target_model"]) if ".pretrained." in k]
    assert any(".projection." in k for k in state["model"])  # the trained projection is saved
    resumed = train_scalezero(_tiny_configs(tmp_path), max_env_step=16, max_train_iter=3, exp_name=str(tmp_path / "exp"),
                              score_kind="raw", checkpoint_freq=100, resume=True, progress=False)
    assert resumed.train_iter >= 2  # continued from the checkpoint
    for model in (resumed.policy._learn_model, resumed.policy._target_model):
        weights = model.representation_network.body.pretrained.state_dict()
        assert all(torch.equal(fresh[k], v) for k, v in weights.items())

    # Watching: Jericho has no picture, so evaluate --video writes a transcript, named as one.
    from lzero_ext.evaluate import evaluate_run

    results = evaluate_run(str(tmp_path / "exp"), video_dir=str(tmp_path / "videos"), device="cpu")
    for game, evaluated in zip(SMOKE.tasks, results):
        assert evaluated.video == str(tmp_path / "videos" / f"{game}.transcript.txt")
        assert evaluated.episode_cap == "4 steps (the game's episodes: 100)"
        lines = Path(evaluated.video).read_text().strip().splitlines()
        assert sum(line.startswith("> ") for line in lines) >= 4 and lines[-1].endswith("step 4]"), lines[-3:]
    assert not list((tmp_path / "videos").glob("*.gif"))


@needs_games
@pytest.mark.slow
def test_smoke_preset_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    configs = build_configs("smoke", exp_name=str(tmp_path / "exp"), cuda=False)
    result = train_scalezero(configs, max_env_step=SMOKE.max_env_step, exp_name=str(tmp_path / "exp"),
                             score_kind="raw", checkpoint_freq=SMOKE.checkpoint_freq, progress=False)
    _check_run(tmp_path, result, SMOKE.tasks)


@needs_games
def test_configs_share_one_padded_action_space(tmp_path):
    configs = build_configs("smoke", exp_name=str(tmp_path))
    assert [main.env.game for main, _ in configs] == ["detective", "omniquest"]
    for main, create in configs:
        assert main.policy.model.action_space_size == main.env.action_space_size == 25  # omniquest's 25
        assert "max_action_num" not in main.env  # each game keeps its own count, masked up to 25
        assert main.policy.model.world_model_cfg.obs_type == "text" and create.env.type == "jericho_scalezero"
        assert main.policy.action_type == "varied_action_space"
        assert Path(main.env.game_dir).is_absolute()


def test_jericho4_preset_settings():
    preset = PRESETS["jericho4"]
    assert preset.tasks == ("detective", "omniquest", "acorncourt", "zork1") and preset.max_steps is None


def test_bad_games_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown Jericho game 'zork9'"):
        build_configs("smoke", games=["zork9"], exp_name=str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        build_configs("smoke", games_dir=str(tmp_path), exp_name=str(tmp_path))
    assert str(tmp_path) in str(error.value) and "detective.z5" in str(error.value)


def test_cli_missing_game_directory_is_one_line(tmp_path):
    missing = tmp_path / "no-games-here"
    result = subprocess.run([sys.executable, "-m", "zoo.jericho.config.scalezero_jericho_multitask_config",
                             "--preset", "smoke", "--game-dir", str(missing)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and str(missing) in last and "detective.z5" in last


@needs_games
def test_dps_needs_a_target_per_game(tmp_path):
    from lzero_ext.dps import controller_from_config
    from lzero_ext.entry.suite import parse_targets

    targets = parse_targets(["detective=5", "omniquest=2.5"])
    configs = build_configs("smoke", exp_name=str(tmp_path / "exp"), cuda=False, dps_targets=targets)
    dps = configs[0][0].policy.dps
    assert dps.enabled and controller_from_config(dps, list(SMOKE.tasks)).targets == targets
    assert not build_configs("smoke", exp_name=str(tmp_path / "exp"), cuda=False)[0][0].policy.dps.enabled
    with pytest.raises(ValueError, match="missing \\['omniquest'\\]"):
        build_configs("smoke", exp_name=str(tmp_path / "exp"), cuda=False, dps_targets={"detective": 5})
    with pytest.raises(ValueError, match="GAME=SCORE"):
        parse_targets(["detective:5"])
