"""Turn one task's replay-buffer sample into the batch dict the world model's ``compute_loss`` takes.

lightzero 0.2.0 builds this dict inline in the 200-line ``UniZeroPolicy._forward_learn``, from the
policy-wide config; a multi-task learner needs it per task (own batch size and observation shape),
so the same conversion lives here as a function.
"""
from typing import Any, Dict, Sequence, Tuple, Union

import torch
from lzero.policy import DiscreteSupport, phi_transform, prepare_obs, scalar_transform, to_torch_float_tensor

ObservationShape = Union[int, Sequence[int]]


def build_world_model_batch(
    current_batch: Sequence[Any],
    target_batch: Sequence[Any],
    *,
    observation_shape: ObservationShape,
    policy_cfg: Any,
    support: DiscreteSupport,
    continuous_actions: bool = False,
) -> Tuple[Dict[str, torch.Tensor], Dict[str, float]]:
    """Returns ``(batch, stats)``: the world-model batch and a few target statistics for logging.

    ``current_batch`` is the buffer's tuple (obs, action, [child_sampled_actions,] target_action, mask,
    indices, weights, make_time, timestep); sampled buffers add ``child_sampled_actions``.
    """
    device = policy_cfg.device
    if continuous_actions:
        obs, actions, child_sampled_actions, _, mask, _, _, _, timesteps = current_batch
    else:
        obs, actions, _, mask, _, _, _, timesteps = current_batch
        child_sampled_actions = None
    target_reward, target_value, target_policy = target_batch

    obs_batch, obs_target_batch = prepare_obs(obs, policy_cfg)
    batch_size = obs_batch.shape[0]
    actions = torch.from_numpy(actions).to(device)
    actions = actions.float() if continuous_actions else actions.long()
    timesteps = torch.from_numpy(timesteps).to(device).long()
    mask, target_reward, target_value, target_policy = to_torch_float_tensor(
        [mask, target_reward.astype("float32"), target_value.astype("float32"), target_policy], device
    )
    target_reward = target_reward.view(batch_size, -1)  # (B, T+1)
    target_value = target_value.view(batch_size, -1)  # (B, T+1)
    reward_categorical = phi_transform(support, scalar_transform(target_reward))  # (B, T+1, support)
    value_categorical = phi_transform(support, scalar_transform(target_value))  # (B, T+1, support)

    shape = (observation_shape,) if isinstance(observation_shape, int) else tuple(observation_shape)
    observations = torch.cat((obs_batch, obs_target_batch), dim=1).reshape(batch_size, -1, *shape)  # (B, T+1, *obs)
    mask_padding = (mask == 1.0)[:, :-1]  # 0 marks padding after an episode's end
    batch = {
        "observations": observations[:, :-1],
        "actions": actions,
        "timestep": timesteps,
        "rewards": reward_categorical[:, :-1],
        "mask_padding": mask_padding,
        "ends": torch.zeros(mask_padding.shape, dtype=torch.long, device=device),
        "target_value": value_categorical[:, :-1],
        "target_policy": target_policy[:, :-1],
    }
    if child_sampled_actions is not None:
        # (B, T+1, K, a) -> (B, T, K, a): aligned with target_policy, like every other per-step target
        batch["child_sampled_actions"] = torch.from_numpy(child_sampled_actions).to(device)[:, :-1]
    stats = {"target_reward": target_reward.mean().item(), "target_value": target_value.mean().item()}
    return batch, stats
