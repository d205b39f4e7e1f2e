"""One batched search over every task's roots gives each task what lightzero's own UniZero model gives it.

lightzero's C++ tree breaks ties with ``rand()`` seeded from the clock's microseconds on every traversal, so
two searches never take the same path twice. The test therefore runs the real search (C++ traversal and
backup) with the batched model calls and, at every simulation, asks lightzero's own inference (the model
bound to one task, its hash-keyed caches) for the same leaves: the outputs the tree receives must be equal,
so the visit counts the tree computes are lightzero's. Actions taken between steps come from the visit
counts, so later contexts depend on earlier searches.
"""
from typing import Any, Dict, List

import numpy as np
import pytest
import torch

import lzero_ext.search as search_module
from lzero_ext.model.cached_inference import InferenceCache, initial_inference
from lzero_ext.search import BatchedSearch
from tests.test_cached_inference import NUM_ACTIONS, _continuous, _discrete, _pad

SIMULATIONS = 8
# A leaf's latent is computed from its parent's on each path (up to SIMULATIONS model calls deep, each feeding the
# next), so float32 rounding differences of ~1e-7 per op compound with depth: 1e-5 per call was seen to fail about
# once in fifteen runs (1.3e-5 on a value logit; the C++ tree's clock-seeded tie-breaking picks different paths).
ATOL = 5e-5


class LightZeroOracle:
    """Wraps ``recurrent_inference`` of ``lzero_ext.search``: every batched call is checked against lightzero's
    ``model.recurrent_inference`` task by task, on the latents of the same leaves."""

    def __init__(self, model, tasks: List[int], envs: List[int]) -> None:
        self.model, self.tasks, self.envs = model, tasks, envs
        self.node_latents: Dict[Any, np.ndarray] = {}  # (simulation, root row) -> lightzero's latent of that node
        self.leaf_parents: List[Any] = []
        self.calls = 0  # simulations of the current search
        self.total_calls = 0
        self._batched = search_module.recurrent_inference

    def watch(self, tree: Any) -> Any:
        """A stand-in for the C++ tree module that records which node each traversal reached (lightzero's
        ``latent_state_index_in_search_path``, ``latent_state_index_in_batch``)."""
        oracle = self

        class Watched:
            def __getattr__(self, name: str) -> Any:
                return getattr(tree, name)

            def batch_traverse(self, *args: Any) -> Any:
                out = tree.batch_traverse(*args)
                oracle.leaf_parents = list(zip(out[0], out[1]))
                return out
        return Watched()

    def roots(self, latents: torch.Tensor) -> None:
        self.node_latents = {(0, i): latents[i].numpy() for i in range(latents.shape[0])}
        self.calls = 0

    def __call__(self, world_model, store, parents, children, actions, task_ids, layers=None):
        ours = self._batched(world_model, store, parents, children, actions, task_ids, layers)
        row = 0
        for task_id, n in zip(self.tasks, self.envs):
            rows = slice(row, row + n)
            latents = np.stack([self.node_latents[self.leaf_parents[i]] for i in range(rows.start, rows.stop)])
            with self.model.bind_task(task_id):
                theirs = self.model.recurrent_inference([(latents, actions[rows])], 0, [0] * n, np.zeros(n, dtype=int))
            width = theirs.policy_logits.shape[-1]
            for name, got, want in (("value", ours.value[rows], theirs.value), ("reward", ours.reward[rows], theirs.reward),
                                    ("policy", ours.policy_logits[rows, :width], theirs.policy_logits),
                                    ("latent", ours.latent[rows], theirs.latent_state)):
                assert torch.allclose(got, want, atol=ATOL), \
                    f"call {self.calls} task {task_id} {name}: max difference {(got - want).abs().max().item():.2e}"
            for i, latent in zip(range(rows.start, rows.stop), theirs.latent_state):  # lightzero hashes these bits
                self.node_latents[(self.calls + 1, i)] = latent.numpy()
            row += n
        self.calls += 1
        self.total_calls += 1
        return ours


def _lightzero_roots(model, tasks, envs, last_obs, last_actions, obs) -> torch.Tensor:
    """lightzero's initial inference per task (it stores its own root caches, which its recurrent inference reads);
    returns the roots' latents in row order."""
    latents = []
    for t in tasks:
        with model.bind_task(t):
            out = model.initial_inference(last_obs[t], last_actions[t], obs[t], np.zeros(len(obs[t]), dtype=int))
        latents.append(out.latent_state)
    return torch.cat(latents)


