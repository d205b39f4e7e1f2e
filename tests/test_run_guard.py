"""Guarded experiment directories, resume checks and fallbacks, divergence, file modes: in-process, tiny runs."""
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ding.utils import ENV_REGISTRY

import lzero_ext  # noqa: F401
from lzero_ext.bench.fault_job import TINY, TaskSpec, build_configs
from lzero_ext.bench.learning_configs import classic_configs
from lzero_ext.checkpoint import CheckpointError, CheckpointWriteError, atomic_write, load_newest_intact, save_checkpoint
from lzero_ext.divergence import DivergenceError
from lzero_ext.entry import train_scalezero
from lzero_ext.entry.fault_injection import NanTargetsAt
from lzero_ext.entry.resume_check import identity_differences
from lzero_ext.entry.run_guard import RunGuardError, check_free_space
from lzero_ext.entry.run_lock import LOCK_FILE, ExperimentLock, RunLockError
from lzero_ext.envs.classic_control_env import ClassicControlEnv

REPO = Path(__file__).resolve().parents[1]


def _run(exp: Path, iters: int, *, tasks=("CartPole",), seed: int = 0, **kwargs):
    configs = build_configs(list(tasks), exp_name=str(exp), seed=seed)
    return train_scalezero(configs, seed=seed, max_env_step=10_000, max_train_iter=iters, exp_name=str(exp),
                           checkpoint_freq=2, progress=False, **kwargs)


def _ckpt(exp: Path) -> Path:
    return exp / "ckpt" / "rank0"


# ---------------------------------------------------------------------- the experiment directory
def test_existing_run_needs_resume_or_overwrite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "exp"
    _run(exp, 2)
    before = sorted(p.name for p in _ckpt(exp).iterdir())
    with pytest.raises(RunGuardError, match="already holds a run: continue it with --resume.*--overwrite"):
        _run(exp, 2)
    assert sorted(p.name for p in _ckpt(exp).iterdir()) == before  # nothing pruned or overwritten
    with pytest.raises(RunGuardError, match="exclude each other"):
        _run(exp, 2, resume=True, overwrite=True)
    result = _run(exp, 2, overwrite=True)
    assert result.train_iter == 2 and not (exp / LOCK_FILE).exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunGuardError, match="existing file, not a directory"):
        _run(tmp_path / "file", 2)


