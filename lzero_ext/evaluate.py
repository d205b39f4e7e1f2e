"""Evaluate and watch a trained run: its own config, its latest (or a named) checkpoint, MCTS.

    python -m lzero_ext.evaluate --exp-name DIR [--checkpoint PATH] [--episodes N] [--games G ...] [--video DIR]
                                 [--device cuda|cpu|cuda:N]   (default: cuda when available, else cpu)

Loads ``<DIR>/total_config.py`` (every task's compiled config, written by the trainer) and the
checkpoint (default: the latest of ``<DIR>/ckpt/rank0``; a LoRA fine-tuned run's adapters are
rebuilt from ``<DIR>/finetune.json``), evaluates each task with the policy's eval mode (greedy MCTS,
lightzero's ``MuZeroEvaluator`` with the per-step UniZero cache call of ``lzero_ext.workers``, one in-process
env manager per task) for N episodes, and prints one row per task: episode return mean ± std and the
normalised score of the mean (Atari HNS, DMC return/1000). ``--video DIR`` writes one animated GIF per task of its first episode with the score
drawn on every frame (Atari screens, DMC frames rendered by MuJoCo, MinAtar boards in colour), and a
text transcript for Jericho (``<game>.transcript.txt``). A wrong path, a checkpoint of another architecture, or a game the run did not train ends
with one line naming the problem.
"""
import argparse
import ast
import math
import os
import statistics
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from easydict import EasyDict

from lzero_ext.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint
from lzero_ext.fs_errors import OutputDirError, check_output_dir, describe_os_error

SCORE_KINDS = {"atari_scalezero": "atari", "dmc_scalezero": "dmc"}  # env type -> summary score kind (else "raw")


class EvaluateError(ValueError):
    """Bad input to the evaluate command (path, games, checkpoint)."""


def _restore_floats(obj: Any) -> Any:
    """``total_config.py`` writes inf / nan as strings: back to floats."""
    if isinstance(obj, dict):
        return {k: _restore_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore_floats(v) for v in obj]
    if obj in ("inf", "-inf", "nan"):
        return float(obj)
    return obj


def load_task_configs(exp_dir: str) -> List[EasyDict]:
    """Every task's compiled config of a run, from ``<exp_dir>/total_config.py`` (a Python literal)."""
    path = Path(exp_dir) / "total_config.py"
    if not Path(exp_dir).is_dir():
        raise EvaluateError(f"--exp-name {exp_dir}: no such directory")
    if not path.is_file():
        raise EvaluateError(f"{exp_dir} has no total_config.py: not the directory of a ScaleZero run")
    source = path.read_text()
    try:
        configs = ast.literal_eval(source.split("task_configs = ", 1)[1].strip())
    except (IndexError, ValueError, SyntaxError) as error:
        raise EvaluateError(f"cannot read {path}: {type(error).__name__}") from None
    return [EasyDict(_restore_floats(cfg)) for cfg in configs]


def task_name(cfg: EasyDict, task_id: int) -> str:
    """The trainer's name of a task (its env id)."""
    env_id = cfg.env.get("env_id") or cfg.env.get("env_name") or f"task{task_id}"
    return str(env_id).replace("/", "-")


@dataclass
class LoadedRun:
    """A run's policy with its checkpoint loaded, its task configs and names."""

    exp_dir: str
    checkpoint: str
    policy: Any
    cfgs: List[EasyDict]
    task_names: List[str]
    train_iter: int

    def task_id(self, name: str) -> int:
        if name not in self.task_names:
            raise EvaluateError(f"the run did not train {name!r}; it trained {self.task_names}")
        return self.task_names.index(name)


def _architecture_mismatch(model_state: Dict[str, Any], saved: Dict[str, Any]) -> Optional[str]:
    missing = [k for k in model_state if k not in saved]
    extra = [k for k in saved if k not in model_state]
    shapes = [k for k in model_state if k in saved and tuple(saved[k].shape) != tuple(model_state[k].shape)]
    if not (missing or extra or shapes):
        return None
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} tensors differ in shape (e.g. {k}: {tuple(saved[k].shape)} in the checkpoint, "
                     f"{tuple(model_state[k].shape)} in the run's model)")
    if missing:
        parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
    return "; ".join(parts)


