"""One builder and command line for every zoo config: a suite is its presets and its task specs.

A zoo config (``zoo/<suite>/config/*.py``) declares a :class:`Suite`: its presets (keyword dataclasses
over :class:`SuitePreset`), the RunConfig fields that differ from the defaults, and how a task name
becomes a :class:`~lzero_ext.entry.run_config.TaskEnvSpec`. :meth:`Suite.build_configs` turns a preset
into the per-task LightZero config pairs, and :meth:`Suite.main` is the suite's command line.

Example::

    >>> from lzero_ext.entry.suite import zoo_module
    >>> suite = zoo_module("atari").SUITE
    >>> [main.env.env_id for main, _ in suite.build_configs("smoke", games=["Pong"], exp_name="runs/p", cuda=False)]
    ['Pong']
"""
import argparse
import ast
import dataclasses
import importlib
import re
import typing
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from easydict import EasyDict

from lzero_ext.entry.run_config import RunConfig, TaskEnvSpec, build_task_configs

ZOO_MODULES: Dict[str, str] = {
    "atari": "zoo.atari.config.scalezero_multitask_config",
    "dmc": "zoo.dmc.config.scalezero_dmc_multitask_config",
    "jericho": "zoo.jericho.config.scalezero_jericho_multitask_config",
    "minatar": "zoo.minatar.config.scalezero_minatar_multitask_config",
    "multidomain": "zoo.multidomain.config.scalezero_multidomain_config",
}


def zoo_module(suite: str) -> ModuleType:
    """The zoo config module of ``suite`` (its ``SUITE``, ``PRESETS`` and ``build_configs``)."""
    if suite not in ZOO_MODULES:
        raise ValueError(f"unknown suite {suite!r}; choose from {sorted(ZOO_MODULES)}")
    return importlib.import_module(ZOO_MODULES[suite])


@dataclass(frozen=True, kw_only=True)
class SuitePreset:
    """Sizes every suite's presets have; a suite's preset class adds its own (episode caps, encoders)."""

    tasks: Tuple[str, ...]  # the preset's games or tasks
    max_env_step: int  # per task
    embed_dim: int  # transformer width
    num_layers: int
    num_heads: int
    num_experts: int  # routed MoE experts per block
    num_simulations: int  # MCTS simulations per step
    batch_size: int  # per task
    collector_env_num: int
    evaluator_env_num: int
    n_evaluator_episode: Optional[int] = None  # episodes per evaluation; None: evaluator_env_num
    game_segment_length: int
    num_unroll_steps: int  # >= 4: lightzero's loss logging indexes the middle of the unroll
    infer_context: int
    eval_freq: int  # learner iterations between evaluations, where eval_env_step_fractions is None
    # evaluations at these fractions of each task's env-step budget (plus the baseline and the final one); None:
    # every eval_freq learner iterations
    eval_env_step_fractions: Optional[Tuple[float, ...]] = (0.25, 0.5, 0.75)
    final_eval_episodes: Optional[int] = 10  # episodes of each task's final evaluation; None: n_evaluator_episode
    initial_eval: bool = True  # the baseline evaluation before training (policy.initial_eval; --no-initial-eval too)
    # env steps per task and round (every task the same, whatever its episode lengths); None: one segment per env
    collect_env_steps_per_round: Optional[int] = None
    replay_buffer_size: int  # per task
    checkpoint_freq: int  # learner iterations between checkpoints
    learning_rate: float = 1e-4
    update_per_collect: Optional[int] = None  # learner steps per collection round; None: replay ratio 0.25
    torch_threads: Optional[int] = None  # intra-op CPU threads of a CPU run (--threads overrides); None: torch's default
    # intra-op CPU threads while the run learns (replay sampling and learner steps: large matmuls and convolutions, where
    # a second core pays off, unlike the search's one-token passes); capped at the CPUs this process may use; None: as
    # torch_threads. --threads sets both.
    learn_threads: Optional[int] = None
    dps_min_stage0_iters: int = 50_000  # --dps: train iterations before the first stage switch (docs/dps.md)
    dps_max_stage_iters: int = 20_000  # --dps: a stage ends after this many iterations at the latest

    def __post_init__(self) -> None:
        if self.final_eval_episodes is not None and self.final_eval_episodes < self.evaluator_env_num:
            raise ValueError(f"final_eval_episodes={self.final_eval_episodes} must be at least evaluator_env_num="
                             f"{self.evaluator_env_num} (every evaluator env plays an episode)")

    @property
    def round_env_steps(self) -> int:
        """Env steps per task and round by default: one full segment per collector env."""
        return self.collector_env_num * self.game_segment_length

    def task_sizes(self) -> Dict[str, Any]:
        """The :class:`TaskEnvSpec` sizes this preset sets: batch, env counts, episodes, env manager."""
        return dict(batch_size=self.batch_size, collector_env_num=self.collector_env_num,
                    evaluator_env_num=self.evaluator_env_num, n_evaluator_episode=self.n_evaluator_episode,
                    env_manager="subprocess" if self.collector_env_num > 1 else "base")


