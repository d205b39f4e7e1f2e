"""Faults on real jobs (subprocesses): signals, too many ranks, two-node torchrun with DDP resume, the fault bench."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lzero_ext.bench.faults import session_members

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
JOB = [sys.executable, "-m", "lzero_ext.bench.fault_job"]


def _start(args, log: Path) -> subprocess.Popen:
    with open(log, "w") as handle:
        return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO, env=ENV, start_new_session=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def test_ctrl_c_with_env_worker_processes_saves_and_prints_one_line(tmp_path):
    """SIGINT to the whole process group (a terminal's Ctrl-C) with subprocess env workers."""
    exp, log = tmp_path / "exp", tmp_path / "job.log"
    proc = _start(JOB + ["--exp-name", str(exp), "--env-manager", "subprocess", "--max-train-iter", "100000"], log)
    _wait_for(exp / "ckpt" / "rank0" / "latest.json", proc)  # training has run at least 2 iterations
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    last = text.strip().splitlines()[-1]
    assert last.startswith("interrupted by SIGINT at iteration ") and "continue with --resume" in last
    saved = json.loads((exp / "ckpt" / "rank0" / "latest.json").read_text())["checkpoint"]
    iteration = int(last.split("at iteration ")[1].split(":")[0])
    assert saved == f"iteration_{iteration}.pth.tar" and str(exp / "ckpt" / "rank0" / saved) in last  # the truth
    time.sleep(2.0)
    assert session_members(proc.pid) == []  # no env worker left behind


def test_second_job_on_the_same_directory_is_refused(tmp_path):
    exp = tmp_path / "exp"
    first = _start(JOB + ["--exp-name", str(exp), "--max-train-iter", "100000"], tmp_path / "first.log")
    try:
        _wait_for(exp / "run.lock", first)
        second = subprocess.run(JOB + ["--exp-name", str(exp), "--resume"], capture_output=True, text=True, cwd=REPO,
                                env=ENV, timeout=240)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert f"is in use by process {first.pid} on " in second.stderr.strip().splitlines()[-1]
    finally:
        os.killpg(first.pid, signal.SIGTERM)
    assert first.wait(timeout=120) == 143
    assert "interrupted by SIGTERM" in (tmp_path / "first.log").read_text()


def test_more_ranks_than_tasks_prints_one_line_once(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lzero_ext.launch", "--standalone", "--nproc_per_node", "2",
                             *JOB[1:], "--exp-name", str(tmp_path / "exp"), "--tasks", "CartPole"],
                            capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert output.count("error: 2 ranks but only 1 tasks") == 1, output[-3000:]
    assert "Traceback" not in output and "ChildFailedError" not in output, output[-3000:]


def _two_node_job(tmp_path: Path, exp: Path, iters: int, port: int, *extra: str):
    agents = [_start([sys.executable, "-m", "lzero_ext.launch", "--nnodes", "2", "--nproc_per_node", "1",
                      "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"job{port}",
                      "--max-restarts", "0", *JOB[1:], "--exp-name", str(exp), "--tasks", "CartPole", "Acrobot",
                      "--max-train-iter", str(iters), *extra], tmp_path / f"node{n}_{port}.log") for n in range(2)]
    codes = [agent.wait(timeout=400) for agent in agents]
    logs = "".join((tmp_path / f"node{n}_{port}.log").read_text() for n in range(2))
    return codes, logs


@pytest.mark.slow
def test_two_nodes_train_checkpoint_and_resume_at_one_iteration(tmp_path):
    """Two torchrun agents (--nnodes 2, c10d rendezvous on 127.0.0.1), one gloo process each. Rank 1's newest
    checkpoint is then deleted: on resume the ranks agree on the newest iteration both have."""
    exp = tmp_path / "exp"
    codes, logs = _two_node_job(tmp_path, exp, 4, 29533)
    assert codes == [0, 0], logs[-4000:]
    for rank in (0, 1):
        assert (exp / "ckpt" / f"rank{rank}" / "iteration_4.pth.tar").is_file()
    (exp / "ckpt" / "rank1" / "iteration_4.pth.tar").unlink()
    codes, logs = _two_node_job(tmp_path, exp, 6, 29534, "--resume")
    assert codes == [0, 0], logs[-4000:]
    assert "ranks' newest checkpoints differ (rank 0: 4, rank 1: 2): every rank resumes from iteration 2" in logs
    assert logs.count("rank0/iteration_2.pth.tar at iteration 2") == 1 and logs.count("rank1/iteration_2.pth.tar at iteration 2") == 1
    states = [torch.load(exp / "ckpt" / f"rank{r}" / "iteration_6.pth.tar", weights_only=False) for r in (0, 1)]
    for name, value in states[0]["policy"]["model"].items():
        assert torch.equal(value, states[1]["policy"]["model"][name]), f"{name} differs between the nodes"


def test_fault_bench_short(tmp_path):
    """Three of the bench's faults: SIGHUP, bit flips in the newest checkpoint, a plain resume of a LoRA fine-tune."""
    result = subprocess.run([sys.executable, "-m", "lzero_ext.bench", "faults", "--runs", "3", "--ranks", "1", "--seed", "3",
                             "--faults", "sighup", "bitflip", "finetune_resume",
                             "--timeout", "200", "--work-dir", str(tmp_path / "faults")],
                            capture_output=True, text=True, cwd=REPO, env=ENV, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "faults: 3 runs, 0 hangs, 0 lost checkpoints, 0 unclear errors, 0 wrong exit codes", \
        result.stdout[-3000:]
    assert sorted(line.split()[2] for line in lines if line.startswith("run ")) == ["bitflip", "finetune_resume", "sighup"]


def test_fault_bench_counts_a_wrong_exit_code_even_with_a_clear_line(tmp_path):
    """A job that prints the interrupt line but exits 1 instead of 143 (a real process) is a wrong exit code."""
    from lzero_ext.bench.faults import Outcome, _start, _unclear, _wait

    code = "import sys; print('interrupted by SIGTERM at iteration 3: saved a final checkpoint x', file=sys.stderr); sys.exit(1)"
    proc = _start([sys.executable, "-c", code], tmp_path / "job.log", ENV)
    _wait(proc, 60)
    out = Outcome("sigterm", 1)
    out.check_code("first job", proc, (143,))
    assert _unclear(proc, (143,)) is None  # the line is clear ...
    assert out.wrong_codes == 1 and out.notes == ["first job: exit 1, expected 143"]  # ... the exit code is not


def test_a_signal_outside_training_ends_with_one_clear_line():
    from lzero_ext.bench.faults import CLEAR_LINES

    code = ("import os, signal, time; from lzero_ext.entry.cli import exit_on_signals_outside_training as f; f(); "
            "os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 143
    lines = [line for line in result.stderr.splitlines() if CLEAR_LINES.match(line)]
    assert lines == ["interrupted by SIGTERM outside training: no learner step since the last checkpoint to save"]
