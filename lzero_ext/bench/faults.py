"""Randomised fault injection on the smallest real runs: ``python -m lzero_ext.bench faults --runs N``.

Each run trains :mod:`lzero_ext.bench.fault_job` (1 rank, or 2 under :mod:`lzero_ext.launch`, torchrun with
ScaleZero's exit codes) in a fresh
directory, injects one fault, then resumes with ``--resume`` and checks the outcome:

================  ================================================================================
fault             what happens
================  ================================================================================
kill9             SIGKILL to the job's process group at a random moment
sigint            SIGINT to the process group (a terminal's Ctrl-C) at a random moment
sigterm           SIGTERM to the process group (what ``timeout`` and schedulers send)
sighup            SIGHUP to the process group (a closed terminal or SSH session)
eval_signal       SIGINT, SIGTERM or SIGHUP during the baseline evaluation (Pendulum plays 20000-step
                  episodes)
truncate          the newest checkpoint cut in half after the run (resume must fall back)
delete            the newest checkpoint deleted after the run (resume must fall back)
bitflip           64 bytes of a tensor in the newest checkpoint inverted after the run (the checksum
                  must catch it and the resume fall back)
nan               NaN value targets at a random iteration (``fault_job --fault-nan-at-iter``)
second_job        a second job on the same ``--exp-name`` while the first runs
disk_full         the experiment on a 1 MiB tmpfs: refused before any file is written (root only)
disk_full_resume  a finished run on a tmpfs filled up to 16 KiB: its resume is refused in one line and
                  writes nothing; then, with room again, it resumes (root only)
finetune_resume   a LoRA fine-tune (``--init-from``) of a finished run, then a plain ``--resume``
                  of it: refused in one line; the resume with its settings continues
env_worker_kill   SIGKILL to one env worker process (``--env-manager subprocess``) after the first
                  checkpoint: one line naming it, a final checkpoint, no worker left behind
world_size        a finished 1-rank run resumed by 2 ranks: each rank names the mismatch and stops at
                  once (within 30 s); the resume with 1 rank continues
================  ================================================================================

The signal moments: 1 in 3 within 15 s of the run's start (its lock taken), else within 3 s after
its first checkpoint (so most signals hit training with a checkpoint to resume from).

Counted: **hangs** (a process past ``--timeout``, or one left behind by a finished job: an
orphan), **lost checkpoints** (the newest checkpoint that was complete before the fault, if not
damaged on purpose, is missing or unreadable afterwards, the resume starts from an older one, or it
starts from one damaged on purpose), **unclear errors** (a non-zero exit without one known line, any
``Traceback``, or a resume that fails) and **wrong exit codes** (130 / 143 / 129 for SIGINT / SIGTERM /
SIGHUP, 1 for an error, 0 for a run that ends well, for the launcher of two ranks as for one process).
The last line is exactly
``faults: N runs, H hangs, L lost checkpoints, U unclear errors, W wrong exit codes``.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

FAULTS_1RANK = ("kill9", "sigint", "sigterm", "sighup", "eval_signal", "truncate", "delete", "bitflip", "nan",
                "second_job", "disk_full", "disk_full_resume", "finetune_resume", "env_worker_kill", "world_size")
FAULTS_2RANK = ("kill9", "sigterm", "sighup", "nan")
SIGNALLED = ("kill9", "sigint", "sigterm", "sighup", "eval_signal", "env_worker_kill")
DAMAGED = ("truncate", "delete", "bitflip")  # the newest checkpoint is damaged on purpose after the run
ON_TMPFS = ("disk_full", "disk_full_resume")
SIGNALS = {"kill9": signal.SIGKILL, "sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sighup": signal.SIGHUP,
           "env_worker_kill": signal.SIGKILL}  # env_worker_kill: to one env worker, not the job's group
EXIT_CODES = {signal.SIGKILL: -signal.SIGKILL, signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
LONG_EVAL = ("--tasks", "Pendulum", "CartPole", "--episode-steps", "20000")  # a baseline evaluation of 20 s and more
CLEAR_LINES = re.compile(r"^(error: .+|interrupted by SIG[A-Z]+ .+|.+: error: .+)$")  # our one-liners and argparse's
TORCHRUN_NOISE = re.compile(r"torch\.distributed|torchrun|ChildFailedError|elastic|^\s|^=+$|^\[|^Root Cause|^Failures:|"
                            r"^\S+\.py FAILED|^-+$|^<NO_OTHER_FAILURES>|^W\d{4}|^E\d{4}|^I\d{4}")
RESUMED_FROM = re.compile(r"resumed from \S*iteration_(\d+)\.pth\.tar")


@dataclass
class Proc:
    """One job process (group) and what it printed."""

    popen: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.time)
    returncode: Optional[int] = None
    hung: bool = False

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Outcome:
    fault: str
    ranks: int
    hangs: int = 0
    lost: int = 0
    unclear: int = 0
    wrong_codes: int = 0
    notes: List[str] = field(default_factory=list)

    def check_code(self, what: str, proc: "Proc", expected: Sequence[int]) -> None:
        """Counts a wrong exit code of ``proc`` (a hung one was killed by the bench: not its own code)."""
        if not proc.hung and proc.returncode not in expected:
            self.wrong_codes += 1
            self.notes.append(f"{what}: exit {proc.returncode}, expected {' or '.join(map(str, expected))}")


def _job_command(exp: Path, iters: int, ranks: int, *, resume: bool, port: int, extra: Sequence[str] = ()) -> List[str]:
    job = ["--exp-name", str(exp), "--max-train-iter", str(iters), *extra] + (["--resume"] if resume else [])
    if ranks == 1:
        return [sys.executable, "-m", "lzero_ext.bench.fault_job", *job]
    return [sys.executable, "-m", "lzero_ext.launch", "--nnodes", "1", "--nproc_per_node", str(ranks),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--max-restarts", "0",
            "-m", "lzero_ext.bench.fault_job", "--tasks", "CartPole", "Acrobot", *job]


def flip_tensor_bytes(path: Path, count: int = 64) -> str:
    """Inverts ``count`` bytes in the middle of the largest tensor record of a torch zip checkpoint (a failing
    disk or a bad copy); returns the record's name. torch does not check the zip's own CRCs on load."""
    with zipfile.ZipFile(path) as archive:
        record = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    header = record.header_offset  # local file header: 30 bytes, then the name and the extra field
    start = (header + 30 + int.from_bytes(data[header + 26:header + 28], "little")
             + int.from_bytes(data[header + 28:header + 30], "little"))
    middle = start + record.file_size // 2 - count // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return record.filename


def _start(command: List[str], log: Path, env: Dict[str, str]) -> Proc:
    handle = open(log, "w")
    popen = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    handle.close()
    return Proc(popen, log)


def session_members(sid: int) -> List[int]:
    """PIDs of live processes in session ``sid`` (the job and everything it started)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # fields after ')': state, ppid, pgrp, session
                members.append(int(entry))
    return members