def test_lock_names_a_live_holder_and_takes_over_a_stale_one(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    host = socket.gethostname()
    (exp / LOCK_FILE).write_text(json.dumps({"pid": os.getppid(), "host": host, "since": "then"}))  # a live process
    with pytest.raises(RunLockError, match=f"in use by process {os.getppid()} on {host}"):
        ExperimentLock(exp).acquire()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (exp / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": host, "since": "then"}))
    with ExperimentLock(exp) as lock:  # the stale lock is taken over
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        with pytest.raises(RunLockError, match=f"process {os.getpid()}"):
            ExperimentLock(exp).acquire()
    assert not (exp / LOCK_FILE).exists()
    (exp / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": "elsewhere", "since": "then"}))
    with pytest.raises(RunLockError, match="on elsewhere.*delete"):  # another host's lock is never taken over
        ExperimentLock(exp).acquire()


# ---------------------------------------------------------------------- resume
def test_mismatched_resume_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "exp"
    _run(exp, 2)
    config_before = (exp / "total_config.py").read_text()
    files_before = {p: p.stat().st_mtime_ns for p in exp.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError) as error:
        _run(exp, 4, tasks=("CartPole", "Acrobot"), resume=True)
    message = str(error.value)
    assert "\n" not in message and message.startswith("cannot resume") and "tasks (['CartPole-v1'] -> " in message
    assert (exp / "total_config.py").read_text() == config_before
    assert {p: p.stat().st_mtime_ns for p in exp.rglob("*") if p.is_file()} == files_before  # nothing written


def test_identity_differences_name_the_changed_keys():
    saved = {"tasks": ["Pong"], "policy.model.world_model_cfg.moe.enabled": True, "run.preset": "smoke"}
    new = {"tasks": ["Pong"], "policy.model.world_model_cfg.moe.enabled": False, "run.preset": "cpu"}
    assert identity_differences(saved, new) == ["run.preset", "policy.model.world_model_cfg.moe.enabled"]
    assert identity_differences(saved, dict(saved)) == []


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "exp"
    _run(exp, 6)  # checkpoints at 2, 4, 6
    newest = _ckpt(exp) / "iteration_6.pth.tar"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    result = _run(exp, 7, resume=True)
    assert result.train_iter == 7
    assert "iteration_6.pth.tar" in caplog.text and "older intact checkpoint" in caplog.text
    assert torch.load(_ckpt(exp) / "iteration_7.pth.tar", weights_only=False)["train_iter"] == 7
    # latest.json gone: the scan still finds the checkpoints
    (_ckpt(exp) / "latest.json").unlink()
    path, state = load_newest_intact(_ckpt(exp), required_keys=("train_iter",))
    assert path.name == "iteration_7.pth.tar" and state["train_iter"] == 7


class FixedEpisodeEnv(ClassicControlEnv):
    """Every episode starts from the seed's state (no per-episode seed draws), so a resumed run
    collects what the uninterrupted run collects when episodes end at collection-round boundaries."""

    def seed(self, seed: int, dynamic_seed: bool = True) -> None:
        super().seed(seed, dynamic_seed=False)


if "fixed_episode_test_env" not in ENV_REGISTRY:
    ENV_REGISTRY.register("fixed_episode_test_env")(FixedEpisodeEnv)


def _pendulum_configs(exp: Path):
    # Pendulum never ends early: 10-step episodes are exactly one 10-step segment, one per collection round.
    spec = TaskSpec("Pendulum", "Pendulum-v1", reference_return=-150.0, target_return=0.0, max_episode_steps=10,
                    continuous_action_bins=3)
    ((main, create),) = classic_configs([spec], TINY, moe=True, exp_name=str(exp), seed=0)
    create.env.type, create.env.import_names = "fixed_episode_test_env", []
    return [(main, create)]


def _pendulum_run(exp: Path, iters: int, *, resume: bool = False, seed: int = 0):
    return train_scalezero(_pendulum_configs(exp), seed=seed, max_env_step=10_000, max_train_iter=iters,
                           exp_name=str(exp), checkpoint_freq=2, progress=False, resume=resume, save_replay_buffer=True)


def _flat(result) -> torch.Tensor:
    return torch.cat([v.float().flatten() for _, v in sorted(result.policy._learn_model.state_dict().items())])


def test_stopped_and_resumed_run_matches_an_uninterrupted_one(tmp_path, monkeypatch):
    """Stopped at iteration 4 and resumed to 8 vs 8 uninterrupted iterations (base env manager, seed 0, replay
    buffer in the checkpoint). Tolerance: parameter distance <= 10% of the parameter norm. Two uninterrupted
    runs in one process already differ by ~3% (lightzero's MCTS and buffers keep process state); a resumed
    run was measured at ~2.5%. The resumed invocation gets --seed 1: a real resume takes weights, optimizer
    and RNG from the checkpoint, while a no-op resume starts from seed 1's initial weights (~28% away)."""
    monkeypatch.chdir(tmp_path)
    whole = _pendulum_run(tmp_path / "whole", 8)
    _pendulum_run(tmp_path / "split", 4)
    resumed = _pendulum_run(tmp_path / "split", 8, resume=True, seed=1)
    assert whole.train_iter == resumed.train_iter == 8
    distance = (_flat(resumed) - _flat(whole)).norm().item() / _flat(whole).norm().item()
    assert distance <= 0.10, f"resumed parameters are {distance:.1%} of the norm away from the uninterrupted run's"


# ---------------------------------------------------------------------- divergence
def test_nan_targets_stop_the_run_with_task_and_iteration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "exp"
    with pytest.raises(DivergenceError) as error:
        _run(exp, 8, batch_transform=NanTargetsAt(5))
    message = str(error.value)
    assert "non-finite target_value of task 0 (CartPole-v1) at iteration 5" in message
    assert "iteration_4.pth.tar is kept" in message and "\n" not in message
    path, state = load_newest_intact(_ckpt(exp), required_keys=("train_iter",))
    assert state["train_iter"] == 4 and all(torch.isfinite(v).all() for v in state["policy"]["model"].values()
                                            if v.is_floating_point())


# ---------------------------------------------------------------------- files
def test_files_are_world_readable_as_the_umask_allows(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "iteration_1.pth.tar", {"x": 1})
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert stat.S_IMODE((tmp_path / "latest.json").stat().st_mode) == 0o644
        os.umask(0o077)
        path = atomic_write(tmp_path / "private.json", lambda f: f.write(b"{}"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_write_errors_name_the_path_and_the_cause(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(CheckpointWriteError, match=f"cannot write {locked}.*permission denied"):
            save_checkpoint(locked / "iteration_1.pth.tar", {"x": 1})
    import shutil

    from lzero_ext import checkpoint

    real_usage = shutil.disk_usage

    def full(path):  # what the file system reports once a write hit ENOSPC
        return real_usage(path)._replace(free=1024)

    def zip_error(f):  # torch's zip writer on a full disk: a RuntimeError without the errno
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoint.shutil, "disk_usage", full)
    with pytest.raises(CheckpointWriteError, match=r"iteration_2.pth.tar: no space left on device \(ENOSPC\)"):
        atomic_write(tmp_path / "iteration_2.pth.tar", zip_error)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", real_usage)
    with pytest.raises(RuntimeError, match="unexpected pos"):  # with free space it is not a disk-full error
        atomic_write(tmp_path / "iteration_2.pth.tar", zip_error)
    assert not list(tmp_path.glob(".iteration_2*"))


def test_free_space_preflight_warns_below_a_few_checkpoints(tmp_path):
    free = __import__("shutil").disk_usage(tmp_path).free
    assert check_free_space(tmp_path, 1024) is None
    assert "less than 3 checkpoints" in check_free_space(tmp_path, free)


# ---------------------------------------------------------------------- import cycle
def test_policies_scalezero_imports_in_a_fresh_interpreter():
    result = subprocess.run([sys.executable, "-c", "import policies.scalezero; print(policies.scalezero.ScaleZeroPolicy)"],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0 and "ScaleZeroPolicy" in result.stdout, result.stderr[-2000:]


# ---------------------------------------------------------------------- command line and game files
@pytest.mark.parametrize("argv, message", [
    (["--max-env-step", "0"], "--max-env-step must be a positive integer, got 0"),
    (["--max-env-step", "-5"], "--max-env-step must be a positive integer, got -5"),
    (["--max-train-iter", "0"], "--max-train-iter must be a positive integer, got 0"),
    (["--threads", "0"], "--threads must be a positive integer, got 0"),
    (["--tasks", "CartPole", "CartPole"], "task 'CartPole' is given twice"),
    (["--resume", "--overwrite"], "exclude each other"),
])
def test_cli_rejects_meaningless_values_in_one_line(argv, message, capsys):
    from lzero_ext.bench.fault_job import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_cli_rejects_an_exp_name_that_is_a_file(tmp_path, capsys):
    from lzero_ext.bench.fault_job import main

    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit):
        main(["--exp-name", str(tmp_path / "f")])
    assert "is an existing file, not a directory" in capsys.readouterr().err


def test_story_file_header_is_checked_before_jericho_loads_it(tmp_path):
    from lzero_ext.envs.jericho_env import JerichoMultiTaskEnv
    from lzero_ext.envs.zmachine import check_story_file

    fake = tmp_path / "fake.z5"
    fake.write_bytes(b"This is not a story file, just text that is long enough for a header." * 3)
    with pytest.raises(ValueError, match=r"fake.z5 is not a Z-machine story file: version byte 84, expected 1..8"):
        JerichoMultiTaskEnv(dict(game="fake.z5", game_dir=str(tmp_path), max_action_num=4, max_steps=10, max_seq_len=32))
    (tmp_path / "short.z5").write_bytes(b"\x05abc")
    with pytest.raises(ValueError, match="shorter than the 64-byte header"):
        check_story_file(tmp_path / "short.z5")
    games = Path("/work/shared/jericho-games")
    if (games / "zork1.z5").is_file():
        data = (games / "zork1.z5").read_bytes()
        assert check_story_file(games / "zork1.z5") == 3
        (tmp_path / "cut.z5").write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match="truncated: its header says"):
            check_story_file(tmp_path / "cut.z5")


def test_signals_wait_for_the_deferred_block_and_handlers_are_restored():
    import signal

    from lzero_ext.entry.run_signals import RunInterrupted, RunSignals

    before = signal.getsignal(signal.SIGTERM)
    steps = []
    with pytest.raises(RunInterrupted) as stop:
        with RunSignals() as signals:
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                steps.append("the block finished")  # not interrupted in the middle
            steps.append("not reached")
    assert steps == ["the block finished"] and stop.value.exit_code == 143 and stop.value.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before
