"""Signals in every phase end with one line and the shell's exit code (130 SIGINT, 143 SIGTERM, 129 SIGHUP): real
jobs (subprocesses) during the baseline evaluation, during training, outside
training, and during ``lzero_ext.evaluate``."""
import os
import signal
import subprocess
import sys
import time

import pytest

from lzero_ext.bench.faults import CLEAR_LINES, session_members

from tests.test_run_faults import ENV, JOB, REPO, _start, _wait_for

CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


def _clear_lines(text: str):
    return [line for line in text.splitlines() if CLEAR_LINES.match(line)]


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_baseline_evaluation_is_one_line_and_its_exit_code(tmp_path, sig):
    """Pendulum plays every evaluation episode to its 20000-step cap: the baseline evaluation lasts long enough to
    be interrupted. Both tasks' evaluators run as coroutines of one lockstep loop, for real."""
    exp, log = tmp_path / "exp", tmp_path / "job.log"
    proc = _start(JOB + ["--exp-name", str(exp), "--tasks", "Pendulum", "CartPole", "--episode-steps", "20000",
                         "--max-train-iter", "4"], log)
    _wait_for(exp / "run.lock", proc)
    time.sleep(5.0)  # the trainer is built (about 2 s) and evaluating
    os.killpg(proc.pid, sig)
    assert proc.wait(timeout=120) == CODES[sig]
    text = log.read_text()
    assert "Traceback" not in text and "terminate called" not in text, text[-3000:]
    assert "[eval]" not in text, "the baseline evaluation had ended before the signal: the test missed its phase"
    assert _clear_lines(text) == [f"interrupted by {sig.name} at iteration 0: no learner iteration ran, no checkpoint "
                                  f"was written (start again without --resume)"]
    assert not (exp / "run.lock").exists()
    time.sleep(1.0)
    assert session_members(proc.pid) == []


def test_sighup_during_training_saves_a_final_checkpoint_and_exits_129(tmp_path):
    exp, log = tmp_path / "exp", tmp_path / "job.log"
    proc = _start(JOB + ["--exp-name", str(exp), "--max-train-iter", "100000"], log)
    _wait_for(exp / "ckpt" / "rank0" / "latest.json", proc)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGHUP)
    assert proc.wait(timeout=120) == 129
    text = log.read_text()
    (last,) = _clear_lines(text)
    assert last.startswith("interrupted by SIGHUP at iteration ") and "continue with --resume" in last, text[-3000:]
    assert not (exp / "run.lock").exists()  # the lock is released, not left stale
    resumed = subprocess.run(JOB + ["--exp-name", str(exp), "--max-train-iter", "1", "--resume"], capture_output=True,
                             text=True, cwd=REPO, env=ENV, timeout=240)
    iteration = int(last.split("at iteration ")[1].split(":")[0])
    assert resumed.returncode == 0 and f"iteration_{iteration}.pth.tar at iteration {iteration}" in resumed.stderr


