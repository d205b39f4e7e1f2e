"""One acting step for every task's envs: one initial inference and one MCTS search over all their roots.

This is lightzero's UniZero and sampled UniZero ``_forward_collect`` / ``_forward_eval`` written for a mixed
batch of tasks with the batched KV cache (``lzero_ext.model.cached_inference``) and
:class:`~lzero_ext.search.BatchedSearch`: root noise, action selection (visit-count temperature, optional
epsilon-greedy), and the output dict per env that lightzero's collector and evaluator read are lightzero's.
Task ids, env ids and the cache are arguments; nothing is bound onto the model.

Example::

    outputs = act(world_model, search, cache, obs=obs, task_ids=task_ids, env_ids=env_ids, last_obs=last_obs,
                  last_actions=last_actions, first_step=first_step, action_masks=masks, mode="collect",
                  temperature=0.25, noise=(0.3, 0.25))
    outputs[i]["action"]  # row i's action, in its task's action set
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from lzero_ext.model.cached_inference import InferenceCache, initial_inference
from lzero_ext.model.inference_layers import InferenceLayers
from lzero_ext.search import BatchedSearch

MODES = frozenset({"collect", "eval"})


def select_action(visit_counts: Sequence[float], *, temperature: float, deterministic: bool) -> Tuple[int, float]:
    """lightzero's ``select_action`` (``lzero.policy.utils``) without scipy: the visit-count distribution at
    ``temperature``, its argmax or one draw from it (the same ``np.random.choice`` call, so seeded runs draw the
    same actions), and its entropy in bits."""
    counts = np.asarray(visit_counts, dtype=np.float64)
    probs = counts ** (1.0 / temperature)
    probs = probs / probs.sum()
    index = int(np.argmax(counts)) if deterministic else int(np.random.choice(len(counts), p=probs))
    nonzero = probs[probs > 0]
    return index, float(-(nonzero * np.log2(nonzero)).sum())


@torch.no_grad()
def act(world_model: torch.nn.Module, search: BatchedSearch, cache: InferenceCache, *, obs: torch.Tensor,
        task_ids: Sequence[int], env_ids: Sequence[int], last_obs: torch.Tensor, last_actions: torch.Tensor,
        first_step: np.ndarray, action_masks: Sequence[np.ndarray], mode: str, temperature: float = 1.0,
        epsilon: float = 0.0, noise: Optional[Tuple[float, float]] = None,
        timesteps: Optional[Sequence[Any]] = None) -> List[Dict[str, Any]]:
    """lightzero's per-env output dicts (``action``, ``visit_count_distributions``, ``searched_value``, ...) for
    every row of a mixed batch. ``mode='collect'`` samples actions from the visit counts at ``temperature``
    (or epsilon-greedy when ``epsilon > 0``) after Dirichlet root noise ``noise = (alpha, weight)``;
    ``'eval'`` takes the most visited action. Rows of one task must be contiguous."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    task_ids = np.asarray(task_ids, dtype=np.int64)
    n = len(task_ids)
    slots = cache.slots(task_ids, env_ids)
    layers = InferenceLayers.of(world_model)  # the weights as they are now, for the inference and the search
    out = initial_inference(world_model, obs, task_ids, cache, slots, last_obs=last_obs, last_actions=last_actions,
                            first_step=first_step, layers=layers)
    pred_values = search.scalars(out.value)                                           # (B,)
    logits = out.policy_logits[:, :search.policy_width]
    host = torch.cat([pred_values[:, None], logits], dim=1).cpu().numpy()             # one transfer: (B, 1 + A)
    policy_logits = host[:, 1:].tolist()
    if search.continuous:  # the sampled tree draws K actions per root; lightzero marks them -1
        legal_actions = [[-1] * search.num_of_sampled_actions for _ in range(n)]
    else:
        legal_actions = [np.flatnonzero(np.asarray(mask) == 1).tolist() for mask in action_masks]
    roots = search.roots(legal_actions)
    to_play = [-1] * n
    if mode == "collect" and noise is not None:
        alpha, weight = noise
        noises = [np.random.dirichlet([alpha] * len(legal)).astype(np.float32).tolist() for legal in legal_actions]
        roots.prepare(weight, noises, [0.0] * n, policy_logits, to_play)
    else:
        roots.prepare_no_noise([0.0] * n, policy_logits, to_play)
    search.run(roots, world_model, cache, slots, task_ids, to_play, layers)

    distributions, values = roots.get_distributions(), roots.get_values()
    sampled = roots.get_sampled_actions() if search.continuous else None
    outputs = []
    for i in range(n):
        if mode == "eval":
            index, entropy = select_action(distributions[i], temperature=1, deterministic=True)
        else:
            index, entropy = select_action(distributions[i], temperature=temperature, deterministic=epsilon > 0)
        if search.continuous:
            action = np.asarray(sampled[i][index])
        else:
            action = legal_actions[i][index]
            if mode == "collect" and epsilon > 0 and np.random.rand() < epsilon:
                action = int(np.random.choice(legal_actions[i]))
        outputs.append({
            "action": action,
            "visit_count_distributions": distributions[i],
            "visit_count_distribution_entropy": entropy,
            "searched_value": values[i],
            "predicted_value": host[i, :1],
            "predicted_policy_logits": policy_logits[i],
            "timestep": -1 if timesteps is None else timesteps[i],
        })
        if search.continuous:
            outputs[-1]["root_sampled_actions"] = np.asarray(sampled[i])
    return outputs
