"""Fixed cost of one MCTS search: lightzero's path (env-by-env KV caches, hashed lookups, one task's roots at a
time) against the batched KV cache (``lzero_ext.search.BatchedSearch``, every task's roots in one search), on
the MinAtar ``cpu`` preset's model.

``python -m lzero_ext.bench search [--batches 1 2 5 10 20 40 --repeats 5 --threads 1]``

For each batch size B (roots spread over the five games, as the collector's envs are), both paths run one
``num_simulations`` search over the same roots at steady state (contexts of previous steps cached). A least
squares fit of seconds against B gives each path's fixed cost per search (the intercept) and cost per root
(the slope). The last line is ``search: overhead lightzero X.X ms, ours Y.Y ms; per root lightzero A.AA ms,
ours B.BB ms``.
"""
import argparse
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from easydict import EasyDict
from tabulate import tabulate

from lzero_ext.bench.common import machine_load, median, set_threads


def _policy(preset: str, dense: bool) -> Any:
    from ding.policy import create_policy

    from lzero_ext.entry.configs import compile_task_configs
    from zoo.minatar.config.scalezero_minatar_multitask_config import build_configs

    configs = build_configs(preset, dense=dense, exp_name="/tmp/scalezero_bench_search", cuda=False)
    cfgs = compile_task_configs(configs, seed=0, exp_name="/tmp/scalezero_bench_search", save_cfg=False)
    return create_policy(cfgs[0].policy, enable_field=["collect"]), cfgs[0].policy


def spread_rows(batch: int, num_tasks: int) -> np.ndarray:
    """Task id of each root: B roots spread over the tasks in contiguous blocks."""
    return np.sort(np.arange(batch) % num_tasks)


class LightZeroPath:
    """lightzero's own path: its initial inference and ``UniZeroMCTSCtree.search`` (hashed, env-by-env KV caches),
    one task after another, the model bound to each task in turn (as lightzero runs one game)."""

    def __init__(self, model: Any, cfg: EasyDict) -> None:
        from lzero.mcts import UniZeroMCTSCtree
        self.model, self.mcts, self.cfg = model, UniZeroMCTSCtree(cfg), cfg

    def step(self, task_ids: np.ndarray, last_obs: torch.Tensor, last_actions: List[int], obs: torch.Tensor) -> Any:
        searches = []
        for task_id in np.unique(task_ids):
            rows = np.flatnonzero(task_ids == task_id)
            n = len(rows)
            with self.model.bind_task(int(task_id)):
                out = self.model.initial_inference(last_obs[rows], [last_actions[i] for i in rows], obs[rows],
                                                   np.zeros(n, dtype=int))
            roots = self.mcts.roots(n, [list(range(self.cfg.model.action_space_size))] * n)
            roots.prepare_no_noise([0.0] * n, out.policy_logits.tolist(), [-1] * n)
            searches.append((int(task_id), roots, out.latent_state.numpy(), n))

        def search() -> None:
            for task_id, roots, latents, n in searches:
                with self.model.bind_task(task_id):
                    self.mcts.search(roots, self.model, latents, [-1] * n, np.zeros(n, dtype=int))
        return search


class BatchedPath:
    """The batched KV cache and ``BatchedSearch`` over the same roots."""

    def __init__(self, model: Any, cfg: EasyDict, env_counts: Dict[int, int]) -> None:
        from lzero_ext.model.cached_inference import InferenceCache
        from lzero_ext.search import BatchedSearch
        self.model, self.cfg = model, cfg
        self.cache = InferenceCache(model.world_model, env_counts, num_simulations=cfg.num_simulations)
        self.search = BatchedSearch.from_policy_config(cfg)

    def step(self, task_ids: np.ndarray, last_obs: torch.Tensor, last_actions: List[int], obs: torch.Tensor) -> Any:
        from lzero_ext.model.cached_inference import initial_inference
        n = len(task_ids)
        env_ids = np.concatenate([np.arange((task_ids == t).sum()) for t in np.unique(task_ids)])
        slots = self.cache.slots(task_ids, env_ids)
        first = np.full(n, max(last_actions) == -1)
        out = initial_inference(self.model.world_model, obs, task_ids, self.cache, slots, last_obs=last_obs,
                                last_actions=torch.as_tensor(last_actions), first_step=first)
        roots = self.search.roots([list(range(self.cfg.model.action_space_size))] * n)
        roots.prepare_no_noise([0.0] * n, out.policy_logits.tolist(), [-1] * n)
        return lambda: self.search.run(roots, self.model.world_model, self.cache, slots, task_ids, [-1] * n)


def time_search(path: Any, task_ids: np.ndarray, obs_shape: Sequence[int], repeats: int, seed: int = 0) -> float:
    """Median seconds of one search after two warm-up steps (so the roots have cached contexts)."""
    g = torch.Generator().manual_seed(seed)
    n = len(task_ids)
    last_obs, last_actions = torch.zeros(n, *obs_shape), [-1] * n
    times = []
    for step in range(2 + repeats):
        obs = torch.rand(n, *obs_shape, generator=g)
        search = path.step(task_ids, last_obs, last_actions, obs)
        start = time.perf_counter()
        search()
        if step >= 2:
            times.append(time.perf_counter() - start)
        last_obs, last_actions = obs, [int(a) for a in torch.randint(0, 6, (n,), generator=g)]
    return median(times)


def fit(batches: Sequence[int], seconds: Sequence[float]) -> Tuple[float, float]:
    """Least squares ``seconds = fixed + per_root * batch``; returns (fixed, per_root) in seconds."""
    slope, intercept = np.polyfit(np.asarray(batches, dtype=float), np.asarray(seconds, dtype=float), 1)
    return float(intercept), float(slope)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 5, 10, 20, 40])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dense", action="store_true", help="dense FFN instead of MoE")
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    load_before = machine_load()
    policy, cfg = _policy("cpu", args.dense)
    model = policy._collect_model.eval()
    obs_shape = tuple(cfg.model.observation_shape)
    num_tasks = cfg.task_num
    env_counts = {t: max(args.batches) for t in range(num_tasks)}
    paths = {"lightzero": LightZeroPath(model, cfg), "ours": BatchedPath(model, cfg, env_counts)}
    rows = []
    seconds: Dict[str, List[float]] = {name: [] for name in paths}
    for batch in args.batches:
        task_ids = spread_rows(batch, num_tasks)
        for name, path in paths.items():
            seconds[name].append(time_search(path, task_ids, obs_shape, args.repeats))
        rows.append([batch] + [f"{seconds[name][-1] * 1e3:.1f}" for name in paths] +
                    [f"{seconds['lightzero'][-1] / seconds['ours'][-1]:.2f}"])
    print(tabulate(rows, headers=["roots", "lightzero ms", "ours ms", "speed-up"], tablefmt="github"))
    fits = {name: fit(args.batches, values) for name, values in seconds.items()}
    print(f"{cfg.num_simulations} simulations, {'dense' if args.dense else 'MoE'} FFN, {threads} thread(s), "
          f"load {load_before} -> {machine_load()}")
    (lz_fixed, lz_root), (our_fixed, our_root) = fits["lightzero"], fits["ours"]
    print(f"search: overhead lightzero {lz_fixed * 1e3:.1f} ms, ours {our_fixed * 1e3:.1f} ms; "
          f"per root lightzero {lz_root * 1e3:.2f} ms, ours {our_root * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
