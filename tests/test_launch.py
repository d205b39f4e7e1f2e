"""``python -m lzero_ext.launch``: torchrun's launcher, ending like a one-process run (real ranks, real signals)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lzero_ext.launch import rank_exit_code

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}

RANK = """
import os, signal, sys, time
from pathlib import Path
def stop(signum, _frame):
    print(f"interrupted by {signal.Signals(signum).name}", flush=True)
    sys.exit(128 + signum)
for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(signum, stop)
rank = int(os.environ["RANK"])
Path(sys.argv[1], f"ready{rank}").touch()
if sys.argv[2] == "fail" and rank == 1:
    print("error: rank 1 found a problem", flush=True)
    sys.exit(3)
time.sleep(float(sys.argv[3]))
"""


def _launch(tmp_path: Path, mode: str, seconds: float) -> subprocess.Popen:
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    return subprocess.Popen([sys.executable, "-m", "lzero_ext.launch", "--standalone", "--nproc_per_node", "2",
                             str(script), str(tmp_path), mode, str(seconds)], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_ready(tmp_path: Path, proc: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while not all((tmp_path / f"ready{r}").exists() for r in range(2)):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
        time.sleep(0.1)


def test_a_signal_that_surfaces_as_another_error_is_still_the_signal():
    from torch.distributed.elastic.multiprocessing import SignalException

    from lzero_ext.launch import _signal_in
    try:
        try:
            raise SignalException("got signal: 1", sigval=signal.SIGHUP)
        except SignalException:
            raise UnboundLocalError("cannot access local variable 'start'")  # torch's metrics wrapper
    except UnboundLocalError as error:
        assert _signal_in(error, SignalException) == signal.SIGHUP
    assert _signal_in(ValueError("no signal"), SignalException) is None


def test_exit_code_of_failed_ranks():
    assert rank_exit_code([143, 143]) == 143
    assert rank_exit_code([129]) == 129
    assert rank_exit_code([143, -15]) == 1  # one rank killed by the launcher's shutdown: not a clean stop
    assert rank_exit_code([3]) == 1
    assert rank_exit_code([130, 143]) == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_job_ends_with_its_exit_code_and_no_traceback(tmp_path, signum):
    proc = _launch(tmp_path, "sleep", 60)
    _wait_ready(tmp_path, proc)
    os.killpg(proc.pid, signum)  # a terminal closing / a scheduler: the launcher and both ranks get it
    output = proc.communicate(timeout=90)[0]
    assert proc.returncode == 128 + signum, output[-3000:]
    assert "Traceback" not in output and "ChildFailedError" not in output, output[-3000:]
    assert f"interrupted by {signal.Signals(signum).name} (launcher)" in output, output[-3000:]
    # each rank stopped with its line: on the job's signal, or on the SIGTERM the launcher sends when the signal
    # reached it first (torch's agent stops the ranks with SIGTERM when a signal lands in its metrics wrapper)
    assert output.count("interrupted by") >= 3, output[-3000:]


def test_a_failed_rank_is_one_line_and_exit_1(tmp_path):
    proc = _launch(tmp_path, "fail", 60)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output and "ChildFailedError" not in output, output[-3000:]
    assert "error: rank 1 exited with code 3" in output, output[-3000:]


def test_a_finished_job_exits_0(tmp_path):
    proc = _launch(tmp_path, "sleep", 0)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output[-3000:]