def _wait(proc: Proc, timeout: float) -> None:
    """Waits for the job; past ``timeout`` it counts as hung and is killed."""
    try:
        proc.returncode = proc.popen.wait(timeout=max(1.0, timeout - (time.time() - proc.started)))
    except subprocess.TimeoutExpired:
        proc.hung = True
        _kill_session(proc.popen.pid)
        proc.returncode = proc.popen.wait()


def _kill_session(sid: int) -> None:
    for pid in session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _orphans(proc: Proc, grace: float = 10.0) -> int:
    """Processes the finished job left behind (after ``grace`` seconds); they are killed."""
    deadline = time.time() + grace
    while time.time() < deadline and session_members(proc.popen.pid):
        time.sleep(0.2)
    left = session_members(proc.popen.pid)
    _kill_session(proc.popen.pid)
    return len(left)


def _checkpoints(exp: Path) -> Dict[str, List[Path]]:
    """Per rank directory: the checkpoints named by latest.json (complete by construction), newest first."""
    found = {}
    for rank_dir in sorted((exp / "ckpt").glob("rank*")):
        try:
            pointer = json.loads((rank_dir / "latest.json").read_text())
            found[rank_dir.name] = [rank_dir / name for name in reversed(pointer.get("history", []))]
        except (OSError, ValueError):
            found[rank_dir.name] = []
    return found


