"""The batched KV-cache inference equals lightzero's own ``WorldModel`` inference, task by task.

lightzero's path (the model bound to one task) is the oracle: its hash-keyed caches, per-env trimming and
padding. The scenarios cover episode starts, continued episodes past the context length (trimming),
caches cleared between steps (restart from the last observation), a search whose leaves sit at different
depths (contexts of different lengths padded together), and a mixed batch of two tasks.
"""
from typing import Any, Dict, List

import numpy as np
import pytest
import torch
from ding.utils import deep_merge_dicts

from lzero_ext.dps import apply_staged_lora, set_dps_stage
from lzero_ext.model.cached_inference import InferenceCache, initial_inference, recurrent_inference
from lzero_ext.model.action_kinds import cat_actions
from lzero_ext.model.modalities import cat_observations
from lzero_ext.model.scalezero_model import SampledScaleZeroModel, ScaleZeroModel
from tests.test_world_model import randomized

ATOL = 1e-5
NUM_ACTIONS = 3


def _cfg(moe: bool, **overrides: Any) -> Dict[str, Any]:
    cfg = dict(num_tasks=2, obs_type='vector', observation_shape_list=[4, 6], embed_dim=32, num_heads=2,
               num_layers=2, env_num=3, max_blocks=5, max_tokens=10, context_length=8, num_unroll_steps=4,
               num_simulations=6, embed_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0,
               moe=dict(enabled=moe, num_experts=4, top_k=1))
    return deep_merge_dicts(cfg, overrides)


def _discrete(moe: bool, **overrides: Any) -> ScaleZeroModel:
    return randomized(ScaleZeroModel(observation_shape=4, action_space_size=NUM_ACTIONS,
                                      world_model_cfg=_cfg(moe, **overrides)))


def _continuous(moe: bool, **overrides: Any) -> SampledScaleZeroModel:
    cfg = _cfg(moe, action_space_size_list=[1, 2], **overrides)
    return randomized(SampledScaleZeroModel(observation_shape=6, action_space_size=2, world_model_cfg=cfg))


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[-1]))


class Episode:
    """One task's envs stepped through a scripted sequence: lightzero's path and ours side by side."""

    def __init__(self, model, task_id: int, obs_dim: Any, envs: int, continuous_dim: int = 0, seed: int = 0):
        self.model, self.task_id, self.envs = model, task_id, envs
        self.obs_dim = (obs_dim,) if isinstance(obs_dim, int) else tuple(obs_dim)  # a vector's size or any shape
        self.continuous_dim = continuous_dim
        self.rng = np.random.default_rng(seed)
        self.last_obs = torch.zeros(envs, *self.obs_dim)
        self.last_actions: Any = [-1] * envs

    def first(self) -> bool:
        if self.continuous_dim:
            return not isinstance(self.last_actions[0], np.ndarray)
        return max(self.last_actions) == -1

    def lightzero_step(self, obs: torch.Tensor):
        with self.model.bind_task(self.task_id):
            return self.model.initial_inference(self.last_obs, self.last_actions, obs, np.zeros(self.envs, dtype=int))

    def our_actions(self, width: int) -> torch.Tensor:
        if self.continuous_dim:
            if self.first():
                return torch.zeros(self.envs, width)
            return _pad(torch.as_tensor(np.stack(self.last_actions), dtype=torch.float32), width)
        return torch.as_tensor(self.last_actions)

    def act(self, obs: torch.Tensor) -> None:
        self.last_obs = obs
        if self.continuous_dim:
            self.last_actions = [self.rng.uniform(-1, 1, self.continuous_dim).astype(np.float32) for _ in range(self.envs)]
        else:
            self.last_actions = list(self.rng.integers(0, NUM_ACTIONS, self.envs))

    def reset(self) -> None:  # lightzero's policy.reset([env_id]): every env of the task restarts its context
        self.last_obs = torch.zeros(self.envs, *self.obs_dim)
        self.last_actions = [-1] * self.envs


def _our_initial(model, cache, episodes: List[Episode], obs: List[torch.Tensor], width_act: int):
    task_ids = np.concatenate([[e.task_id] * e.envs for e in episodes])
    env_ids = np.concatenate([np.arange(e.envs) for e in episodes])
    first = np.concatenate([[e.first()] * e.envs for e in episodes])
    tasks = [e.task_id for e in episodes]  # vectors zero-padded to the widest, mixed modalities flattened too
    return initial_inference(
        model.world_model, cat_observations(model.world_model, obs, tasks), task_ids, cache,
        cache.slots(task_ids, env_ids), last_obs=cat_observations(model.world_model, [e.last_obs for e in episodes], tasks),
        last_actions=cat_actions(model.world_model.action_kinds, [e.our_actions(width_act) for e in episodes], tasks),
        first_step=first)


def _assert_close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    theirs = torch.as_tensor(np.asarray(theirs)) if not isinstance(theirs, torch.Tensor) else theirs
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(theirs.shape)}"
    assert torch.allclose(ours, theirs.to(ours.dtype), atol=ATOL), \
        f"{what}: max difference {(ours - theirs).abs().max().item():.2e}"


