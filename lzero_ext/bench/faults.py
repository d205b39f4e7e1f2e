"""Randomised fault injection on the smallest real runs: ``python -m lzero_ext.bench faults --runs N``.

Each run trains :mod:`lzero_ext.bench.fault_job` (1 rank, or 2 under ``torchrun``) in a fresh
directory, injects one fault, then resumes with ``--resume`` and checks the outcome:

==============  ==================================================================================
fault           what happens
==============  ==================================================================================
kill9           SIGKILL to the job's process group at a random moment
sigint          SIGINT to the process group (a terminal's Ctrl-C) at a random moment
sigterm         SIGTERM to the process group (what ``timeout`` and schedulers send)
truncate        the newest checkpoint cut in half after the run (resume must fall back)
delete          the newest checkpoint deleted after the run (resume must fall back)
nan             NaN value targets at a random iteration (``SCALEZERO_FAULT_NAN_AT_ITER``)
second_job      a second job on the same ``--exp-name`` while the first runs
disk_full       the experiment on a 1 MiB tmpfs (root only; skipped otherwise)
==============  ==================================================================================

The signal moments: 1 in 3 within 15 s of the run's start (its lock taken), else within 3 s after
its first checkpoint (so most signals hit training with a checkpoint to resume from).

Counted: **hangs** (a process past ``--timeout``, or one left behind by a finished job: an
orphan), **lost checkpoints** (the newest checkpoint that was complete before the fault, if not
damaged on purpose, is missing or unreadable afterwards, or the resume starts from an older one)
and **unclear errors** (a non-zero exit without one known line, any ``Traceback``, or a resume
that fails). The last line is exactly ``faults: N runs, H hangs, L lost checkpoints, U unclear errors``.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

FAULTS_1RANK = ("kill9", "sigint", "sigterm", "truncate", "delete", "nan", "second_job", "disk_full")
FAULTS_2RANK = ("kill9", "sigterm", "nan")
SIGNALLED = ("kill9", "sigint", "sigterm")
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
    notes: List[str] = field(default_factory=list)


def _job_command(exp: Path, iters: int, ranks: int, *, resume: bool, port: int) -> List[str]:
    job = ["--exp-name", str(exp), "--max-train-iter", str(iters)] + (["--resume"] if resume else [])
    if ranks == 1:
        return [sys.executable, "-m", "lzero_ext.bench.fault_job", *job]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(ranks),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--max-restarts", "0",
            "-m", "lzero_ext.bench.fault_job", "--tasks", "CartPole", "Acrobot", *job]


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
    import torch

    try:
        return isinstance(torch.load(path, map_location="cpu", weights_only=False), dict)
    except Exception:  # noqa: BLE001  (any unreadable file)
        return False


def _unclear(proc: Proc, expected_codes: Sequence[int]) -> Optional[str]:
    """Why the job's end was unclear, or None: a traceback, or a failure without one known line."""
    text = proc.output()
    if "Traceback" in text and not _only_torchrun_traceback(text):
        return "traceback"
    if proc.returncode in expected_codes or proc.returncode in (0, -signal.SIGKILL):
        return None
    lines = [line for line in text.splitlines() if line.strip() and not TORCHRUN_NOISE.search(line)]
    ours = [line for line in lines if CLEAR_LINES.match(line)]
    return None if ours else f"exit {proc.returncode} without a clear line"


def _only_torchrun_traceback(text: str) -> bool:
    """torchrun reports a failed worker with its own traceback (ChildFailedError); the workers must not."""
    blocks = text.split("Traceback (most recent call last):")[1:]
    return all("torch/distributed" in block and ("ChildFailedError" in block or "SignalException" in block)
               for block in blocks)


