"""Real DDP: torchrun starts 2 gloo processes that split the tasks and train one shared model."""
import os
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("ddp_train_worker.py")


def _torchrun(tmp_path: Path, *games: str, timeout: int = 400, extra=()) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(WORKER), "--exp", str(tmp_path / "exp"), "--games", *games, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=timeout, env=env)


def test_two_ranks_train_identical_parameters_and_log_every_task(tmp_path):
    result = _torchrun(tmp_path, "Pong", "Breakout", "MsPacman")  # rank 0: 2 tasks, rank 1: 1 task
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    rank0 = torch.load(tmp_path / "exp" / "params_rank0.pt")
    rank1 = torch.load(tmp_path / "exp" / "params_rank1.pt")
    assert rank0["train_iter"] == rank1["train_iter"] == 3
    for name, value in rank0["params"].items():
        assert torch.equal(value, rank1["params"][name]), f"{name} differs between ranks"
    task_logs = {p.parent.name for p in (tmp_path / "exp" / "log" / "tasks").glob("*/events.out.tfevents.*")}
    assert task_logs == {"Pong", "Breakout", "MsPacman"}
    summary = (tmp_path / "exp" / "summary.json").read_text()
    assert all(game in summary for game in ("Pong", "Breakout", "MsPacman"))


def test_more_ranks_than_tasks_is_a_clear_error(tmp_path):
    result = _torchrun(tmp_path, "Pong", timeout=200)
    assert result.returncode != 0
    assert "2 ranks but only 1 tasks" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]


def test_dps_ranks_agree_on_stage_solved_set_and_parameters(tmp_path):
    # MsPacman lives on rank 1 and is solved at once (1 >= ceil(3 unsolved / 3 stages left): stage 1 at iteration 2);
    # rank 0 must learn that through the gathered returns.
    result = _torchrun(tmp_path, "Pong", "Breakout", "MsPacman", extra=("--dps-solved", "MsPacman", "--max-train-iter", "4"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    rank0 = torch.load(tmp_path / "exp" / "params_rank0.pt")
    rank1 = torch.load(tmp_path / "exp" / "params_rank1.pt")
    assert rank0["dps_stage"] == rank1["dps_stage"] == 1
    assert rank0["solved"] == rank1["solved"] == ["MsPacman"]
    for name, value in rank0["params"].items():
        assert torch.equal(value, rank1["params"][name]), f"{name} differs between ranks"
    assert any("lora_B.0" in name and value.abs().sum() > 0 for name, value in rank0["params"].items())