def _search_step(model, episodes: List[Episode], store, node_rows: Dict, parents_per_row, actions_per_row,
                 simulation: int, roots: List[Any], lightzero_nodes: Dict, width_act: int):
    """One recurrent inference for every row on both paths; ``parents_per_row[i]``: the simulation that made
    row i's parent (0: the root)."""
    batch = sum(e.envs for e in episodes)
    task_ids = np.concatenate([[e.task_id] * e.envs for e in episodes])
    parents = np.asarray([p * batch + i for i, p in enumerate(parents_per_row)])
    children = (simulation + 1) * batch + np.arange(batch)
    actions = cat_actions(model.world_model.action_kinds,
                          [_pad(torch.as_tensor(a, dtype=torch.float32), width_act) if a.ndim > 1 else torch.as_tensor(a)
                           for a in actions_per_row], [e.task_id for e in episodes])
    ours = recurrent_inference(model.world_model, store, parents, children, actions, task_ids)
    row = 0
    for episode, action in zip(episodes, actions_per_row):
        rows = slice(row, row + episode.envs)
        latents = np.stack([lightzero_nodes[(parents_per_row[i], i)] for i in range(rows.start, rows.stop)])
        with model.bind_task(episode.task_id):
            theirs = model.recurrent_inference([(latents, torch.as_tensor(action))], simulation,
                                               [0] * episode.envs, np.zeros(episode.envs, dtype=int))
        _assert_close(ours.latent[rows], theirs.latent_state, f"sim {simulation} latent")
        _assert_close(ours.reward[rows], theirs.reward, f"sim {simulation} reward")
        _assert_close(ours.value[rows], theirs.value, f"sim {simulation} value")
        width = theirs.policy_logits.shape[-1]
        _assert_close(ours.policy_logits[rows, :width], theirs.policy_logits, f"sim {simulation} policy")
        for i in range(rows.start, rows.stop):
            lightzero_nodes[(simulation + 1, i)] = theirs.latent_state[i - row].detach().numpy()
        row += episode.envs