def _intact(path: Path) -> bool:
    from lzero_ext.checkpoint import CheckpointError, load_checkpoint

    try:
        load_checkpoint(path)  # readable, and its payload matches its checksum
        return True
    except (CheckpointError, OSError):
        return False


def _unclear(proc: Proc, expected_codes: Sequence[int]) -> Optional[str]:
    """Why the job's end was unclear, or None: a traceback, or a failure without one known line."""
    text = proc.output()
    if "Traceback" in text:
        return "traceback"
    if proc.returncode in expected_codes or proc.returncode in (0, -signal.SIGKILL):
        return None
    lines = [line for line in text.splitlines() if line.strip() and not TORCHRUN_NOISE.search(line)]
    ours = [line for line in lines if CLEAR_LINES.match(line)]
    return None if ours else f"exit {proc.returncode} without a clear line"


class FaultBench:
    def __init__(self, work: Path, *, timeout: float, seed: int) -> None:
        self.work, self.timeout = work, timeout
        self.rng = random.Random(seed)
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
        self.port = 29650 + seed % 200

    def _job(self, exp: Path, iters: int, ranks: int, log: Path, *, resume: bool = False,
             extra: Sequence[str] = ()) -> Proc:
        self.port += 1
        return _start(_job_command(exp, iters, ranks, resume=resume, port=self.port, extra=extra), log, self.env)

    def run_one(self, index: int, fault: str, ranks: int) -> Outcome:
        out = Outcome(fault, ranks)
        root = self.work / f"run{index:03d}_{fault}_{ranks}r"
        root.mkdir(parents=True)
        exp = root / "exp"
        disk = root / "disk"
        if fault in ON_TMPFS:
            if not self._mount_tmpfs(disk, "1m" if fault == "disk_full" else "64m"):
                out.notes.append("skipped: not root or mount failed")
                return out
            exp = disk / "exp"
        try:
            self._run_faulted(fault, ranks, root, exp, disk, out)
        finally:
            if fault in ON_TMPFS:
                subprocess.run(["umount", "-l", str(disk)], check=False)
        return out

    def _run_faulted(self, fault: str, ranks: int, root: Path, exp: Path, disk: Path, out: Outcome) -> None:
        # the first job must outlast the second's start; signalled jobs must still run after their first checkpoint
        iters = 60 if fault == "second_job" else self.rng.randint(20, 40) if fault in SIGNALLED else self.rng.randint(6, 10)
        extra: List[str] = []
        sig = SIGNALS.get(fault)
        if fault == "eval_signal":
            sig = self.rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
            extra = [*LONG_EVAL]
            out.notes.append(f"{sig.name} during the evaluation")
            iters = 4
        if fault == "env_worker_kill":
            extra = ["--env-manager", "subprocess"]
        if fault == "world_size":
            extra = ["--tasks", "CartPole", "Acrobot"]
        if fault == "finetune_resume":
            base = self._job(root / "base", 4, ranks, root / "base.log")
            _wait(base, self.timeout)
            out.hangs += int(base.hung) + _orphans(base)
            out.check_code("base job", base, (0,))
            extra = ["--init-from", str(root / "base"), "--finetune", "lora"]
        first_extra = extra + (["--fault-nan-at-iter", str(self.rng.randint(3, iters))] if fault == "nan" else [])
        first = self._job(exp, iters, ranks, root / "first.log", extra=first_extra)
        seen, fired = self._drive(first, fault, sig, exp, iters, ranks, root, out)
        out.hangs += int(first.hung) + _orphans(first)
        expected = (0,)
        finished = "total env steps" in first.output()  # its summary table printed: the signal met a finished run
        if fault in ("nan", "disk_full") or (fault == "env_worker_kill" and fired):
            expected = (1,)
        elif sig is not None and fired and not finished:
            expected = (EXIT_CODES[sig],)
        elif sig is not None:  # it ended before the signal, or the signal came while it shut down
            expected = (0, EXIT_CODES[sig])
        out.check_code("first job", first, expected)
        unclear = _unclear(first, expected)
        if unclear:
            out.unclear += 1
            out.notes.append(f"first job: {unclear}")
        if fault == "disk_full":
            self._check_nothing_written(exp, {}, out, "the run refused on a full disk")
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=False)
        damaged = self._damage(fault, exp)
        out.lost += self._lost(seen, damaged, out)
        if fault == "disk_full_resume":
            self._resume_on_full_disk(exp, iters, ranks, root, disk, out)
        if fault == "finetune_resume":
            self._plain_resume_of_a_finetune(exp, iters, ranks, root, out)
        if fault == "world_size":
            self._resume_with_two_ranks(exp, iters, root, out)
        self._resume(exp, iters, ranks, root, seen, damaged, out, extra)

    # ------------------------------------------------------------------ steps
    def _drive(self, proc: Proc, fault: str, sig: Optional[signal.Signals], exp: Path, iters: int, ranks: int,
               root: Path, out: Outcome) -> Tuple[Dict[str, Path], bool]:
        """Runs the first job to its end with the fault injected; returns each rank's newest complete checkpoint
        and whether the signal was sent."""
        seen: Dict[str, Path] = {}
        # The moment: 1 in 3 within 15 s of the run's start (lock taken), else within 3 s of its first checkpoint;
        # during the baseline evaluation: 3-6 s after the lock (the trainer is built in about 2 s).
        after_checkpoint = fault == "env_worker_kill" or (fault != "eval_signal" and self.rng.random() < 2 / 3)
        delay = self.rng.uniform(3.0, 6.0) if fault == "eval_signal" else \
            self.rng.uniform(0.0, 3.0 if after_checkpoint else 15.0)
        fire_at: Optional[float] = None
        fired = False
        second: Optional[Proc] = None
        while proc.popen.poll() is None and time.time() - proc.started < self.timeout:
            for rank, paths in _checkpoints(exp).items():
                if paths:
                    seen[rank] = paths[0]
            started = any(_checkpoints(exp).values()) if after_checkpoint else (exp / "run.lock").exists()
            if fire_at is None and started:
                fire_at = time.time() + delay
            if sig is not None and not fired and fire_at is not None and time.time() >= fire_at:
                workers = [pid for pid in session_members(proc.popen.pid) if pid != proc.popen.pid]
                try:
                    if fault != "env_worker_kill":
                        os.killpg(proc.popen.pid, sig)
                    elif workers:  # one env worker process of the job, not the job
                        os.kill(self.rng.choice(workers), sig)
                except ProcessLookupError:
                    pass
                fired = fault != "env_worker_kill" or bool(workers)
            if fault == "second_job" and second is None and (exp / "run.lock").exists():
                second = self._job(exp, iters, ranks, root / "second.log")
            time.sleep(0.25)
        _wait(proc, self.timeout)
        for rank, paths in _checkpoints(exp).items():  # the job's last save (latest.json only names complete files)
            if paths:
                seen[rank] = paths[0]
        if sig is not None and not fired:
            out.notes.append("the job ended before the signal")
        if fault == "eval_signal" and fired and "[eval]" in proc.output():
            out.notes.append("the baseline evaluation had ended before the signal")
        if second is not None:
            _wait(second, self.timeout)
            out.hangs += int(second.hung) + _orphans(second)
            out.check_code("second job", second, (1,))
            refused = "in use by process" in second.output() or "already holds a run" in second.output()
            if second.returncode == 0 or not refused:
                out.unclear += 1
                out.notes.append(f"second job: exit {second.returncode} without naming the holder")
            elif "in use by process" not in second.output():
                out.notes.append("the first job had ended: the second was refused as a reuse")
        elif fault == "second_job":
            out.notes.append("the first job ended before the second could start")
        return seen, fired

    def _damage(self, fault: str, exp: Path) -> Optional[Path]:
        if fault not in DAMAGED:
            return None
        newest = _checkpoints(exp).get("rank0", [])
        if not newest:
            return None
        if fault == "truncate":
            newest[0].write_bytes(newest[0].read_bytes()[: newest[0].stat().st_size // 2])
        elif fault == "bitflip":
            flip_tensor_bytes(newest[0])
        else:
            newest[0].unlink()
        return newest[0]

    def _lost(self, seen: Dict[str, Path], damaged: Optional[Path], out: Outcome) -> int:
        lost = 0
        for rank, path in seen.items():
            if path != damaged and not _intact(path):
                lost += 1
                out.notes.append(f"lost {rank}/{path.name}")
        return lost

    def _check_nothing_written(self, exp: Path, before: Dict[Path, int], out: Outcome, what: str) -> None:
        after = {p: p.stat().st_mtime_ns for p in exp.rglob("*")} if exp.exists() else {}
        if after != before:
            out.unclear += 1
            changed = sorted(str(p.relative_to(exp)) for p in set(after) ^ set(before) | {
                p for p in set(after) & set(before) if after[p] != before[p]})
            out.notes.append(f"{what} left files behind: {changed[:3]}")

    def _resume_on_full_disk(self, exp: Path, iters: int, ranks: int, root: Path, disk: Path, out: Outcome) -> None:
        """With 16 KiB left, ``--resume`` is one line (ENOSPC) and writes nothing; then the disk is freed."""
        before = {p: p.stat().st_mtime_ns for p in exp.rglob("*")}
        filler = disk / "filler"
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, shutil.disk_usage(disk).free - 16 * 1024))
        proc = self._job(exp, iters + 2, ranks, root / "resume_full.log", resume=True)
        _wait(proc, self.timeout)
        out.hangs += int(proc.hung) + _orphans(proc)
        out.check_code("resume on a full disk", proc, (1,))
        if "ENOSPC" not in proc.output() or _unclear(proc, (1,)):
            out.unclear += 1
            out.notes.append("resume on a full disk: no one-line ENOSPC refusal")
        self._check_nothing_written(exp, before, out, "the resume on a full disk")
        filler.unlink()

    def _plain_resume_of_a_finetune(self, exp: Path, iters: int, ranks: int, root: Path, out: Outcome) -> None:
        """A LoRA fine-tune resumed without its settings: refused in one line naming the fine-tune mode."""
        proc = self._job(exp, iters + 2, ranks, root / "resume_plain.log", resume=True)
        _wait(proc, self.timeout)
        out.hangs += int(proc.hung) + _orphans(proc)
        out.check_code("plain resume of a LoRA fine-tune", proc, (1,))
        if "run.finetune" not in proc.output() or _unclear(proc, (1,)):
            out.unclear += 1
            out.notes.append("plain resume of a LoRA fine-tune: no one-line refusal naming the fine-tune mode")

    def _resume_with_two_ranks(self, exp: Path, iters: int, root: Path, out: Outcome) -> None:
        """A 1-rank run resumed by 2 ranks: every rank names the mismatch and exits promptly."""
        proc = self._job(exp, iters + 2, 2, root / "resume_2ranks.log", resume=True)
        _wait(proc, self.timeout)
        out.hangs += int(proc.hung) + _orphans(proc)
        out.check_code("resume with 2 ranks", proc, (1,))
        text = proc.output()
        named = sum("was written by 1 rank(s); this run has 2" in line for line in text.splitlines())
        if named != 2 or _unclear(proc, (1,)):
            out.unclear += 1
            out.notes.append(f"resume with 2 ranks: {named} of 2 ranks named the mismatch")
        if time.time() - proc.started > 30:
            out.unclear += 1
            out.notes.append(f"resume with 2 ranks took {time.time() - proc.started:.0f} s to stop")

    def _resume(self, exp: Path, iters: int, ranks: int, root: Path, seen: Dict[str, Path], damaged: Optional[Path],
                out: Outcome, extra: Sequence[str] = ()) -> None:
        proc = self._job(exp, iters + 2, ranks, root / "resume.log", resume=True, extra=extra)
        _wait(proc, self.timeout)
        out.hangs += int(proc.hung) + _orphans(proc)
        text = proc.output()
        if proc.returncode != 0:
            nothing = "nothing to resume from" in text or "no intact checkpoint" in text
            if nothing and not seen:  # the fault came before the first checkpoint: a clear, correct refusal
                out.check_code("resume", proc, (1,))
                out.notes.append("no checkpoint before the fault: resume refused clearly")
                return
            out.unclear += 1
            out.notes.append(f"resume failed: exit {proc.returncode}: {text.strip().splitlines()[-1:] if text else ''}")
            return
        if "Traceback" in text:
            out.unclear += 1
            out.notes.append("resume printed a traceback")
        resumed = [int(m) for m in RESUMED_FROM.findall(text)]
        expected = [int(p.name.split("_")[1].split(".")[0]) for p in seen.values() if p != damaged]
        if resumed and expected and min(resumed) < min(expected) and damaged is None:
            out.lost += 1
            out.notes.append(f"resumed from iteration {min(resumed)}, newest complete was {min(expected)}")
        if damaged is not None and f"{damaged.name} at iteration" in text:
            out.lost += 1  # the damaged checkpoint was loaded as if intact: its data is corrupt
            out.notes.append(f"resumed from the damaged {damaged.name}")

    def _mount_tmpfs(self, path: Path, size: str) -> bool:
        if os.geteuid() != 0:
            return False
        path.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
        return result.returncode == 0


