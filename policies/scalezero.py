"""ScaleZero policies: lightzero's UniZero policies serving many tasks with one model.

Registered in ding's ``POLICY_REGISTRY`` as ``scalezero`` (discrete actions, MCTS with lightzero's
``UniZeroMCTSCtree``) and ``sampled_scalezero`` (continuous actions, sampled MCTS). Everything
multi-task lives in :class:`policies.multitask.MultiTaskPolicyMixin`; this module holds the
registered classes and their default configs (every new key documented once, here).

Example::

    >>> from ding.policy import create_policy
    >>> cfg = ScaleZeroPolicy.default_config()            # then compile_config(...) as usual
    >>> cfg.type, cfg.task_num
    ('scalezero', 1)
"""
import copy
from contextlib import contextmanager
from typing import Iterator, List, Tuple

import torch
from ding.utils import POLICY_REGISTRY, deep_merge_dicts
from easydict import EasyDict
from lzero.policy.sampled_unizero import SampledUniZeroPolicy
from lzero.policy.unizero import UniZeroPolicy

from lzero_ext.model.world_model import MultiTaskWorldModel
from policies.multitask import MultiTaskPolicyMixin

MULTITASK_POLICY_KEYS = dict(
    # (int) Number of tasks the one shared model serves; task ids are 0..task_num-1.
    task_num=1,
    # (int) The task this config describes. Single-task pipelines (e.g. lightzero's own entries) use it
    # for every call; the multi-task entry sets it per task.
    task_id=0,
    # (list[float] | None) Per-task weights of the summed loss; None weighs every task 1.
    task_loss_weights=None,
    # (list[float] | None) Evaluate each task when its env steps first reach these fractions of the run's per-task
    # env-step budget (``max_env_step``), e.g. [0.25, 0.5, 0.75]. The baseline before training and the final evaluation
    # always run; a task that has spent its budget is not evaluated again until the final one. None: lightzero's
    # ``eval_freq`` (every N learner iterations).
    eval_env_step_fractions=None,
    # (bool) Evaluate every task once before training (the baseline of its learning curve); the trainer's
    # ``initial_eval=False`` (``--no-initial-eval``) turns it off too.
    initial_eval=True,
    # (int | None) Episodes of the final evaluation of each task (its evaluator's envs run them in parallel, reused
    # when there are more episodes than envs); None: the env's ``n_evaluator_episode``, as in training.
    final_eval_episodes=None,
    # (int | None) Env steps every task collects per round: a task's collector rounds repeat until it has them, so
    # tasks with short episodes (whose segments close early) get as many steps per round as the others and no task
    # trains on a frozen buffer while another still collects. None: one collector round per task and round.
    collect_env_steps_per_round=None,
    # (str|None) The task's benchmark in a run over several domains ('atari', 'dmc', 'minatar', 'jericho'): the summary
    # groups tasks by it, and the cross-domain diagnostics compare them. None: one domain.
    domain=None,
    # (str|None) The task's summary score: 'atari' (human-normalised), 'dmc' (return/1000) or 'raw'; None: the run's.
    score_kind=None,
    # (int) Learn steps between training diagnostics (per-task gradient cosine on the transformer, dormant-neuron
    # ratio of its FFNs, per-task expert usage), logged under ``diag/``; 0 turns them off. Each costs one extra
    # partial backward per task on that step.
    diagnostics_freq=100,
    # (int) Every this many steps of an episode, the task's inference KV caches are cleared (lightzero's UniZero: 200,
    # on the per-step reset call of its collectors and evaluator, see lzero_ext.workers); 0 never clears mid-round.
    cache_clear_interval=200,
    # (str) Mixed precision of the learn step and of collect/eval inference: 'off' or 'bf16' (torch.autocast, for
    # GPUs; see lzero_ext.amp). Off by default.
    amp='off',
    # (bool) torch.compile the world model's transformer blocks and encoder (lzero_ext.amp); where it cannot compile,
    # a warning says so and they run eagerly. Off by default.
    compile=False,
    # Dynamic Parameter Scaling (docs/dps.md): staged LoRA adapters on the transformer's attention and
    # expert linears, a new one trained (backbone frozen) each time enough tasks are solved; solved tasks stop.
    dps=dict(
        # (bool) Wrap the transformer in staged LoRA layers and let the training entry run the DPS curriculum.
        enabled=False,
        # (str|None) 'atari' or 'dmc': the target-return table and the defaults of every None below; None
        # (e.g. Jericho) requires all of them and ``targets``.
        suite='atari',
        # (int|None) Stages S: stage 0 trains everything, stages 1..S-1 one new adapter each (paper: 5).
        num_stages=None,
        # (int|None) Train iterations before the first switch (Atari 50k, DMC 10k).
        min_stage0_iters=None,
        # (int|None) A stage ends after this many train iterations even without enough newly solved tasks (20k / 5k).
        max_stage_iters=None,
        # (int|None) LoRA rank r (64).
        rank=None,
        # (float|None) lora_alpha; adapters are scaled by lora_alpha / r (Atari 32, DMC 1).
        alpha=None,
        # (float|None) Dropout on the adapter input (Atari 0.1, DMC 0).
        dropout=None,
        # (dict|None) Target return per task name, overriding the suite's table (a task is solved at >= target).
        targets=None,
    ),
)

