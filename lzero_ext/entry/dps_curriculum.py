"""Dynamic Parameter Scaling inside the multi-task loop (docs/dps.md).

After every learn round the trainer calls :meth:`DPSCurriculum.step`: each task's latest evaluation
return, gathered from every rank, goes to the :class:`~lzero_ext.dps.DPSController`; when it moves
to a new stage the policy freezes the backbone and trains the next LoRA adapter
(``policy.set_dps_stage``). Solved tasks stop collecting, evaluating and training
(:meth:`is_solved`). Every rank feeds the controller the same gathered returns at the same
iteration, so all ranks agree on the stage and the solved set without further messages.
"""
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence

from lzero_ext.distributed import all_gather_object
from lzero_ext.dps import adapter_scales, controller_from_config

logger = logging.getLogger(__name__)


class DPSCurriculum:
    """The DPS controller bound to a policy whose model carries staged LoRA layers (``policy.dps.enabled``).

    Example (inside a trainer; ``records`` are this rank's ``TaskRecord`` objects)::

        curriculum = DPSCurriculum(policy, task_names=["Pong", "Breakout"])
        ...
        curriculum.step(train_iter, records)        # after each learn round
        active = [t for t in tasks if not curriculum.is_solved(t.name)]
    """

    def __init__(self, policy: Any, task_names: Sequence[str]) -> None:
        self.policy = policy
        self.controller = controller_from_config(policy._cfg.dps, list(task_names))
        self.trainable_params = policy.set_dps_stage(0)

    @property
    def stage(self) -> int:
        return self.controller.stage

    def is_solved(self, task_name: str) -> bool:
        return task_name in self.controller.solved

    @property
    def all_solved(self) -> bool:
        return self.controller.all_solved

    def step(self, train_iter: int, local_records: Sequence[Any]) -> Optional[int]:
        """Feeds every task's latest eval return to the controller; switches stage when it says so."""
        local = {r.name: r.eval_return for r in local_records if r.history}
        returns: Dict[str, float] = {}
        for rank_returns in all_gather_object(local):
            returns.update(rank_returns)
        solved_before = set(self.controller.solved)
        new_stage = self.controller.update(train_iter, returns)
        for name in sorted(self.controller.solved - solved_before):
            logger.info(f"[dps] {name} solved (return {returns[name]:.2f} >= target {self.controller.targets[name]:.2f}) "
                        f"at iteration {train_iter}: it stops collecting, evaluating and training")
        if new_stage is not None:
            self.trainable_params = self.policy.set_dps_stage(new_stage)
            logger.info(f"[dps] stage {new_stage} at iteration {train_iter} ({self.controller.history[-1]['reason']}): "
                        f"{self.trainable_params:,} trainable parameters")
        return new_stage

    def log_vars(self) -> Dict[str, float]:
        """Stage, solved count, trainable parameters and mean adapter scales, for TensorBoard."""
        log = {f"dps/{k}": v for k, v in self.controller.log_vars().items()}
        log["dps/trainable_params"] = float(self.trainable_params)
        log.update({f"dps/scale/{k}": v for k, v in adapter_scales(self.policy._model).items()})
        return log

    def report(self, env_steps: Mapping[str, int]) -> Dict[str, Any]:
        """``summary.json``'s ``dps`` block: stage, solved tasks, switches and env steps used."""
        return {
            "stage": self.controller.stage,
            "num_stages": self.controller.num_stages,
            "solved": sorted(self.controller.solved),
            "unsolved": self.controller.unsolved,
            "targets": dict(self.controller.targets),
            "switches": [dict(entry) for entry in self.controller.history],
            "env_steps": dict(env_steps),
            "total_env_steps": int(sum(env_steps.values())),
            "trainable_params": int(self.trainable_params),
        }

    def state_dict(self) -> Dict[str, Any]:
        return self.controller.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores the controller and puts the model back into the saved stage."""
        self.controller.load_state_dict(state)
        self.trainable_params = self.policy.set_dps_stage(self.controller.stage)


def active_tasks(tasks: List[Any], curriculum: Optional[DPSCurriculum]) -> List[Any]:
    """The tasks that still collect, evaluate and train (all of them without DPS)."""
    return tasks if curriculum is None else [t for t in tasks if not curriculum.is_solved(t.name)]
