"""lightzero's UniZero MCTS over every task's roots at once, on the batched KV cache.

The tree is lightzero's C++ tree (``mz_tree`` for discrete actions, ``smz_tree`` for sampled continuous
ones): selection (``batch_traverse``) and backup (``batch_backpropagate``) are its calls, with lightzero's
``UniZeroMCTSCtree.search`` order of operations, so visit counts and values are the same. What changes
is the model call: one :func:`~lzero_ext.model.cached_inference.recurrent_inference` per simulation for
all roots, addressing each leaf's parent by its node index (no latent state goes to the host and back,
no hashing), and only the values, rewards and policies the tree needs come to the host.

Example::

    search = BatchedSearch.from_policy_config(policy_cfg)
    out = initial_inference(world_model, obs, task_ids, cache, slots, last_obs=..., last_actions=..., first_step=...)
    roots = search.roots(legal_actions)
    roots.prepare_no_noise([0.0] * batch, out.policy_logits.tolist(), to_play)
    search.run(roots, world_model, cache, slots, task_ids, to_play)
    visits = roots.get_distributions()
"""
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np
import torch
from lzero.mcts.ctree.ctree_muzero import mz_tree
from lzero.mcts.ctree.ctree_sampled_muzero import smz_tree

from lzero_ext.model.cached_inference import InferenceCache, recurrent_inference, task_rows
from lzero_ext.model.inference_layers import InferenceLayers


@dataclass
class BatchedSearch:
    """The search settings of lightzero's ``UniZeroMCTSCtree`` / ``SampledUniZeroMCTSCtree`` config."""

    num_simulations: int
    discount_factor: float
    pb_c_base: float = 19652
    pb_c_init: float = 1.25
    value_delta_max: float = 0.01
    support_scale: int = 300
    categorical_distribution: bool = True
    device: str = 'cpu'
    continuous: bool = False  # sampled tree (continuous actions)
    action_space_size: int = 0  # the roots' action dim (sampled tree) or number of actions (0: the model's width)
    num_of_sampled_actions: int = 0  # sampled tree: K

    @classmethod
    def from_policy_config(cls, cfg: Any, *, action_space_size: int = 0,
                           continuous: Optional[bool] = None) -> 'BatchedSearch':
        """From a lightzero UniZero / sampled UniZero policy config (one task's, or the shared keys); ``continuous``
        overrides the config's action kind (a model with tasks of both kinds runs one search per kind)."""
        if continuous is None:
            continuous = bool(cfg.model.get('continuous_action_space', False))
        return cls(num_simulations=cfg.num_simulations, discount_factor=cfg.discount_factor,
                   pb_c_base=cfg.get('pb_c_base', 19652), pb_c_init=cfg.get('pb_c_init', 1.25),
                   value_delta_max=cfg.get('value_delta_max', 0.01), support_scale=cfg.model.support_scale,
                   categorical_distribution=cfg.model.get('categorical_distribution', True), device=cfg.device,
                   continuous=continuous, action_space_size=action_space_size or cfg.model.action_space_size,
                   num_of_sampled_actions=cfg.model.get('num_of_sampled_actions', 0) if continuous else 0)

    def __post_init__(self) -> None:
        self._support = torch.arange(-self.support_scale, self.support_scale + 1, dtype=torch.float32,
                                     device=self.device)                                # (S,)
        self._tree = smz_tree if self.continuous else mz_tree

    @property
    def policy_width(self) -> Optional[int]:
        """This search's tasks' policy logits within a batch padded to the widest task's: [mu, sigma] of the action
        dim (sampled tree) or the actions (None: every column)."""
        return 2 * self.action_space_size if self.continuous else (self.action_space_size or None)

    def roots(self, legal_actions: List[List[int]]) -> Any:
        """lightzero's C++ roots for one batch (legal actions per root)."""
        if self.continuous:
            return smz_tree.Roots(len(legal_actions), legal_actions, self.action_space_size,
                                  self.num_of_sampled_actions, True)
        return mz_tree.Roots(len(legal_actions), legal_actions)

    def scalars(self, logits: torch.Tensor, epsilon: float = 0.001) -> torch.Tensor:
        """lightzero's ``InverseScalarTransform`` of ``(N, S)`` support logits -> ``(N,)`` values, without its
        "already a softmax?" check (a host sync; these are always logits)."""
        value = logits.softmax(dim=-1) @ self._support if self.categorical_distribution else logits[:, 0]
        tmp = (torch.sqrt(1 + 4 * epsilon * (value.abs() + 1 + epsilon)) - 1) / (2 * epsilon)
        return torch.sign(value) * (tmp * tmp - 1)

    @torch.no_grad()
    def run(self, roots: Any, world_model: torch.nn.Module, cache: InferenceCache, slots: np.ndarray,
            task_ids: Sequence[int], to_play: Sequence[int], layers: Optional[InferenceLayers] = None) -> None:
        """``num_simulations`` simulations on prepared ``roots``; the roots' contexts are ``cache.root``'s
        ``slots`` (stored by the initial inference of this step). ``layers``: the model's ``InferenceLayers``, e.g.
        those of this step's initial inference (None: taken now, once for every simulation)."""
        batch = roots.num
        store = cache.begin_search(batch)
        store.copy_entries(cache.root, slots, np.arange(batch))
        stats = self._tree.MinMaxStatsList(batch)
        stats.set_delta(self.value_delta_max)
        rows = np.arange(batch)
        tasks = task_rows(task_ids)  # once per search, not per simulation
        layers = InferenceLayers.of(world_model) if layers is None else layers  # weight lookups: once per search
        for simulation in range(self.num_simulations):
            results = self._tree.ResultsWrapper(num=batch)
            traverse_args = (roots, self.pb_c_base, self.pb_c_init, self.discount_factor, stats, results, list(to_play))
            if self.continuous:
                traverse_args += (True,)
            parent_depth, parent_row, actions, virtual_to_play = self._tree.batch_traverse(*traverse_args)
            parents = np.asarray(parent_depth, dtype=np.int64) * batch + np.asarray(parent_row, dtype=np.int64)
            actions = torch.from_numpy(np.asarray(actions, dtype=np.float32 if self.continuous else np.int64))
            out = recurrent_inference(world_model, store, parents, (simulation + 1) * batch + rows,
                                      actions.to(store.device), tasks, layers)
            policy = out.policy_logits[:, :self.policy_width]
            # the one host transfer of a simulation: what the C++ tree needs, in one tensor
            scalars = self.scalars(torch.cat([out.reward, out.value]))                  # (2B,)
            host = torch.cat([scalars.view(2, batch).T, policy], dim=1).cpu().numpy()   # (B, 2 + A)
            self._tree.batch_backpropagate(simulation + 1, self.discount_factor, host[:, 0].tolist(),
                                           host[:, 1].tolist(), host[:, 2:].tolist(), stats, results, virtual_to_play)