def resolve_device(device: Optional[str] = None) -> str:
    """``device`` checked (``cpu``, ``cuda`` or ``cuda:N``), or the default: ``cuda`` when available, else ``cpu``."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise EvaluateError(f"--device {device}: not a device (cpu, cuda or cuda:N)") from None
    if kind not in ("cpu", "cuda"):
        raise EvaluateError(f"--device {device}: evaluation runs on cpu or cuda")
    if kind == "cuda" and not torch.cuda.is_available():
        raise EvaluateError(f"--device {device}: no CUDA device is visible; use --device cpu")
    return device


def load_run_policy(exp_dir: str, checkpoint: Optional[str] = None, *, device: Optional[str] = None) -> LoadedRun:
    """Builds the run's policy from its saved config on ``device`` (default: :func:`resolve_device`) and loads
    ``checkpoint`` (default: the latest)."""
    import torch
    from ding.policy import create_policy

    import lzero_ext.registry  # noqa: F401  (registers envs, models, policies)
    from lzero_ext.entry.finetune import prepare_model_like_run
    from lzero_ext.model.text_encoder import frozen_pretrained_state_keys

    device = resolve_device(device)
    cfgs = load_task_configs(exp_dir)
    for cfg in cfgs:
        cfg.policy.update(cuda=device.startswith("cuda"), device=device)
        cfg.policy.model.world_model_cfg.device = device
    path = checkpoint or str(Path(exp_dir) / "ckpt" / "rank0")
    if checkpoint is not None and not Path(checkpoint).exists():
        raise EvaluateError(f"--checkpoint {checkpoint}: no such file or directory")
    resolved = str(resolve_checkpoint(path)) if Path(path).exists() else path
    state = load_checkpoint(resolved, required_keys=("policy",))
    torch.manual_seed(0)
    policy = create_policy(cfgs[0].policy, enable_field=["learn", "collect", "eval"])
    prepare_model_like_run(policy, exp_dir)
    frozen = set(frozen_pretrained_state_keys(policy._model))
    model_state = {k: v for k, v in policy._model.state_dict().items() if k not in frozen}
    problem = _architecture_mismatch(model_state, state["policy"]["model"])
    if problem:
        raise CheckpointError(f"checkpoint {resolved} is from another architecture than {exp_dir}'s config: {problem}")
    policy.learn_mode.load_state_dict(state["policy"])
    policy.set_task_configs({t: cfg.policy for t, cfg in enumerate(cfgs)})
    policy.recompute_pos_emb_diff_and_clear_cache()
    names = [task_name(cfg, t) for t, cfg in enumerate(cfgs)]
    return LoadedRun(str(exp_dir), resolved, policy, cfgs, names, int(state.get("train_iter", -1)))


# ---------------------------------------------------------------------- evaluation
@dataclass
class TaskEval:
    """One task's evaluation: episode returns, their normalised score, and what was written."""

    task_id: int
    name: str
    returns: List[float]
    kind: str
    video: Optional[str] = None
    note: str = ""
    episode_cap: Optional[str] = None  # how the run's episodes are cut short of the benchmark's (None: full episodes)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.returns) if self.returns else float("nan")

    @property
    def std(self) -> float:
        return statistics.pstdev(self.returns) if len(self.returns) > 1 else 0.0

    @property
    def normalized(self) -> Optional[float]:
        from lzero_ext.summary import normalized_score

        return normalized_score(self.kind, self.name, self.mean) if self.kind != "raw" else None


def evaluate_task(run: LoadedRun, task_id: int, *, episodes: int, video_dir: Optional[str] = None) -> TaskEval:
    """``episodes`` MCTS episodes of one task through lightzero's evaluator; with ``video_dir`` its first is filmed."""
    from ding.envs import create_env_manager, get_vec_env_setting
    from lzero.worker import muzero_evaluator
    from torch.utils.tensorboard import SummaryWriter

    from lzero_ext.entry.task_runtime import episode_cap, rank_local
    from lzero_ext.envs.finite_env import FiniteEnvManager
    from lzero_ext.entry.watch import EpisodeRecorder, VideoUnavailable
    from lzero_ext.workers import UniZeroFamilyEvaluator

    cfg, name = run.cfgs[task_id], run.task_names[task_id]
    kind = cfg.policy.get("score_kind") or SCORE_KINDS.get(cfg.env.type, "raw")
    env_fn, _, evaluator_env_cfg = get_vec_env_setting(cfg.env)
    recorder = EpisodeRecorder(name, record=video_dir is not None)
    factories = [partial(recorder.wrap, partial(env_fn, cfg=c), film=i == 0) for i, c in enumerate(evaluator_env_cfg)]
    manager_cfg = EasyDict(dict(cfg.env.manager, type="base"))  # in process: the recorder sees every step
    env = FiniteEnvManager(create_env_manager(manager_cfg, factories), task_id=task_id, task_name=name)
    env.seed(cfg.seed, dynamic_seed=False)
    out_dir = os.path.join(run.exp_dir, "evaluate")
    writer = SummaryWriter(os.path.join(out_dir, "log", name))
    with rank_local(muzero_evaluator):
        evaluator = UniZeroFamilyEvaluator(  # lightzero's, with the per-step cache call it makes for UniZero only
            eval_freq=1, n_evaluator_episode=episodes, stop_value=float("inf"), env=env,
            policy=run.policy.task_eval_mode(task_id), tb_logger=writer, exp_name=os.path.relpath(out_dir),
            instance_name=f"evaluate_{name}", policy_config=cfg.policy,
        )
        try:
            # as in training: the lockstep engine's batched step (both search trees)
            run.policy.run_workers("eval", {task_id: partial(evaluator.eval, None, run.train_iter, 0)})
        finally:
            evaluator.close()  # closes the envs too
            writer.close()
    result = TaskEval(task_id, name, recorder.returns[:episodes], kind,
                      episode_cap=episode_cap(env_fn, evaluator_env_cfg[0]))
    if video_dir is not None:
        try:
            result.video = recorder.write(video_dir)
        except VideoUnavailable as error:
            result.note = f"no video: {error}"
        except OSError as error:  # the evaluation is kept: the table still shows it
            result.note = f"no video: {describe_os_error(error, action='write')}"
    return result