class FaultBench:
    def __init__(self, work: Path, *, timeout: float, seed: int) -> None:
        self.work, self.timeout = work, timeout
        self.rng = random.Random(seed)
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
        self.port = 29650 + seed % 200

    def run_one(self, index: int, fault: str, ranks: int) -> Outcome:
        out = Outcome(fault, ranks)
        root = self.work / f"run{index:03d}_{fault}_{ranks}r"
        root.mkdir(parents=True)
        exp = root / "exp"
        mounted = False
        if fault == "disk_full":
            mounted = self._mount_tmpfs(root / "disk")
            if not mounted:
                out.notes.append("skipped: not root or mount failed")
                return out
            exp = root / "disk" / "exp"
        # the first job must outlast the second's start; signalled jobs must still run after their first checkpoint
        iters = 60 if fault == "second_job" else self.rng.randint(20, 40) if fault in SIGNALLED else self.rng.randint(6, 10)
        env = dict(self.env)
        if fault == "nan":
            env["SCALEZERO_FAULT_NAN_AT_ITER"] = str(self.rng.randint(3, iters))
        self.port += 1
        first = _start(_job_command(exp, iters, ranks, resume=False, port=self.port), root / "first.log", env)
        seen = self._drive(first, fault, exp, iters, ranks, root, out)
        out.hangs += int(first.hung) + _orphans(first)
        unclear = _unclear(first, {"sigint": (130,), "sigterm": (143,), "nan": (1,), "disk_full": (1,)}.get(fault, ()))
        if unclear:
            out.unclear += 1
            out.notes.append(f"first job: {unclear}")
        damaged = self._damage(fault, exp)
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", str(root / "disk")], check=False)
        out.lost += self._lost(seen, damaged, out)
        self._resume(exp, iters, ranks, root, seen, damaged, out)
        if mounted:
            subprocess.run(["umount", "-l", str(root / "disk")], check=False)
        return out

    # ------------------------------------------------------------------ steps
    def _drive(self, proc: Proc, fault: str, exp: Path, iters: int, ranks: int, root: Path, out: Outcome) -> Dict[str, Path]:
        """Runs the first job to its end with the fault injected; returns each rank's newest complete checkpoint."""
        seen: Dict[str, Path] = {}
        # The moment: 1 in 3 within 15 s of the run's start (lock taken), else within 3 s of its first checkpoint.
        after_checkpoint = self.rng.random() < 2 / 3
        delay = self.rng.uniform(0.0, 3.0 if after_checkpoint else 15.0)
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
            if fault in SIGNALLED and not fired and fire_at is not None and time.time() >= fire_at:
                sig = {"kill9": signal.SIGKILL, "sigint": signal.SIGINT, "sigterm": signal.SIGTERM}[fault]
                try:
                    os.killpg(proc.popen.pid, sig)
                except ProcessLookupError:
                    pass
                fired = True
            if fault == "second_job" and second is None and (exp / "run.lock").exists():
                self.port += 1
                second = _start(_job_command(exp, iters, ranks, resume=False, port=self.port), root / "second.log",
                                self.env)
            time.sleep(0.25)
        _wait(proc, self.timeout)
        for rank, paths in _checkpoints(exp).items():  # the job's last save (latest.json only names complete files)
            if paths:
                seen[rank] = paths[0]
        if fault in SIGNALLED and not fired:
            out.notes.append("the job ended before the signal")
        if second is not None:
            _wait(second, self.timeout)
            out.hangs += int(second.hung) + _orphans(second)
            refused = "in use by process" in second.output() or "already holds a run" in second.output()
            if second.returncode == 0 or not refused:
                out.unclear += 1
                out.notes.append(f"second job: exit {second.returncode} without naming the holder")
            elif "in use by process" not in second.output():
                out.notes.append("the first job had ended: the second was refused as a reuse")
        elif fault == "second_job":
            out.notes.append("the first job ended before the second could start")
        return seen

    def _damage(self, fault: str, exp: Path) -> Optional[Path]:
        if fault not in ("truncate", "delete"):
            return None
        newest = _checkpoints(exp).get("rank0", [])
        if not newest:
            return None
        if fault == "truncate":
            newest[0].write_bytes(newest[0].read_bytes()[: newest[0].stat().st_size // 2])
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

    def _resume(self, exp: Path, iters: int, ranks: int, root: Path, seen: Dict[str, Path], damaged: Optional[Path],
                out: Outcome) -> None:
        self.port += 1
        proc = _start(_job_command(exp, iters + 2, ranks, resume=True, port=self.port), root / "resume.log", self.env)
        _wait(proc, self.timeout)
        out.hangs += int(proc.hung) + _orphans(proc)
        text = proc.output()
        if proc.returncode != 0:
            nothing = "nothing to resume from" in text or "no intact checkpoint" in text
            if nothing and not seen:  # the fault came before the first checkpoint: a clear, correct refusal
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

    def _mount_tmpfs(self, path: Path) -> bool:
        if os.geteuid() != 0:
            return False
        path.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], capture_output=True)
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
    totals = [0, 0, 0]
    start = time.time()
    for index, (fault, ranks) in enumerate(plan(args.runs, bench.rng, ranks=args.ranks, kinds=args.faults)):
        t0 = time.time()
        outcome = bench.run_one(index, fault, ranks)
        totals = [totals[0] + outcome.hangs, totals[1] + outcome.lost, totals[2] + outcome.unclear]
        notes = "; ".join(outcome.notes)
        print(f"run {index + 1:3d}/{args.runs} {fault:<10} {ranks} rank(s) {time.time() - t0:5.0f} s  hangs {outcome.hangs} "
              f"lost {outcome.lost} unclear {outcome.unclear}" + (f"  ({notes})" if notes else ""), flush=True)
    print(f"total {time.time() - start:.0f} s; files in {work}" if args.work_dir else f"total {time.time() - start:.0f} s")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    print(f"faults: {args.runs} runs, {totals[0]} hangs, {totals[1]} lost checkpoints, {totals[2]} unclear errors")


if __name__ == "__main__":
    main()