def test_sighup_outside_training_is_one_line_and_129():
    code = ("import os, signal, time; from lzero_ext.entry.cli import exit_on_signals_outside_training as f; f(); "
            "os.kill(os.getpid(), signal.SIGHUP); time.sleep(30)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 129
    assert _clear_lines(result.stderr) == ["interrupted by SIGHUP outside training: no learner step since the last "
                                           "checkpoint to save"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_a_finished_run_shuts_down_leaves_exit_status_0(sig):
    """After the run saved and ended, Python's own shutdown puts the default actions back; a late SIGTERM / SIGHUP
    (a process group signalled as the job ends) must not turn a finished run into a silent death."""
    code = ("import atexit, os, signal; from lzero_ext.entry.cli import ignore_signals_after_the_run as f; f(); "
            f"atexit.register(lambda: os.kill(os.getpid(), {int(sig)}))")  # arrives during the interpreter's shutdown
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_lzero_ext_evaluate_is_one_line(tmp_path, sig):
    exp = tmp_path / "exp"
    trained = subprocess.run(JOB + ["--exp-name", str(exp), "--max-train-iter", "2"], capture_output=True, text=True,
                             cwd=REPO, env=ENV, timeout=240)
    assert trained.returncode == 0, trained.stderr[-3000:]
    log = tmp_path / "evaluate.log"
    proc = _start([sys.executable, "-m", "lzero_ext.evaluate", "--exp-name", str(exp), "--episodes", "5000"], log)
    _wait_for(exp / "evaluate" / "log" / "CartPole-v1", proc)  # its evaluator is built: the episodes run
    time.sleep(2.0)
    os.killpg(proc.pid, sig)
    assert proc.wait(timeout=120) == CODES[sig]
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert _clear_lines(text) == [f"interrupted by {sig.name} during the evaluation: nothing to save"]


def test_a_resume_with_another_number_of_ranks_is_one_line_on_every_rank_and_prompt(tmp_path):
    exp = tmp_path / "exp"
    trained = subprocess.run(JOB + ["--exp-name", str(exp), "--tasks", "CartPole", "Acrobot", "--max-train-iter", "2"],
                             capture_output=True, text=True, cwd=REPO, env=ENV, timeout=240)
    assert trained.returncode == 0, trained.stderr[-3000:]
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "lzero_ext.launch", "--standalone", "--nproc_per_node", "2",
                             *JOB[1:], "--exp-name", str(exp), "--tasks", "CartPole", "Acrobot", "--max-train-iter", "4",
                             "--resume"], capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300)
    took = time.time() - started
    output = result.stdout + result.stderr
    assert result.returncode == 1
    line = "was written by 1 rank(s); this run has 2: resume with 1 rank(s)"
    lines = [text.strip() for text in output.splitlines()]
    assert lines.count(f"error: cannot resume: {exp} {line} (torchrun --nproc_per_node / --nnodes), or start a new "
                       f"--exp-name") == 1, output[-3000:]  # rank 0
    assert sum(text.startswith(f"rank 1: error: cannot resume: {exp} {line}") for text in lines) == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert took < 25, f"the ranks took {took:.0f} s to stop (torchrun kills a blocked rank after 30 s)"


def test_a_dead_env_worker_stops_the_run_with_one_line_and_a_final_checkpoint(tmp_path):
    exp, log = tmp_path / "exp", tmp_path / "job.log"
    proc = _start(JOB + ["--exp-name", str(exp), "--env-manager", "subprocess", "--max-train-iter", "100000"], log)
    _wait_for(exp / "ckpt" / "rank0" / "latest.json", proc)
    time.sleep(1.0)
    workers = [pid for pid in session_members(proc.pid) if pid != proc.pid]
    assert workers, "no env worker process found"
    os.kill(workers[0], signal.SIGKILL)  # one env worker dies (out of memory, killed by hand)
    assert proc.wait(timeout=120) == 1
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    (line,) = _clear_lines(text)
    assert line.startswith("error: the ") and " env worker " in line and " of task 0 (CartPole-v1) died (" in line, line
    assert line.endswith("continue with --resume"), line
    saved = (exp / "ckpt" / "rank0" / "latest.json").read_text()
    iteration = int(line.split(") at iteration ")[1].split(":")[0])
    assert f'"checkpoint": "iteration_{iteration}.pth.tar"' in saved  # the final checkpoint holds the last iteration
    deadline = time.time() + 20  # the other workers are stopped too (a loaded machine reaps them slowly)
    while session_members(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert session_members(proc.pid) == []


def test_a_signal_that_ding_wraps_in_an_env_step_still_ends_evaluate_as_that_signal(monkeypatch, capsys):
    import lzero_ext.evaluate as evaluate

    def evaluate_run(*args, **kwargs):  # the signal lands inside ding's in-process env step, which wraps it
        try:
            signal.raise_signal(signal.SIGTERM)
        except BaseException as error:
            raise RuntimeError(f"Env 0 step has exceeded max retries(1), and the latest exception is: {error}")

    monkeypatch.setattr(evaluate, "evaluate_run", evaluate_run)
    with pytest.raises(SystemExit) as stopped:
        evaluate.main(["--exp-name", "anything"])
    assert stopped.value.code == 143
    assert "interrupted by SIGTERM during the evaluation" in capsys.readouterr().err
