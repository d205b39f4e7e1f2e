"""UniZero's training loss of one task, computed from the outputs of a (batched) world-model forward.

The multi-task learn step runs the encoder, the target encoder, the transformer and the heads once over
every task's rows; this module turns one task's slice of those outputs into lightzero's UniZero loss
(``WorldModel.compute_loss`` in ``lzero/model/unizero_world_models/world_model.py``, which stays the test
oracle: the losses and their gradients are equal to 1e-5). Per timestep of the unrolled sequence:

* ``loss_obs``: MSE (or group KL under SimNorm) between the predicted next latent and the target encoder's
  latent of the next observation;
* ``loss_rewards`` / ``loss_value``: cross-entropy against the categorical reward / value targets;
* ``loss_policy``: cross-entropy against the search's visit distribution minus ``policy_entropy_weight`` times
  the policy's entropy (discrete), or the sampled-action policy loss (continuous, ``'kl'`` or ``'simple'``);

each masked by ``mask_padding``, discounted by ``gamma ** t`` and averaged over the valid steps. Returns
lightzero's ``LossWithIntermediateLosses`` (which applies the loss weights), with first/middle/last-step
losses for logging. Everything reads its sizes from arguments: no model state is bound to a task.
"""
from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from lzero.model.unizero_world_models.utils import LossWithIntermediateLosses, WorldModelOutput
from torch import Tensor
from torch.distributions import Independent, Normal, TanhTransform, TransformedDistribution

STEP_LOSSES = ('loss_obs', 'loss_rewards', 'loss_value', 'loss_policy', 'orig_policy_loss', 'policy_entropy')