def _our_search(model, cache, tasks: List[int], envs: List[int], last_obs, last_actions, obs, first: bool,
                continuous_dim: int = 0, oracle: LightZeroOracle = None):
    task_ids = np.repeat(tasks, envs)
    env_ids = np.concatenate([np.arange(n) for n in envs])
    slots = cache.slots(task_ids, env_ids)
    out = initial_inference(model.world_model, obs, task_ids, cache, slots, last_obs=last_obs,
                            last_actions=last_actions, first_step=np.full(len(task_ids), first))
    n = len(task_ids)
    assert torch.allclose(out.latent, oracle.root_latents, atol=ATOL)
    oracle.roots(oracle.root_latents)
    search = BatchedSearch(num_simulations=SIMULATIONS, discount_factor=0.997, support_scale=50,
                           continuous=bool(continuous_dim), action_space_size=continuous_dim,
                           num_of_sampled_actions=4 if continuous_dim else 0)
    search._tree = oracle.watch(search._tree)
    if continuous_dim:
        roots = search.roots([[-1]] * n)
        roots.prepare_no_noise([0.0] * n, out.policy_logits[:, :2 * continuous_dim].tolist(), [-1] * n)
    else:
        roots = search.roots([list(range(NUM_ACTIONS))] * n)
        roots.prepare_no_noise([0.0] * n, out.policy_logits.tolist(), [-1] * n)
    search.run(roots, model.world_model, cache, slots, task_ids, [-1] * n)
    return roots


def _run_steps(model, tasks, envs, dims, steps: int, monkeypatch, continuous_dim: int = 0) -> LightZeroOracle:
    cache = InferenceCache(model.world_model, dict(zip(tasks, envs)), num_simulations=SIMULATIONS)
    oracle = LightZeroOracle(model, tasks, envs)
    monkeypatch.setattr(search_module, "recurrent_inference", oracle)
    g = torch.Generator().manual_seed(7)
    width = max(dims)
    last_obs = {t: torch.zeros(n, d) for t, n, d in zip(tasks, envs, dims)}
    last_actions: Dict[int, Any] = {t: [-1] * n for t, n in zip(tasks, envs)}
    for step in range(steps):
        obs = {t: torch.randn(n, d, generator=g) for t, n, d in zip(tasks, envs, dims)}
        if continuous_dim:
            ours_last = torch.zeros(sum(envs), continuous_dim) if step == 0 else \
                torch.as_tensor(np.concatenate([np.stack(last_actions[t]) for t in tasks]))
        else:
            ours_last = torch.as_tensor(np.concatenate([last_actions[t] for t in tasks]))
        oracle.root_latents = _lightzero_roots(model, tasks, envs, last_obs, last_actions, obs)
        roots = _our_search(model, cache, tasks, envs, torch.cat([_pad(last_obs[t], width) for t in tasks]), ours_last,
                            torch.cat([_pad(obs[t], width) for t in tasks]), first=step == 0,
                            continuous_dim=continuous_dim, oracle=oracle)
        visits = roots.get_distributions()
        assert [sum(v) for v in visits] == [SIMULATIONS] * sum(envs)
        row = 0
        for t, n in zip(tasks, envs):
            best = [int(np.argmax(v)) for v in visits[row:row + n]]
            if continuous_dim:
                sampled = roots.get_sampled_actions()[row:row + n]
                last_actions[t] = [np.asarray(a[b], dtype=np.float32) for a, b in zip(sampled, best)]
            else:
                last_actions[t] = best
            row += n
        last_obs = obs
    return oracle


@pytest.mark.parametrize("moe", [False, True])
def test_two_tasks_searched_together_get_lightzeros_outputs_at_every_simulation(moe, monkeypatch):
    oracle = _run_steps(_discrete(moe, num_simulations=SIMULATIONS), [0, 1], [2, 3], [4, 6], steps=6, monkeypatch=monkeypatch)
    assert oracle.total_calls == 6 * SIMULATIONS  # every simulation of every step was checked


def test_sampled_search_of_continuous_tasks_gets_lightzeros_outputs(monkeypatch):
    oracle = _run_steps(_continuous(True, num_simulations=SIMULATIONS), [1], [3], [6], steps=4, monkeypatch=monkeypatch, continuous_dim=2)
    assert oracle.total_calls == 4 * SIMULATIONS
