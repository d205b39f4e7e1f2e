"""A run's integrity: checkpoint checksums and the fallback from a corrupt one, fine-tune state in the run's
identity, --overwrite leaving nothing of the previous run, stale locks, no silent failures at the env boundary."""
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lzero_ext  # noqa: F401
from lzero_ext.bench.fault_job import build_configs
from lzero_ext.bench.faults import flip_tensor_bytes
from lzero_ext.checkpoint import CheckpointError, load_checkpoint, load_newest_intact, save_checkpoint
from lzero_ext.entry import train_scalezero
from lzero_ext.entry.run_lock import LOCK_FILE, ExperimentLock, RunLockError


# ---------------------------------------------------------------------- checksums
def test_flipped_bits_in_a_checkpoint_are_caught_on_load(tmp_path):
    path = save_checkpoint(tmp_path / "iteration_1.pth.tar", {"weight": torch.full((4096,), 0.5), "iteration": 1})
    assert load_checkpoint(path)["iteration"] == 1
    flip_tensor_bytes(path)
    with pytest.raises(CheckpointError, match=r"iteration_1.pth.tar is corrupt: its payload does not match its checksum"):
        load_checkpoint(path)


def test_checksum_covers_plain_values_and_survives_a_round_trip(tmp_path):
    state = {"policy": {"w": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)[:, 1:], "step": torch.tensor(3)},
             "rng": (3, tuple(range(5)), None), "np": np.arange(4, dtype=np.uint32), "name": "x", "lr": float("nan")}
    path = save_checkpoint(tmp_path / "iteration_2.pth.tar", state)
    assert torch.equal(load_checkpoint(path)["policy"]["w"], state["policy"]["w"])
    raw = torch.load(path, weights_only=False)
    raw["name"] = "y"  # a changed value with an intact file
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        load_checkpoint(path)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path, caplog):
    for step in (1, 2):
        save_checkpoint(tmp_path / f"iteration_{step}.pth.tar", {"weight": torch.full((4096,), float(step)),
                                                                  "train_iter": step})
    flip_tensor_bytes(tmp_path / "iteration_2.pth.tar")
    with caplog.at_level(logging.WARNING):
        path, state = load_newest_intact(tmp_path, required_keys=("train_iter",))
    assert path.name == "iteration_1.pth.tar" and state["train_iter"] == 1
    assert "iteration_2.pth.tar is corrupt" in caplog.text and "older intact checkpoint" in caplog.text


def _run(exp: Path, iters: int, **kwargs):
    configs = build_configs(["CartPole"], exp_name=str(exp), seed=0)
    return train_scalezero(configs, seed=0, max_env_step=10_000, max_train_iter=iters, exp_name=str(exp),
                           checkpoint_freq=2, progress=False, **kwargs)


