"""The run's progress: a live bar on a terminal (of any size), plain lines every 10% without one."""
import io
import re

from lzero_ext.entry.progress import RunProgress


class Terminal(io.StringIO):
    """A terminal that does not report its size (no file descriptor)."""

    def isatty(self) -> bool:
        return True


def test_without_a_terminal_a_plain_line_every_tenth_and_no_carriage_return():
    stream = io.StringIO()
    bar = RunProgress(total=200, file=stream, min_interval_s=0.0)
    bar.set_phase("eval Pong 0/50")
    bar.task_return("Pong", -20.0)
    for _ in range(29):  # 7 steps at a time, 203 in all: the last round overshoots the budget
        bar.add_env_steps(7)
        bar.set_phase("collect Pong")
    bar.finish()
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text and "|" not in text
    lines = text.splitlines()
    percents = [int(line.split("%")[0].removeprefix("progress ")) for line in lines]
    assert [p // 10 for p in percents] == list(range(1, 11))  # one line as each tenth is passed
    assert lines[-1].startswith("progress 100%: 200/200 env steps") and lines[-1].endswith("latest eval returns Pong -20.0")


def test_without_a_terminal_close_writes_where_the_run_stopped():
    stream = io.StringIO()
    bar = RunProgress(total=100, initial=40, file=stream)
    bar.add_env_steps(5)
    bar.close()
    assert stream.getvalue() == stream.getvalue().splitlines()[0] + "\n"
    assert stream.getvalue().startswith("progress 45%: 45/100 env steps")


def test_a_terminal_of_unknown_size_still_gets_a_bar():
    stream = Terminal()
    bar = RunProgress(total=100, file=stream, min_interval_s=0.0)
    bar.set_phase("collect Pong")
    bar.add_env_steps(50)
    bar.task_return("Pong", -20.0)
    bar.close()
    frames = [frame for frame in stream.getvalue().split("\r") if frame.strip()]
    assert any(re.search(r"collect Pong \|[#█]{10,} +\| 50/100 env steps", frame) and "Pong -20.0" in frame
               for frame in frames), frames
    assert "progress 50%" not in stream.getvalue()


def test_disabled_progress_writes_nothing():
    stream = io.StringIO()
    bar = RunProgress(total=100, enabled=False, file=stream)
    bar.add_env_steps(100)
    bar.close()
    assert stream.getvalue() == ""


def test_a_pty_that_reports_no_size_still_gets_a_bar():
    """A real terminal of size 0x0 (as some CI runners and `script` give): tqdm alone would draw nothing."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    code = ("from lzero_ext.entry.progress import RunProgress\n"
            "bar = RunProgress(total=100, min_interval_s=0.0)\n"
            "bar.set_phase('collect Pong'); bar.add_env_steps(50); bar.close()\n")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen([sys.executable, "-c", code], stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert process.wait(timeout=300) == 0, out
    assert re.search(r"collect Pong \|[#█]{10,} +\| 50/100 env steps", out.decode(errors="replace")), out[-500:]


class _Task:
    """What ``RunProgress.evaluating`` reads of a task runtime, with an evaluator whose policy steps envs."""

    def __init__(self):
        from collections import namedtuple
        from easydict import EasyDict
        self.name, self.cfg = "Pong", EasyDict(env=dict(max_episode_steps=10, n_evaluator_episode=1))
        self.evaluator = EasyDict(_policy=namedtuple("Mode", "forward")(lambda data, **kw: {0: {}}))

    def step(self):
        self.evaluator._policy.forward({0: None}, ready_env_id=[0])


def test_100_percent_only_when_the_run_is_done():
    stream, task = Terminal(), _Task()
    bar = RunProgress(total=100, file=stream, min_interval_s=0.0)
    bar.add_env_steps(130)  # collection overshoots its budget: the last learn round and the final evaluation remain
    assert bar.n == 99
    with bar.evaluating(task, episodes=2, final=True):
        task.step()
        assert bar.phase == "final eval Pong 1/20" and bar.n == 99
    bar.finish()
    assert bar.n == 100
    bar.close()
    plain = io.StringIO()
    bar = RunProgress(total=100, file=plain)
    bar.add_env_steps(100)
    bar.finish()
    bar.close()
    lines = plain.getvalue().splitlines()
    assert lines[-2].startswith("progress 99%: 99/100") and lines[-1].startswith("progress 100%: 100/100")