def _cross_entropy(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Per-step cross-entropy ``(B*T,)`` of ``(B, T, K)`` logits against ``(B*T, K)`` soft labels, masked."""
    log_probs = torch.log_softmax(logits.reshape(-1, logits.shape[-1]), dim=1)        # (B*T, K)
    return -(log_probs * labels).sum(1) * mask


def _masked_labels(targets: Tensor, mask_padding: Tensor, width: int) -> Tensor:
    """``(B, T, K)`` targets with padded steps filled with -100 (their loss is masked), as ``(B*T, K)``."""
    return targets.masked_fill(~mask_padding.unsqueeze(-1).expand_as(targets), -100).reshape(-1, width)


def _continuous_policy_loss(policy_logits: Tensor, batch: Dict[str, Tensor], *, action_dim: int, num_unroll_steps: int,
                            loss_type: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """lightzero's sampled-action policy loss (``'kl'``: visit-weighted log-likelihood of the sampled actions under
    the tanh-squashed Gaussian; ``'simple'``: log-likelihood of the most visited action); returns (policy loss,
    entropy loss, sampled actions, mu, sigma), per step."""
    rows = policy_logits.shape[0] * num_unroll_steps
    logits = policy_logits.reshape(rows, -1)                                          # (B*T, 2a)
    mask = batch['mask_padding'].contiguous().view(-1)                                # (B*T,)
    target_policy = batch['target_policy'].contiguous().view(rows, -1)                # (B*T, K)
    sampled = batch['child_sampled_actions'].contiguous().view(rows, -1, action_dim)  # (B*T, K, a)
    mu, sigma = logits[:, :action_dim], logits[:, action_dim:]
    if loss_type == 'simple':
        dist = Independent(Normal(mu, sigma), 1)
        best = sampled[torch.arange(rows), torch.argmax(target_policy, dim=1)]       # (B*T, a)
        policy_loss = -dist.log_prob(torch.arctanh(best.clamp(-0.999, 0.999))) * mask
        entropy_loss = -dist.entropy().mean() * mask
    else:
        mu_k = mu.unsqueeze(1).expand(-1, sampled.shape[1], -1)                       # (B*T, K, a)
        sigma_k = sigma.unsqueeze(1).expand(-1, sampled.shape[1], -1)
        entropy_loss = -Independent(Normal(mu_k, sigma_k), 1).entropy().mean(dim=1) * mask
        squashed = Independent(TransformedDistribution(Normal(mu_k, sigma_k), [TanhTransform()]), 1)
        log_prob = squashed.log_prob(sampled.clamp(-0.999, 0.999))                    # (B*T, K)
        weights = torch.exp(torch.log(target_policy + 1e-6).detach())
        policy_loss = -(weights * log_prob).sum(1) * mask
    return policy_loss, entropy_loss, sampled, mu, sigma


def unizero_task_loss(world_model: Any, outputs: WorldModelOutput, obs_embeddings: Tensor, target_embeddings: Tensor,
                      batch: Dict[str, Tensor], *, action_dim: int, continuous: bool) -> LossWithIntermediateLosses:
    """One task's UniZero loss (see the module docstring) from its rows of a forward: ``outputs`` (logits of
    shape (B, T, ...)), the encoder's ``obs_embeddings`` (B, T, D) and the target encoder's ``target_embeddings``;
    ``batch`` is the task's ``build_world_model_batch`` dict; ``action_dim`` its action-space size; ``continuous``
    its action kind."""
    wm = world_model
    mask = batch['mask_padding']                                                      # (B, T) bool
    B, T = batch['actions'].shape[:2]
    flat_mask = mask.reshape(-1)
    device = obs_embeddings.device

    # next-latent prediction against the target encoder's latents of the next observations
    predicted = outputs.logits_observations[:, :-1].reshape(-1, wm.projection_input_dim)  # (B*(T-1), D)
    labels = target_embeddings.contiguous().view(B, -1, wm.projection_input_dim)[:, 1:].reshape(-1, wm.projection_input_dim)
    if wm.predict_latent_loss_type == 'mse':
        loss_obs = F.mse_loss(predicted, labels, reduction='none').mean(-1)
    else:  # group_kl over SimNorm groups
        shape = (predicted.shape[0], wm.num_groups, wm.group_size)
        p, q = predicted.reshape(shape) + 1e-6, labels.reshape(shape) + 1e-6
        loss_obs = F.kl_div(p.log(), q, reduction='none').sum(dim=-1).mean(dim=-1)
    loss_obs = loss_obs * mask[:, 1:].contiguous().view(-1)

    loss_rewards = _cross_entropy(outputs.logits_rewards, _masked_labels(batch['rewards'], mask, wm.support_size), flat_mask)
    loss_value = _cross_entropy(outputs.logits_value, _masked_labels(batch['target_value'], mask, wm.support_size), flat_mask)
    continuous_logs: Dict[str, Tensor] = {}
    if continuous:
        orig_policy_loss, entropy_loss, sampled, mu, sigma = _continuous_policy_loss(
            outputs.logits_policy, batch, action_dim=action_dim, num_unroll_steps=wm.config.num_unroll_steps,
            loss_type=wm.config.policy_loss_type)
        loss_policy = orig_policy_loss + wm.policy_entropy_weight * entropy_loss
        policy_entropy = -entropy_loss
        continuous_logs = dict(policy_mu=mu, policy_sigma=sigma, target_sampled_actions=sampled)
    else:
        logits = outputs.logits_policy.reshape(-1, outputs.logits_policy.shape[-1])   # (B*T, A)
        orig_policy_loss = _cross_entropy(outputs.logits_policy, _masked_labels(batch['target_policy'], mask, action_dim),
                                          flat_mask)
        policy_entropy = -(torch.softmax(logits, dim=1) * torch.log_softmax(logits, dim=1)).sum(1) * flat_mask
        loss_policy = orig_policy_loss - wm.policy_entropy_weight * policy_entropy

    step_losses: Dict[str, Dict[str, Tensor]] = {'first': {}, 'middle': {}, 'last': {}}
    for name, value in zip(STEP_LOSSES, (loss_obs, loss_rewards, loss_value, loss_policy, orig_policy_loss,
                                         policy_entropy)):
        steps = T - 1 if name == 'loss_obs' else T
        step_mask = mask[:, 1:steps] if name == 'loss_obs' else mask[:, :steps]
        per_step = value.view(-1, steps)                                              # (B, steps)
        for where, index in (('first', 0), ('middle', steps // 2), ('last', -1)):
            step_losses[where][name] = per_step[:, index][step_mask[:, index]].mean()

    discounts = wm.gamma ** torch.arange(T, device=device)                           # (T,)

    def discounted(value: Tensor, steps: int, weights: Tensor, valid: Tensor) -> Tensor:
        return (value.view(-1, steps) * weights).sum() / valid.sum()

    if wm.obs_type in ('image', 'image_memory'):
        perceptual_loss = wm.perceptual_loss
    else:
        dtype = torch.float32 if wm.obs_type == 'text' else batch['observations'].dtype
        perceptual_loss = torch.tensor(0., device=batch['observations'].device, dtype=dtype)
    zero = torch.tensor(0.)
    return LossWithIntermediateLosses(
        latent_recon_loss_weight=wm.latent_recon_loss_weight, perceptual_loss_weight=wm.perceptual_loss_weight,
        continuous_action_space=continuous,
        loss_obs=discounted(loss_obs, T - 1, discounts[1:], mask[:, 1:]),
        loss_rewards=discounted(loss_rewards, T, discounts, mask),
        loss_value=discounted(loss_value, T, discounts, mask),
        loss_policy=discounted(loss_policy, T, discounts, mask),
        latent_recon_loss=wm.latent_recon_loss, perceptual_loss=perceptual_loss,
        orig_policy_loss=discounted(orig_policy_loss, T, discounts, mask),
        policy_entropy=discounted(policy_entropy, T, discounts, mask),
        first_step_losses=step_losses['first'], middle_step_losses=step_losses['middle'],
        last_step_losses=step_losses['last'], dormant_ratio_encoder=zero, dormant_ratio_world_model=zero,
        latent_state_l2_norms=torch.norm(obs_embeddings, p=2, dim=2).mean(), **continuous_logs)