def _run_scenario(model, episodes: List[Episode], steps: int, *, width_act: int,
                  reset_at=(), clear_at=(), simulations: int = 6, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    cache = InferenceCache(model.world_model, {e.task_id: e.envs for e in episodes}, num_simulations=simulations)
    for step in range(steps):
        if step in reset_at:
            episodes[0].reset()
        if step in clear_at:  # e.g. after a learn round: both paths forget every stored context
            model.world_model.clear_caches()
            cache.invalidate()
        obs = [torch.randn(e.envs, *e.obs_dim) for e in episodes]
        ours = _our_initial(model, cache, episodes, obs, width_act)
        lightzero_nodes: Dict = {}
        row = 0
        for episode, o in zip(episodes, obs):
            theirs = episode.lightzero_step(o)
            rows = slice(row, row + episode.envs)
            _assert_close(ours.latent[rows], theirs.latent_state, f"step {step} root latent")
            _assert_close(ours.value[rows], theirs.value, f"step {step} root value")
            width = theirs.policy_logits.shape[-1]
            _assert_close(ours.policy_logits[rows, :width], theirs.policy_logits, f"step {step} root policy")
            for i in range(rows.start, rows.stop):
                lightzero_nodes[(0, i)] = theirs.latent_state[i - row].detach().numpy()
            row += episode.envs
        # a search: leaves at different depths, so contexts of different lengths are padded together
        batch = row
        store = cache.begin_search(batch)
        store.copy_entries(cache.root, cache.slots(*zip(*[(e.task_id, i) for e in episodes for i in range(e.envs)])),
                           np.arange(batch))
        for simulation in range(simulations):
            parents = [int(rng.integers(0, simulation + 1)) for _ in range(batch)]
            actions = []
            for episode in episodes:
                if episode.continuous_dim:
                    actions.append(rng.uniform(-1, 1, (episode.envs, episode.continuous_dim)).astype(np.float32))
                else:
                    actions.append(rng.integers(0, NUM_ACTIONS, episode.envs))
            _search_step(model, episodes, store, {}, parents, actions, simulation, [], lightzero_nodes, width_act)
        for episode, o in zip(episodes, obs):
            episode.act(o)


@pytest.mark.parametrize("moe", [False, True])
def test_one_task_over_episodes_trimming_and_cleared_caches_equals_lightzero(moe):
    model = _discrete(moe)
    episodes = [Episode(model, task_id=1, obs_dim=6, envs=3)]
    _run_scenario(model, episodes, steps=7, width_act=1, reset_at=(4,), clear_at=(2,))


def test_two_tasks_in_one_batch_each_equal_lightzero_alone():
    model = _discrete(True)
    episodes = [Episode(model, task_id=0, obs_dim=4, envs=2, seed=1), Episode(model, task_id=1, obs_dim=6, envs=3)]
    # task 0 restarts at step 3 while task 1 goes on: one batch mixes a first step with long contexts
    _run_scenario(model, episodes, steps=6, width_act=1, reset_at=(3,))


def test_dmc_like_continuous_tasks_of_different_action_dims_equal_lightzero():
    model = _continuous(True)
    episodes = [Episode(model, task_id=0, obs_dim=4, envs=2, continuous_dim=1, seed=2),
                Episode(model, task_id=1, obs_dim=6, envs=2, continuous_dim=2, seed=3)]
    _run_scenario(model, episodes, steps=5, width_act=2, clear_at=(3,))


def test_task_embedding_and_image_free_concat_option_equal_lightzero():
    model = _discrete(False, task_embed_option='add')
    episodes = [Episode(model, task_id=0, obs_dim=4, envs=2), Episode(model, task_id=1, obs_dim=6, envs=2, seed=4)]
    _run_scenario(model, episodes, steps=4, width_act=1)


def test_image_and_vector_tasks_in_one_batch_each_equal_lightzero_alone():
    """One model over two modalities: a 2x5x5 grid task and two state-vector tasks share each batch, flattened."""
    cfg = _cfg(True, num_tasks=3, obs_type_list=['image', 'vector', 'vector'], observation_shape_list=[(2, 5, 5), 7, 3])
    model = randomized(ScaleZeroModel(observation_shape=(2, 5, 5), action_space_size=NUM_ACTIONS, num_channels=8,
                                      downsample=False, world_model_cfg=cfg))
    episodes = [Episode(model, task_id=0, obs_dim=(2, 5, 5), envs=2, seed=1),
                Episode(model, task_id=1, obs_dim=7, envs=2, seed=2), Episode(model, task_id=2, obs_dim=3, envs=1, seed=3)]
    _run_scenario(model, episodes, steps=4, width_act=1, reset_at=(2,))


def test_discrete_and_continuous_tasks_in_one_batch_each_equal_lightzero_alone():
    """One model over both action kinds: two discrete tasks (3 actions) and a continuous one (2 dims) share every
    inference call; each gets what lightzero's own inference gives it alone."""
    cfg = _cfg(True, num_tasks=3, observation_shape_list=[4, 6, 5], action_type_list=['discrete', 'continuous', 'discrete'],
               action_space_size_list=[NUM_ACTIONS, 2, NUM_ACTIONS])
    model = randomized(ScaleZeroModel(observation_shape=4, action_space_size=NUM_ACTIONS, world_model_cfg=cfg))
    episodes = [Episode(model, task_id=0, obs_dim=4, envs=2, seed=1),
                Episode(model, task_id=1, obs_dim=6, envs=2, continuous_dim=2, seed=2),
                Episode(model, task_id=2, obs_dim=5, envs=1, seed=3)]
    _run_scenario(model, episodes, steps=4, width_act=2, reset_at=(2,))


def test_a_context_shorter_than_four_tokens_is_refused():
    model = _discrete(False, context_length=2)
    with pytest.raises(ValueError, match="context_length must be >= 4"):
        InferenceCache(model.world_model, {0: 1}, num_simulations=2)


def test_heads_changed_between_calls_are_used_not_a_stale_stacked_copy():
    """The per-task heads are stacked once and cached: an optimizer's in-place step and a replaced layer must
    both reach the next call."""
    model = _discrete(True)
    episodes = [Episode(model, task_id=0, obs_dim=4, envs=2, seed=1), Episode(model, task_id=1, obs_dim=6, envs=3)]
    _run_scenario(model, episodes, steps=2, width_act=1)
    world_model = model.world_model
    with torch.no_grad():
        for head in (world_model.head_value, world_model.head_policy):
            for param in head.parameters():
                param.add_(0.05 * torch.randn_like(param))  # as an optimizer step does: in place
    old = world_model.head_rewards.per_task[1].head_module[0]
    new = torch.nn.Linear(old.in_features, old.out_features)
    world_model.head_rewards.per_task[1].head_module[0] = new  # a replaced layer (same shapes, new weights)
    _run_scenario(model, episodes, steps=2, width_act=1, clear_at=(0,), seed=1)


@pytest.mark.parametrize("moe", [False, True])
def test_dps_adapters_in_stage_1_equal_lightzero(moe):
    """With DPS's LoRA adapters active (stage 1, trained-looking adapters) every adapted linear of the transformer and
    the heads enters the inference through its merged weight; the outputs stay lightzero's."""
    model = _discrete(moe)
    apply_staged_lora(model, num_stages=3, rank=4, alpha=4.0, dropout=0.0)
    set_dps_stage(model, 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if 'lora_B' in name:
                param.normal_(0.0, 0.1)
    model.eval()
    episodes = [Episode(model, task_id=0, obs_dim=4, envs=2, seed=1), Episode(model, task_id=1, obs_dim=6, envs=3)]
    _run_scenario(model, episodes, steps=5, width_act=1, reset_at=(3,))