def print_table(results: Sequence[TaskEval], *, file: Any = None) -> str:
    """Per-task table: episodes, return mean ± std, normalised score of the mean (where one exists); tasks whose
    episodes the run cuts short are marked ``*`` and named under the table."""
    from tabulate import tabulate

    from lzero_ext.summary import SCORE_NAMES, capped_note

    rows = []
    for r in results:
        score = r.normalized
        mark = "*" if r.episode_cap else ""
        rows.append([f"{r.task_id}: {r.name}{mark}", len(r.returns), f"{r.mean:.2f} ± {r.std:.2f}",
                     "-" if score is None or not math.isfinite(score) else f"{score:.3f} ({SCORE_NAMES[r.kind]})",
                     r.video or r.note or "-"])
    headers = ["task", "episodes", "return mean ± std", "normalised", "video (text games: transcript)"]
    table = tabulate(rows, headers=headers)
    note = capped_note((r.name, r.episode_cap) for r in results)
    table += f"\n{note}" if note else ""
    print(table, file=file or sys.stdout)
    return table


def evaluate_run(exp_dir: str, *, checkpoint: Optional[str] = None, episodes: int = 1,
                 games: Optional[Sequence[str]] = None, video_dir: Optional[str] = None,
                 device: Optional[str] = None) -> List[TaskEval]:
    """Loads the run on ``device`` (default: cuda when available) and evaluates the chosen tasks (default: all)."""
    if episodes < 1:
        raise EvaluateError(f"--episodes must be >= 1, got {episodes}")
    device = resolve_device(device)
    load_task_configs(exp_dir)  # a run's directory, before anything is created in it
    check_output_dir(Path(exp_dir) / "evaluate", flag="the evaluation log directory")  # before any work is done
    if video_dir is not None:
        check_output_dir(video_dir, flag="--video")
    run = load_run_policy(exp_dir, checkpoint, device=device)
    task_ids = [run.task_id(g) for g in games] if games else list(range(len(run.task_names)))
    return [evaluate_task(run, t, episodes=episodes, video_dir=video_dir) for t in task_ids]


def _interrupted(stop: Any) -> SystemExit:
    """The one line and exit status of an evaluation stopped by a signal (``stop``: a ``RunInterrupted``)."""
    print(f"interrupted by {stop.signal_name} during the evaluation: nothing to save", file=sys.stderr)
    return SystemExit(stop.exit_code)


def main(argv: Optional[Sequence[str]] = None) -> List[TaskEval]:
    parser = argparse.ArgumentParser(prog="python -m lzero_ext.evaluate", description=__doc__.split("\n")[0],
                                     epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp-name", required=True, help="the run's experiment directory")
    parser.add_argument("--checkpoint", help="a checkpoint file or directory (default: the run's latest)")
    parser.add_argument("--episodes", type=int, default=1, help="episodes per task (default 1)")
    parser.add_argument("--games", nargs="+", help="tasks to evaluate (default: every task the run trained)")
    parser.add_argument("--video", metavar="DIR", help="write one GIF per task (Jericho: a transcript) into DIR")
    parser.add_argument("--verbose", action="store_true", help="show lightzero / ding output and warnings too")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    args = parser.parse_args(argv)
    if not args.exp_name.strip():
        parser.error("--exp-name is empty: give the run's experiment directory")
    from lzero_ext.entry.run_logging import run_console
    from lzero_ext.entry.run_signals import RunInterrupted, RunSignals

    # SIGINT / SIGTERM / SIGHUP: one line, 130 / 143 / 129
    with run_console(verbose=args.verbose), RunSignals() as signals:
        try:
            results = evaluate_run(args.exp_name, checkpoint=args.checkpoint, episodes=args.episodes, games=args.games,
                                   video_dir=args.video, device=args.device)
        except (EvaluateError, CheckpointError, OutputDirError) as error:
            raise SystemExit(f"error: {error}") from None
        except OSError as error:
            raise SystemExit(f"error: {describe_os_error(error)}") from None
        except RunInterrupted as stop:
            raise _interrupted(stop) from None
        except Exception:
            if signals.received is None:
                raise
            # ding's in-process env manager wraps whatever an env step raised, the signal's RunInterrupted too, into a
            # RuntimeError: after a signal, any error is that signal (as in the trainer's run guard)
            raise _interrupted(RunInterrupted(signals.received)) from None
        except KeyboardInterrupt:
            print("interrupted by SIGINT during the evaluation: nothing to save", file=sys.stderr)
            raise SystemExit(130) from None
        print_table(results)
    return results


if __name__ == "__main__":
    main()
