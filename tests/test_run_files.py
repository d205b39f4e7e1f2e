"""File-system failures of every command are one line naming the path and the cause, checked before any work,
and leave nothing half-written: real overlong names, files in the way, read-only and full file systems (tmpfs)."""
import errno
import os
import signal
import subprocess
from pathlib import Path

import pytest

import lzero_ext  # noqa: F401
from lzero_ext.entry.run_lock import LOCK_FILE, ExperimentLock, RunLockError


@pytest.fixture(autouse=True)
def _keep_signal_handlers():
    """run_cli installs its process-wide signal handlers; put pytest's back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture
def tmpfs(tmp_path):
    """``mount(name, size, read_only=False)``: a real small tmpfs (needs root); unmounted afterwards."""
    mounted = []

    def mount(name: str, size: str, *, read_only: bool = False) -> Path:
        path = tmp_path / name
        path.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path, leave_bytes: int) -> None:
    """Writes a filler file so that about ``leave_bytes`` stay free on ``directory``'s disk."""
    import shutil

    free = shutil.disk_usage(directory).free
    with open(directory / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave_bytes))


def _train_cli(argv, capsys):
    """The fault job's command line in process: (exit status, its last stderr line, all of stderr)."""
    from lzero_ext.bench.fault_job import main

    try:
        main(argv)
        code = 0
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return code, (lines[-1] if lines else ""), err


def _files(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---------------------------------------------------------------------- training
def test_an_overlong_exp_name_is_one_line(tmp_path, capsys):
    exp = tmp_path / ("x" * 300)
    code, last, err = _train_cli(["--exp-name", str(exp), "--max-train-iter", "2"], capsys)
    assert code == 1 and "Traceback" not in err
    assert last.startswith(f"error: --exp-name {exp}: cannot create") and "file name too long (ENAMETOOLONG)" in last
    assert _files(tmp_path) == []


def test_an_exp_name_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "plain").write_text("x")
    code, last, err = _train_cli(["--exp-name", str(tmp_path / "plain" / "run"), "--max-train-iter", "2"], capsys)
    assert code == 1 and "Traceback" not in err
    assert str(tmp_path / "plain" / "run") in last and "not a directory (ENOTDIR)" in last


def test_a_read_only_exp_dir_is_one_line(tmpfs, capsys):
    disk = tmpfs("ro", "1m", read_only=True)
    code, last, err = _train_cli(["--exp-name", str(disk), "--max-train-iter", "2"], capsys)
    assert code == 1 and "Traceback" not in err
    assert last.startswith(f"error: --exp-name {disk}") and "read-only file system (EROFS)" in last


def test_a_fresh_run_on_a_full_disk_is_refused_before_any_file(tmpfs, capsys):
    disk = tmpfs("full", "256k")
    _fill(disk, 8 * 1024)
    code, last, err = _train_cli(["--exp-name", str(disk / "exp"), "--max-train-iter", "2"], capsys)
    assert code == 1 and "Traceback" not in err
    assert last.startswith(f"error: --exp-name {disk / 'exp'}: no space left on device (ENOSPC)"), last
    assert _files(disk) == ["filler"]  # no directory, no 0-byte run.lock


def test_a_resume_with_little_free_space_is_refused_and_writes_nothing(tmpfs, capsys):
    disk = tmpfs("disk", "32m")
    exp = disk / "exp"
    code, _, err = _train_cli(["--exp-name", str(exp), "--max-train-iter", "2"], capsys)
    assert code == 0, err[-3000:]
    before = {p: p.stat().st_mtime_ns for p in exp.rglob("*")}
    _fill(disk, 32 * 1024)
    code, last, err = _train_cli(["--exp-name", str(exp), "--max-train-iter", "4", "--resume"], capsys)
    assert code == 1 and "Traceback" not in err
    assert "no space left on device (ENOSPC)" in last and str(exp) in last
    assert {p: p.stat().st_mtime_ns for p in exp.rglob("*")} == before  # no lock, no config backup, no event file


def test_a_lock_that_cannot_be_written_is_not_left_behind(tmpfs):
    disk = tmpfs("lock", "64k")
    _fill(disk, 0)
    with pytest.raises(RunLockError, match=r"cannot write .*run.lock: no space left on device \(ENOSPC\)"):
        ExperimentLock(disk).acquire()
    assert not (disk / LOCK_FILE).exists()


