"""One learner batch per task with one target-model forward for every task's bootstrap values.

lightzero's ``UniZeroGameBuffer.sample`` builds a task's batch and calls the target model once for the
bootstrap values of its sampled positions (``initial_inference`` without a current observation), after
moving the model to its device and into eval mode (two walks over every module). Here every task's
``sample`` runs as a coroutine of one loop (``policies.lockstep.LockstepInference``): its target-model call
pauses it, and one :func:`~lzero_ext.model.sequence_forward.target_inference` serves every task's rows.
The buffers' own batch making and target arithmetic run unchanged, so the batches equal task-by-task
sampling (same numpy draws, in the same order).
"""
from types import SimpleNamespace
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from lzero.model.common import MZNetworkOutput

from lzero_ext.model.sequence_forward import target_inference
from lzero_ext.model.modalities import cat_observations
from lzero_ext.model.action_kinds import cat_actions
from lzero_ext.model.task_routing import TaskRows
from policies.lockstep import LockstepInference, Request

TaskBatch = Tuple[int, Any, Any]  # (task_id, current_batch, target_batch)


class _TargetModelStandIn:
    """What a task's buffer sees as ``policy._target_model``: its bootstrap inference waits for the batched one."""

    def __init__(self, lockstep: LockstepInference, task_id: int) -> None:
        self._lockstep, self._task_id = lockstep, task_id

    def to(self, *args: Any, **kwargs: Any) -> '_TargetModelStandIn':  # the batched forward runs on the model's device
        return self

    def eval(self) -> '_TargetModelStandIn':  # put in eval mode once per sample, for every task
        return self

    def initial_inference(self, obs: torch.Tensor, action_batch: Any = None, current_obs_batch: Any = None,
                          start_pos: Any = 0) -> Any:
        if current_obs_batch is not None:
            raise RuntimeError("the multi-task sampler serves bootstrap inference only (no current observation)")
        return self._lockstep.forward(self._task_id, obs, action_batch)

    def recurrent_inference(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("reanalysis searches with the target model: sample task by task when reanalyze_ratio > 0")


def _serve(target_model: torch.nn.Module, requests: Dict[int, Request]) -> Dict[int, Any]:
    """One bootstrap forward over every requesting task's rows; each task gets lightzero's output for its rows."""
    tasks = sorted(requests)
    world_model = target_model.world_model
    obs = {t: requests[t][0][0] for t in tasks}
    actions = {t: torch.as_tensor(np.asarray(requests[t][0][1]), device=obs[t].device) for t in tasks}
    rows = TaskRows.from_sizes([(t, actions[t].shape[0]) for t in tasks])
    out = target_inference(world_model, cat_observations(world_model, [obs[t] for t in tasks], tasks),
                           cat_actions(world_model.action_kinds, [actions[t] for t in tasks], tasks), rows)
    results, value_row, obs_row = {}, 0, 0
    for t in tasks:
        n_values = actions[t].shape[0] * (actions[t].shape[1] + 1)  # every position plus the duplicated last one
        n_obs = obs[t].shape[0]
        # the task's own width (a continuous task: [mu, sigma] of its dim), as lightzero's model for it gives
        policy = out.policy_logits[value_row:value_row + n_values, :world_model.task_policy_width(t)]
        results[t] = MZNetworkOutput(value=out.value[value_row:value_row + n_values], reward=[0.] * n_obs,
                                     policy_logits=policy, latent_state=out.latent_state[obs_row:obs_row + n_obs])
        value_row, obs_row = value_row + n_values, obs_row + n_obs
    return results


def sample_tasks(tasks: Sequence[Any], policy: Any) -> List[TaskBatch]:
    """``[(task_id, current_batch, target_batch)]`` of every task runtime in ``tasks``, as ``task.sample(policy)``
    gives them, with one target-model forward for all. Tasks that reanalyse, and a model on the policy's
    ``lightzero_route`` (its target values need lightzero's own forward), are sampled on their own."""
    target = policy._target_model
    if target.training:
        target.eval()
    batched = [] if policy.lightzero_route else [task for task in tasks if not task.cfg.policy.get("reanalyze_ratio", 0)]
    lockstep = LockstepInference(lambda requests: _serve(target, requests))
    jobs = {task.task_id: (lambda task=task: task.buffer.sample(
        task.cfg.policy.batch_size, SimpleNamespace(_target_model=_TargetModelStandIn(lockstep, task.task_id))))
        for task in batched}
    results = lockstep.run(jobs) if jobs else {}
    out = []
    for task in tasks:
        if task.task_id in results:
            current_batch, target_batch = results[task.task_id]
            out.append((task.task_id, current_batch, target_batch))
        else:
            out.append(task.sample(policy))
    return out