def test_a_resume_skips_a_bit_flipped_newest_checkpoint(tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "exp"
    _run(exp, 4)  # checkpoints at 2 and 4
    flip_tensor_bytes(exp / "ckpt" / "rank0" / "iteration_4.pth.tar")
    capsys.readouterr()
    with caplog.at_level(logging.INFO):
        result = _run(exp, 5, resume=True)
    # the run's console shows the project's lines on stderr; records before the console opened reach caplog
    shown = caplog.text + capsys.readouterr().err
    assert "resumed from" in shown and "iteration_2.pth.tar at iteration 2" in shown
    assert "iteration_4.pth.tar is corrupt" in shown and result.train_iter == 5


# ---------------------------------------------------------------------- fine-tuned runs
def test_fine_tune_mode_is_part_of_the_run_identity_and_overwrite_removes_its_files(tmp_path, monkeypatch):
    from lzero_ext.entry.finetune import FINETUNE_FILE, FinetuneSpec
    from lzero_ext.evaluate import load_run_policy

    monkeypatch.chdir(tmp_path)
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    _run(base, 2)
    lora = FinetuneSpec(str(base), mode="lora")
    _run(tuned, 2, init_from=lora)
    assert (tuned / FINETUNE_FILE).is_file()
    files_before = {p: p.stat().st_mtime_ns for p in tuned.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError) as error:  # a plain --resume of a LoRA run: one line, nothing written
        _run(tuned, 4, resume=True)
    message = str(error.value)
    assert message.startswith("cannot resume") and "\n" not in message
    assert "run.finetune ('lora (rank 8, alpha 8.0)' -> 'none')" in message
    assert {p: p.stat().st_mtime_ns for p in tuned.rglob("*") if p.is_file()} == files_before
    assert _run(tuned, 4, resume=True, init_from=lora).train_iter == 4  # with its settings it continues
    with pytest.raises(CheckpointError, match=r"run.finetune \('none' -> 'full'\)"):  # and the reverse
        _run(base, 4, resume=True, init_from=FinetuneSpec(str(tuned), mode="full"))

    (tuned / "total_config.20260101-000000.py").write_text("# a config kept by an earlier resume\n")
    (tuned / "evaluate").mkdir()
    _run(tuned, 2, overwrite=True)  # a plain run over the LoRA one
    assert not (tuned / FINETUNE_FILE).exists() and not (tuned / "evaluate").exists()
    assert sorted(p.name for p in tuned.glob("total_config*")) == ["total_config.py"]
    assert load_run_policy(str(tuned)).train_iter == 2  # the new run evaluates: no LoRA adapters rebuilt


# ---------------------------------------------------------------------- stale locks
def test_a_lock_naming_this_process_that_it_does_not_hold_is_stale(tmp_path, caplog):
    """After a container restart the new job can get the PID the old job's lock names."""
    exp = tmp_path / "exp"
    exp.mkdir()
    host = socket.gethostname()
    (exp / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": host, "since": "before the restart"}))
    with caplog.at_level(logging.WARNING), ExperimentLock(exp) as lock:
        assert "taking over the stale lock" in caplog.text and "PID reused" in caplog.text
        assert json.loads(lock.path.read_text())["since"] != "before the restart"
        with pytest.raises(RunLockError, match=f"in use by process {os.getpid()}"):  # while we hold it: refused
            ExperimentLock(exp).acquire()
    assert not (exp / LOCK_FILE).exists()


def test_a_lock_whose_pid_now_belongs_to_another_process_is_stale(tmp_path, caplog):
    exp = tmp_path / "exp"
    exp.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = {"pid": live.pid, "host": socket.gethostname(), "since": "then"}
        from lzero_ext.entry.run_lock import process_start_ticks

        started = process_start_ticks(live.pid)
        assert started is not None
        (exp / LOCK_FILE).write_text(json.dumps({**holder, "started": started}))
        with pytest.raises(RunLockError, match=f"in use by process {live.pid}"):  # the lock's own process: in use
            ExperimentLock(exp).acquire()
        (exp / LOCK_FILE).write_text(json.dumps({**holder, "started": started - 1}))  # written by an earlier process
        with caplog.at_level(logging.WARNING), ExperimentLock(exp):
            assert "the PID was reused" in caplog.text
    finally:
        live.kill()
        live.wait()


# ---------------------------------------------------------------------- no silent failures
def _changed_story(tmp_path: Path) -> Path:
    """detective.z5 with one byte changed past its header: still a story file, unknown to Jericho."""
    from lzero_ext.envs.jericho_env import game_dir

    original = game_dir() / "detective.z5"
    if not original.is_file():
        pytest.skip(f"no detective.z5 in {game_dir()}")
    data = bytearray(original.read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "games").mkdir()
    (tmp_path / "games" / "detective.z5").write_bytes(bytes(data))
    return tmp_path / "games"


def test_an_unknown_jericho_game_is_refused_in_one_line(tmp_path):
    games = _changed_story(tmp_path)
    done = subprocess.run([sys.executable, "-m", "zoo.jericho.config.scalezero_jericho_multitask_config", "--preset",
                           "smoke", "--games", "detective", "--game-dir", str(games), "--exp-name",
                           str(tmp_path / "exp"), "--max-train-iter", "1"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {games / 'detective.z5'} is not a game Jericho knows")
    assert last.endswith("pass --allow-unknown-game to train on it") and not (tmp_path / "exp").exists()


def test_an_allowed_unknown_jericho_game_shows_its_warning_on_the_quiet_console(tmp_path, capsys):
    from lzero_ext.entry.run_logging import run_console
    from lzero_ext.envs.jericho_env import JerichoMultiTaskEnv, UnknownGameError
    from zoo.jericho.config.scalezero_jericho_multitask_config import build_configs

    games = _changed_story(tmp_path)
    with run_console(verbose=False):
        configs = build_configs("smoke", games=["detective"], games_dir=str(games), exp_name=str(tmp_path / "exp"),
                                cuda=False, allow_unknown_game=True)
    assert "is not a game Jericho knows" in capsys.readouterr().err  # shown, not swallowed
    assert configs[0][0].env.allow_unknown_game is True  # the env workers accept it too
    with pytest.raises(UnknownGameError, match="not a game Jericho knows"):  # the env itself refuses it by default
        JerichoMultiTaskEnv(dict(game="detective", game_dir=str(games), max_seq_len=32))


def _broken_env_class(what: str):
    from ding.envs import BaseEnvTimestep
    from ding.utils import ENV_REGISTRY

    from lzero_ext.envs.classic_control_env import ClassicControlEnv

    name = f"nan_{what}_test_env"
    if name not in ENV_REGISTRY:
        class Broken(ClassicControlEnv):
            def step(self, action):
                timestep = super().step(action)
                if self._timestep == 5:
                    obs = dict(timestep.obs)
                    if what == "observation":
                        obs["observation"] = np.full_like(obs["observation"], np.nan)
                    reward = np.array(np.inf if what == "reward" else timestep.reward, dtype=np.float32)
                    timestep = BaseEnvTimestep(obs, reward, timestep.done, timestep.info)
                return timestep
        ENV_REGISTRY.register(name)(Broken)
    return name


@pytest.mark.parametrize("what", ["observation", "reward"])
def test_non_finite_env_output_is_caught_at_the_env_naming_task_and_step(tmp_path, monkeypatch, what):
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "exp"
    configs = build_configs(["CartPole"], exp_name=str(exp), seed=0)
    for _, create in configs:
        create.env.type, create.env.import_names = _broken_env_class(what), []
    with pytest.raises(ValueError) as error:
        train_scalezero(configs, seed=0, max_env_step=10_000, max_train_iter=6, exp_name=str(exp), checkpoint_freq=2,
                        progress=False, initial_eval=False)
    message = str(error.value)
    assert f"non-finite {what} for task 0 (CartPole-v1), env 0, at its step 5" in message and "\n" not in message