def test_config_backups_are_whole_or_absent(tmp_path, monkeypatch):
    """The previous total_config.py is kept before the new one is written; a failed write leaves neither
    a truncated backup nor a truncated total_config.py."""
    from lzero_ext.bench.fault_job import build_configs
    from lzero_ext.entry import configs as configs_module
    from lzero_ext.entry.run_guard import RunGuard

    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "total_config.py").write_text("task_configs = ['an older run']\n")
    guard = RunGuard(str(exp), build_configs(["CartPole"], exp_name=str(exp), seed=0), seed=0, resume=False)
    with guard:
        def no_space(text_of, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(configs_module.pprint, "pformat", no_space)
        with pytest.raises(OSError):
            guard.record_config()
    assert (exp / "total_config.py").read_text() == "task_configs = ['an older run']\n"
    assert sorted(p.name for p in exp.iterdir()) == ["total_config.py"]


# ---------------------------------------------------------------------- evaluate and watch
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from lzero_ext.bench.fault_job import build_configs
    from lzero_ext.entry import train_scalezero

    exp = tmp_path_factory.mktemp("tiny") / "exp"
    train_scalezero(build_configs(["CartPole"], exp_name=str(exp), seed=0), max_env_step=10_000, max_train_iter=2,
                    exp_name=str(exp), checkpoint_freq=2, progress=False)
    return exp


def _evaluate(argv, capsys, monkeypatch):
    from lzero_ext import evaluate

    def no_work(*args, **kwargs):
        raise AssertionError("the evaluation ran before its output directories were checked")

    monkeypatch.setattr(evaluate, "evaluate_task", no_work)
    with pytest.raises(SystemExit) as stop:
        evaluate.main(argv)
    return stop.value.code, capsys.readouterr().err


def test_evaluate_video_onto_an_existing_file_is_one_line_before_any_work(tiny_run, tmp_path, capsys, monkeypatch):
    (tmp_path / "clip.gif").write_bytes(b"GIF")
    code, err = _evaluate(["--exp-name", str(tiny_run), "--video", str(tmp_path / "clip.gif")], capsys, monkeypatch)
    assert "Traceback" not in err
    assert str(code).startswith(f"error: --video {tmp_path / 'clip.gif'}") and "(EEXIST)" in str(code)


def test_evaluate_video_on_a_read_only_place_is_one_line_before_any_work(tiny_run, tmpfs, capsys, monkeypatch):
    disk = tmpfs("ro_video", "1m", read_only=True)
    code, err = _evaluate(["--exp-name", str(tiny_run), "--video", str(disk / "videos")], capsys, monkeypatch)
    assert "Traceback" not in err and "(EROFS)" in str(code) and str(disk / "videos") in str(code)


def test_evaluate_refuses_an_empty_exp_name(capsys):
    from lzero_ext import evaluate

    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--exp-name", ""])
    assert stop.value.code == 2 and "--exp-name is empty" in capsys.readouterr().err


def test_training_refuses_an_empty_exp_name(capsys):
    from lzero_ext.bench.fault_job import main

    with pytest.raises(SystemExit) as stop:
        main(["--exp-name", ""])
    assert stop.value.code == 2 and "--exp-name is empty" in capsys.readouterr().err


def test_a_video_that_cannot_be_written_keeps_the_evaluation(tiny_run, tmp_path, monkeypatch):
    """A write failure after the evaluation (disk filled meanwhile) is a note in the table, not a lost result."""
    from lzero_ext import evaluate
    from lzero_ext.entry import watch

    def full(self, out_dir):
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(out_dir, "CartPole-v1.gif"))

    monkeypatch.setattr(watch.EpisodeRecorder, "write", full)
    (result,) = evaluate.evaluate_run(str(tiny_run), episodes=1, video_dir=str(tmp_path / "videos"))
    assert len(result.returns) == 1 and result.video is None
    assert result.note == f"no video: cannot write {tmp_path / 'videos' / 'CartPole-v1.gif'}: no space left on device (ENOSPC)"


def test_a_benchmark_on_an_unusable_path_is_one_line(tmp_path):
    import sys

    (tmp_path / "plain").write_text("x")
    done = subprocess.run([sys.executable, "-m", "lzero_ext.bench", "faults", "--runs", "1", "--work-dir",
                           str(tmp_path / "plain" / "work")], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot use {tmp_path / 'plain'}/work") and last.endswith("not a directory (ENOTDIR)")