def parse_overrides(pairs: Sequence[str]) -> Dict[str, Any]:
    """``['num_simulations=8', 'minimal_action_set=True']`` (``--set``) -> ``{'num_simulations': 8, ...}``: each value
    a Python literal (``8``, ``1e-3``, ``True``, ``None``, ``(0.5,)``), else the plain string."""
    overrides: Dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--set takes KEY=VALUE (a preset field and a Python literal), got {pair!r}")
        try:
            overrides[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[key] = text
    return overrides


def _checked(name: str, annotation: Any, value: Any) -> Any:
    """``value`` as the preset field ``name`` of type ``annotation`` takes it (an int for a float, a list for a
    tuple); a ValueError naming the field and the type otherwise."""
    choices = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Union else (annotation,)
    for choice in choices:
        kind = typing.get_origin(choice) or choice
        if value is None and choice is type(None):
            return None
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is tuple and isinstance(value, (tuple, list)):
            return tuple(value)
        if kind is str and isinstance(value, str):
            return value
    expected = " or ".join(getattr(c, "__name__", str(c)) for c in choices).replace("NoneType", "None")
    raise ValueError(f"--set {name}={value!r}: {name} takes {expected}")


def override_preset(preset: "SuitePreset", overrides: Mapping[str, Any]) -> "SuitePreset":
    """``preset`` with some fields replaced (``--set KEY=VALUE``), each checked against the field's type; an unknown
    field or a wrong type is a ValueError that names it."""
    fields = {f.name: f for f in dataclasses.fields(preset)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"--set: unknown preset field(s) {unknown}; {type(preset).__name__} has {sorted(fields)}")
    if "tasks" in overrides:
        raise ValueError("--set tasks=...: name the tasks with the suite's own flag (--games / --tasks)")
    hints = typing.get_type_hints(type(preset))
    return dataclasses.replace(preset, **{key: _checked(key, hints[key], value) for key, value in overrides.items()})


def overrides_suffix(overrides: Mapping[str, Any]) -> str:
    """A file-name-safe tag of the overrides for default experiment names: ``{'num_simulations': 8}`` ->
    ``'_num_simulations8'``."""
    return "".join(re.sub(r"[^A-Za-z0-9_.+-]", "", f"_{key}{value}") for key, value in sorted(overrides.items()))


@dataclass(frozen=True)
class SuiteFlag:
    """A command-line flag of one suite only; its value reaches ``task_specs`` as ``keyword``."""

    flag: str  # e.g. '--game-dir'
    keyword: str  # keyword of build_configs and task_specs, e.g. 'games_dir'
    options: Mapping[str, Any] = field(default_factory=dict)  # argparse add_argument keywords


@dataclass(frozen=True, kw_only=True)
class Suite:
    """A benchmark suite: presets, the run fields it changes, and its task specs."""

    name: str  # default experiment directory: data_scalezero/<name>_<preset>_<moe|dense>[_dps]_<N><games|tasks>
    doc: str  # the command line's help (the zoo module's docstring)
    presets: Mapping[str, SuitePreset]
    cpu_preset: str = "cpu"  # default preset without a GPU
    gpu_preset: str  # default preset with one
    task_flag: str = "--games"  # the flag (and build_configs keyword) naming the tasks
    task_help: str
    score_kind: str  # the summary's score column: 'atari' (HNS), 'dmc' (return/1000) or 'raw'
    # (preset, cuda) -> RunConfig fields beyond the preset's shared sizes (policy type, discount, extras)
    run_fields: Callable[[Any, bool], Dict[str, Any]]
    # (preset, task names, **flag values) -> one TaskEnvSpec per task; a clear ValueError for an unknown task
    task_specs: Callable[..., List[TaskEnvSpec]]
    dps: Mapping[str, Any]  # policy.dps settings besides enabled and the preset's iteration limits
    needs_dps_targets: bool = False  # no target table: --dps needs --dps-target GAME=SCORE for every task
    flags: Tuple[SuiteFlag, ...] = ()

    def __post_init__(self) -> None:
        from lzero_ext.summary import KINDS

        if self.score_kind not in KINDS:
            raise ValueError(f"Suite {self.name}: score_kind {self.score_kind!r} is not one of {sorted(KINDS)}")
        missing = sorted({self.cpu_preset, self.gpu_preset} - set(self.presets))
        if missing:
            raise ValueError(f"Suite {self.name}: default presets {missing} are not among {sorted(self.presets)}")
        if not self.task_flag.startswith("--"):
            raise ValueError(f"Suite {self.name}: task_flag must be a long flag ('--games'), got {self.task_flag!r}")

    @property
    def takes_dps_targets(self) -> bool:
        """Whether ``--dps-target`` is offered: suites without one benchmark's table (``dps.suite`` None)."""
        return self.needs_dps_targets or self.dps.get("suite") is None

    @property
    def task_keyword(self) -> str:
        return self.task_flag.lstrip("-").replace("-", "_")

    def preset(self, name: str) -> SuitePreset:
        if name not in self.presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(self.presets)}")
        return self.presets[name]

    def run_config(self, preset: SuitePreset, *, exp_name: str, cuda: bool, dense: bool = False, dps: bool = False,
                   dps_targets: Optional[Mapping[str, float]] = None,
                   amp: Optional[str] = None, compile: Optional[bool] = None) -> RunConfig:
        """The run-level settings at the preset's sizes; ``dps_targets`` (score per task) turn DPS on too."""
        dps_block = dict(enabled=dps or dps_targets is not None, **self.dps,
                         min_stage0_iters=preset.dps_min_stage0_iters, max_stage_iters=preset.dps_max_stage_iters)
        if dps_targets is not None:  # over the suite's own table, if it has one
            dps_block["targets"] = {**dps_block.get("targets", {}), **dps_targets}
        fields = dict(exp_name=exp_name, cuda=cuda, embed_dim=preset.embed_dim, num_layers=preset.num_layers,
                      num_heads=preset.num_heads, dense=dense, num_experts=preset.num_experts,
                      num_simulations=preset.num_simulations, num_unroll_steps=preset.num_unroll_steps,
                      infer_context=preset.infer_context, game_segment_length=preset.game_segment_length,
                      learning_rate=preset.learning_rate, update_per_collect=preset.update_per_collect,
                      eval_freq=preset.eval_freq, replay_buffer_size=preset.replay_buffer_size,
                      eval_env_step_fractions=preset.eval_env_step_fractions,
                      final_eval_episodes=preset.final_eval_episodes, initial_eval=preset.initial_eval,
                      collect_env_steps_per_round=preset.collect_env_steps_per_round or preset.round_env_steps,
                      amp=amp, compile=compile, dps=dps_block)
        return RunConfig(**{**fields, **self.run_fields(preset, cuda)})

    def build_configs(self, preset_name: str, *, dense: bool = False, exp_name: Optional[str] = None,
                      cuda: Optional[bool] = None, dps: bool = False, dps_targets: Optional[Mapping[str, float]] = None,
                      amp: Optional[str] = None, compile: Optional[bool] = None,
                      overrides: Optional[Mapping[str, Any]] = None, **keys: Any) -> List[Tuple[EasyDict, EasyDict]]:
        """All tasks' config pairs for a preset. ``keys``: the task list under the suite's task keyword
        (``games`` or ``tasks``; default: the preset's) and the suite's own flags (e.g. Jericho's ``games_dir``);
        ``amp`` and ``compile`` are :class:`RunConfig`'s, None: the policy's defaults; ``overrides`` replace preset
        fields (:func:`override_preset`, ``--set``)."""
        import torch

        preset = override_preset(self.preset(preset_name), overrides or {})
        allowed = {self.task_keyword} | {f.keyword for f in self.flags}
        unknown = sorted(set(keys) - allowed)
        if unknown:
            raise TypeError(f"build_configs of {self.name} got unexpected keywords {unknown}; it takes {sorted(allowed)}")
        names = list(keys.pop(self.task_keyword, None) or preset.tasks)
        if len({n.lower() for n in names}) != len(names):
            raise ValueError(f"{self.task_keyword} must be distinct, got {names}")
        specs = self.task_specs(preset, names, **keys)  # a clear error for an unknown task, before anything starts
        if dps and self.needs_dps_targets and dps_targets is None:
            raise ValueError(f"DPS on {self.name} needs a target score for every task (there is no target table)")
        if dps_targets is not None and self.needs_dps_targets and set(dps_targets) != {s.name for s in specs}:
            raise ValueError(f"--dps needs one --dps-target per task: missing "
                             f"{sorted({s.name for s in specs} - set(dps_targets))}, "
                             f"unknown {sorted(set(dps_targets) - {s.name for s in specs})}")
        cuda = torch.cuda.is_available() if cuda is None else cuda
        dps_on = dps or dps_targets is not None
        if dps_on:  # every task needs a target, from the suite's table or the command line, before anything starts
            from lzero_ext.dps import DPS_TARGETS, resolve_targets

            resolve_targets([s.name for s in specs], DPS_TARGETS.get(self.dps.get("suite"), {}),
                            {**self.dps.get("targets", {}), **(dps_targets or {})})
        variant = ("dense" if dense else "moe") + ("_dps" if dps_on else "")
        exp_name = exp_name or (f"data_scalezero/{self.name}_{preset_name}{overrides_suffix(overrides or {})}_{variant}_"
                                f"{len(specs)}{self.task_keyword}")
        run = self.run_config(preset, exp_name=exp_name, cuda=cuda, dense=dense, dps=dps, dps_targets=dps_targets,
                              amp=amp, compile=compile)
        return build_task_configs(run, specs)

    # ------------------------------------------------------------------ command line
    def arg_parser(self) -> argparse.ArgumentParser:
        """The shared flags (lzero_ext.entry.cli) and this suite's own."""
        import torch

        from lzero_ext.entry.cli import scalezero_arg_parser

        default = self.gpu_preset if torch.cuda.is_available() else self.cpu_preset
        parser = scalezero_arg_parser(self.doc, presets=self.presets, default_preset=default,
                                      task_flag=self.task_flag, task_help=self.task_help)
        for flag in self.flags:
            parser.add_argument(flag.flag, dest=flag.keyword, **flag.options)
        if self.takes_dps_targets:
            parser.add_argument("--dps-target", nargs="+", default=[], metavar="GAME=SCORE",
                                help=f"with --dps: the score that counts a game as solved ({self.name}: "
                                     f"{'every game, there is no target table' if self.needs_dps_targets else 'over its table'})")
        return parser

    def main(self, argv: Optional[Sequence[str]] = None) -> None:
        """``python -m zoo.<suite>.config.<module>``: parse the flags, build the configs, train."""
        from lzero_ext.entry.cli import parse_scalezero_args, run_cli

        parser = self.arg_parser()
        args = parse_scalezero_args(parser, argv)
        targets = None
        if self.needs_dps_targets and args.dps and not args.dps_target:
            parser.error(f"--dps on {self.name} needs --dps-target GAME=SCORE for every game (there is no target table)")
        if self.takes_dps_targets and args.dps and args.dps_target:
            try:
                targets = parse_targets(args.dps_target)
            except ValueError as error:
                parser.error(str(error))
        try:
            overrides = parse_overrides(args.set)
            preset = override_preset(self.presets[args.preset], overrides)
        except ValueError as error:
            parser.error(str(error))
        keys = {self.task_keyword: args.tasks, **{f.keyword: getattr(args, f.keyword) for f in self.flags}}
        run_cli(args, lambda **run_keys: self.build_configs(
                    args.preset, dense=args.dense, exp_name=args.exp_name, cuda=args.cuda,
                    dps=args.dps, dps_targets=targets, overrides=overrides, **keys, **run_keys),
                torch_threads=preset.torch_threads, learn_threads=preset.learn_threads, max_env_step=args.max_env_step or preset.max_env_step,
                score_kind=self.score_kind, checkpoint_freq=preset.checkpoint_freq)


def parse_targets(pairs: Sequence[str]) -> Dict[str, float]:
    """``['detective=100', 'zork1=20']`` -> ``{'detective': 100.0, 'zork1': 20.0}`` (clear error otherwise)."""
    targets = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            targets[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise ValueError(f"--dps-target takes GAME=SCORE, got {pair!r}")
    return targets