def plan(runs: int, rng: random.Random, *, ranks: Sequence[int], kinds: Sequence[str] = FAULTS_1RANK) -> List[tuple]:
    """``runs`` (fault, ranks) pairs: the fault kinds in turn (shuffled); with both rank counts every third run
    has 2 ranks (and a fault kind that applies to 2 ranks)."""
    faults: List[str] = []
    while len(faults) < runs:
        batch = list(kinds)
        rng.shuffle(batch)
        faults.extend(batch)
    two_rank_kinds = [k for k in kinds if k in FAULTS_2RANK] or list(FAULTS_2RANK)
    chosen = []
    for i, fault in enumerate(faults[:runs]):
        two = 2 in ranks and (1 not in ranks or i % 3 == 2)
        chosen.append((fault if not two or fault in FAULTS_2RANK else rng.choice(two_rank_kinds), 2 if two else 1))
    return chosen


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lzero_ext.bench faults", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="number of faulted runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault plan and moments")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds one job may take before it counts as hung")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2], choices=[1, 2], help="rank counts to use")
    parser.add_argument("--faults", nargs="+", choices=FAULTS_1RANK, default=list(FAULTS_1RANK), help="fault kinds to use")
    parser.add_argument("--work-dir", help="where the runs go (default: a temporary directory, removed after)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be a positive integer, got {args.runs}")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="scalezero_faults_"))
    bench = FaultBench(work, timeout=args.timeout, seed=args.seed)
    totals = [0, 0, 0, 0]
    start = time.time()
    for index, (fault, ranks) in enumerate(plan(args.runs, bench.rng, ranks=args.ranks, kinds=args.faults)):
        t0 = time.time()
        outcome = bench.run_one(index, fault, ranks)
        totals = [totals[0] + outcome.hangs, totals[1] + outcome.lost, totals[2] + outcome.unclear,
                  totals[3] + outcome.wrong_codes]
        notes = "; ".join(outcome.notes)
        print(f"run {index + 1:3d}/{args.runs} {fault:<16} {ranks} rank(s) {time.time() - t0:5.0f} s  hangs {outcome.hangs} "
              f"lost {outcome.lost} unclear {outcome.unclear} codes {outcome.wrong_codes}" + (f"  ({notes})" if notes else ""),
              flush=True)
    print(f"total {time.time() - start:.0f} s; files in {work}" if args.work_dir else f"total {time.time() - start:.0f} s")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    print(f"faults: {args.runs} runs, {totals[0]} hangs, {totals[1]} lost checkpoints, {totals[2]} unclear errors, "
          f"{totals[3]} wrong exit codes")


if __name__ == "__main__":
    main()