# The world model's own keys (num_tasks, moe, share_heads, task_embed_option, latent_norm, ...) are
# documented once, in MultiTaskWorldModel.config, and merged into ``model.world_model_cfg`` here.
SCALEZERO_WORLD_MODEL_KEYS = MultiTaskWorldModel.config
DEFAULT_INIT_W = SampledUniZeroPolicy.config["init_w"]  # Gaussian policy heads' output init, lightzero's sampled policy


def _scalezero_config(parent: dict, policy_type: str) -> dict:
    config = deep_merge_dicts(copy.deepcopy(parent), dict(type=policy_type, **MULTITASK_POLICY_KEYS))
    config["model"]["world_model_cfg"] = deep_merge_dicts(config["model"]["world_model_cfg"], SCALEZERO_WORLD_MODEL_KEYS)
    # (str) Encoder normalisation: LayerNorm, since BatchNorm statistics would mix tasks (and differ across ranks).
    config["model"]["norm_type"] = "LN"
    return config


@POLICY_REGISTRY.register("scalezero")
class ScaleZeroPolicy(MultiTaskPolicyMixin, UniZeroPolicy):
    """UniZero with the ScaleZero world model (MoE transformer, per-task heads), trained on many tasks."""

    config = _scalezero_config(UniZeroPolicy.config, "scalezero")

    def default_model(self) -> Tuple[str, List[str]]:
        return "ScaleZeroModel", ["lzero_ext.model.scalezero_model"]

    def _init_learn(self) -> None:
        # A model with continuous tasks too (world_model_cfg.action_type_list): their Gaussian heads get the sampled
        # policy's init, before the parent deep-copies the target model.
        if self._model.world_model.mixed_actions:
            init_gaussian_policy_heads(self._model.world_model, self._cfg.get("init_w", DEFAULT_INIT_W))
        super()._init_learn()


@POLICY_REGISTRY.register("sampled_scalezero")
class SampledScaleZeroPolicy(MultiTaskPolicyMixin, SampledUniZeroPolicy):
    """Sampled UniZero (continuous actions, K sampled actions per node) with the ScaleZero world model."""

    config = _scalezero_config(SampledUniZeroPolicy.config, "sampled_scalezero")

    def default_model(self) -> Tuple[str, List[str]]:
        return "SampledScaleZeroModel", ["lzero_ext.model.scalezero_model"]

    def _init_learn(self) -> None:
        # lightzero's _init_learn inits `world_model.fc_policy_head` (one head); ours are per task: init each here,
        # before the parent deep-copies the target model, and hide the continuous flag from that one parent step.
        init_gaussian_policy_heads(self._model.world_model, self._cfg.init_w)
        with _continuous_flag_hidden(self._cfg.model):
            super()._init_learn()


def init_gaussian_policy_heads(world_model: MultiTaskWorldModel, init_w: float) -> None:
    """Uniform(-init_w, init_w) init of the mean and log-sigma output layers of every continuous task's Gaussian
    policy head, as lightzero's SampledUniZeroPolicy does for its single head."""
    heads = world_model.head_policy.per_task
    for task_id, head in enumerate(heads):
        if len(heads) == world_model.num_tasks and not world_model.task_is_continuous(task_id):
            continue  # a discrete task's head in a model of both kinds
        gaussian = head.head_module  # ding ReparameterizationHead
        for layer in (gaussian.mu, getattr(gaussian, "log_sigma_layer", None)):  # no log_sigma_layer if sigma is fixed
            if layer is not None:
                torch.nn.init.uniform_(layer.weight, -init_w, init_w)
                torch.nn.init.uniform_(layer.bias, -init_w, init_w)


@contextmanager
def _continuous_flag_hidden(model_cfg: EasyDict) -> Iterator[None]:
    """``model_cfg.continuous_action_space`` reads False inside the context (then restored)."""
    saved, model_cfg.continuous_action_space = model_cfg.continuous_action_space, False
    try:
        yield
    finally:
        model_cfg.continuous_action_space = saved
