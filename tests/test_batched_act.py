"""The batched acting step: lightzero's action selection, legal actions only, per-task outputs."""
import numpy as np
import pytest
import torch
from lzero.policy import select_action as lightzero_select_action

from lzero_ext.model.cached_inference import InferenceCache
from lzero_ext.search import BatchedSearch
from policies.batched_act import act, select_action
from tests.test_cached_inference import _discrete, _pad


@pytest.mark.parametrize("temperature", [0.25, 1.0])
@pytest.mark.parametrize("deterministic", [False, True])
def test_select_action_draws_what_lightzero_draws(temperature, deterministic):
    rng = np.random.default_rng(0)
    for seed in range(100):
        visits = rng.integers(0, 9, rng.integers(2, 7)).astype(float)
        visits[rng.integers(0, len(visits))] += 1
        np.random.seed(seed)
        want = lightzero_select_action(list(visits), temperature=temperature, deterministic=deterministic)
        np.random.seed(seed)
        got = select_action(list(visits), temperature=temperature, deterministic=deterministic)
        assert got[0] == want[0]
        assert got[1] == pytest.approx(float(want[1]), abs=1e-9)


@pytest.mark.parametrize("mode", ["collect", "eval"])
def test_act_picks_legal_actions_of_each_task_and_eval_takes_the_most_visited(mode):
    model = _discrete(True, num_simulations=6)
    cache = InferenceCache(model.world_model, {0: 2, 1: 3}, num_simulations=6)
    search = BatchedSearch(num_simulations=6, discount_factor=0.997, support_scale=50)
    task_ids, env_ids = [0, 0, 1, 1, 1], [0, 1, 0, 1, 2]
    masks = [np.array([1, 0, 1]), np.array([0, 1, 0]), np.array([1, 1, 1]), np.array([0, 0, 1]), np.array([1, 1, 0])]
    obs = torch.cat([_pad(torch.randn(2, 4), 6), torch.randn(3, 6)])
    np.random.seed(0)
    last_obs, last_actions, first = torch.zeros(5, 6), torch.full((5,), -1), np.ones(5, dtype=bool)
    for step in range(3):
        outputs = act(model.world_model, search, cache, obs=obs, task_ids=task_ids, env_ids=env_ids,
                      last_obs=last_obs, last_actions=last_actions, first_step=first, action_masks=masks, mode=mode,
                      temperature=1.0, noise=(0.3, 0.25))
        for out, mask in zip(outputs, masks):
            legal = np.flatnonzero(mask)
            assert out["action"] in legal  # never an illegal action
            assert len(out["visit_count_distributions"]) == len(legal)  # visits cover the legal actions only
            assert sum(out["visit_count_distributions"]) == 6
            if mode == "eval":
                assert out["action"] == legal[int(np.argmax(out["visit_count_distributions"]))]
        last_obs, obs = obs, torch.randn(5, 6)
        last_actions = torch.as_tensor([out["action"] for out in outputs])
        first = np.zeros(5, dtype=bool)


def test_a_model_of_both_action_kinds_acts_with_one_search_per_kind():
    """Discrete tasks 0 and 2 through lightzero's discrete tree, continuous task 1 (2 dims) through the sampled
    tree, on one model and one cache, step after step: legal discrete actions, continuous ones of the task's dim."""
    from lzero_ext.model.scalezero_model import ScaleZeroModel
    from tests.test_cached_inference import _cfg
    from tests.test_world_model import randomized

    cfg = _cfg(True, num_tasks=3, observation_shape_list=[4, 6, 5], action_type_list=['discrete', 'continuous', 'discrete'],
               action_space_size_list=[3, 2, 3], num_simulations=6)
    model = randomized(ScaleZeroModel(observation_shape=4, action_space_size=3, world_model_cfg=cfg))
    cache = InferenceCache(model.world_model, {0: 2, 1: 2, 2: 1}, num_simulations=6)
    discrete = BatchedSearch(num_simulations=6, discount_factor=0.997, support_scale=50, action_space_size=3)
    continuous = BatchedSearch(num_simulations=6, discount_factor=0.997, support_scale=50, continuous=True,
                               action_space_size=2, num_of_sampled_actions=4)
    groups = {"discrete": ([0, 0, 2], [0, 1, 0], discrete), "continuous": ([1, 1], [0, 1], continuous)}
    masks = [np.array([1, 0, 1]), np.array([0, 1, 1]), np.array([1, 1, 1])]
    np.random.seed(0)
    last = {"discrete": torch.full((3, 1), -1.0), "continuous": torch.zeros(2, 2)}
    for step in range(3):
        for kind, (task_ids, env_ids, search) in groups.items():
            n = len(task_ids)
            obs = torch.randn(n, 6)
            outputs = act(model.world_model, search, cache, obs=obs, task_ids=task_ids, env_ids=env_ids,
                          last_obs=torch.zeros(n, 6), last_actions=last[kind], first_step=np.full(n, step == 0),
                          action_masks=masks if kind == "discrete" else [None] * n, mode="collect", temperature=1.0,
                          noise=(0.3, 0.25))
            if kind == "discrete":
                assert all(out["action"] in np.flatnonzero(mask) for out, mask in zip(outputs, masks))
                last[kind] = torch.tensor([[float(out["action"])] for out in outputs])
            else:
                actions = np.stack([out["action"] for out in outputs])
                assert actions.shape == (2, 2) and np.abs(actions).max() <= 1.0
                last[kind] = torch.from_numpy(actions.astype(np.float32))
