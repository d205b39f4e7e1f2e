"""Multi-task behaviour shared by :class:`ScaleZeroPolicy` and :class:`SampledScaleZeroPolicy`.

One policy object owns the shared model, optimizer and target model. Each task gets

- **collect / eval interfaces for it** (:meth:`task_collect_mode`, :meth:`task_eval_mode`): ding
  ``collect_function`` / ``eval_function`` tuples that pass the task id on. lightzero's collectors and
  evaluators run unchanged; each step of every task is served by one lockstep forward (one initial
  inference and one C++ search over every task's roots on the batched KV cache, ``policies.batched_act``),
  and each task's inference state (its envs' last observations and actions) is kept per task;
- **one batch per learn step**: :meth:`_forward_learn` sums the per-task losses (optional per-task
  weights), does one backward, averages gradients over the ranks that produced them, clips after
  averaging, and steps.
"""
import contextlib
import copy
import functools
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from ding.policy import Policy
from ding.utils import deep_merge_dicts
from easydict import EasyDict
from lzero.entry.utils import initialize_zeros_batch

from lzero_ext.amp import autocast, compile_world_model
from lzero_ext.diagnostics import (DEFAULT_PREFIX, KEY_LATENT_NORM, DormantNeuronProbe, expert_usage_log,
                                   expert_usage_metrics, gradient_conflict, shared_backbone_parameters)
from lzero_ext.distributed import average_gradients, get_world_size
from lzero_ext.divergence import check_finite_gradient, check_finite_losses, check_finite_targets
from lzero_ext.dps import LORA_KEYS, apply_staged_lora, clamp_adapter_scales_, resolve_dps_config, set_dps_stage
from lzero_ext.model.cached_inference import InferenceCache
from lzero_ext.model.modalities import cat_observations
from lzero_ext.model.text_encoder import frozen_pretrained_state_keys
from lzero_ext.search import BatchedSearch
from policies.batched_act import act
from policies.lockstep import LockstepInference, Request, is_first_step
from policies.world_model_batch import build_world_model_batch

TaskBatch = Tuple[int, Sequence[Any], Sequence[Any]]  # (task_id, current_batch, target_batch)


def build_optimizer(module: torch.nn.Module, *, learning_rate: float, weight_decay: float,
                    betas: Tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW over **every** parameter, frozen ones included (lightzero's nanoGPT helper drops
    ``requires_grad=False`` parameters, so adapters unfrozen later would never train). Matrices
    decay; biases, norms and gains do not. Parameters without a gradient are skipped by AdamW, so
    frozen weights do not move, weight decay included."""
    decay = [p for p in module.parameters() if p.dim() >= 2]
    no_decay = [p for p in module.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, foreach=True)  # one fused op per group, also on CPU


def _loss_log(losses: Any, stats: Dict[str, float]) -> Dict[str, float]:
    """One task's scalar log entries: the batch statistics, the total and every scalar intermediate loss."""
    log = dict(stats, loss_total=losses.loss_total.item())
    for name, value in losses.intermediate_losses.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            log[name] = value.item()
        elif isinstance(value, (int, float)):
            log[name] = float(value)
    return log


def _empty_context(cfg: EasyDict, env_num: int) -> Dict[str, Any]:
    """lightzero's "no previous step" inference state for ``env_num`` envs: zero observations, actions -1."""
    return {"last_batch_obs": initialize_zeros_batch(cfg.model.observation_shape, env_num, cfg.device),
            "last_batch_action": [-1] * env_num}


def _cache_clear_due(env_id: Any, current_steps: Optional[int], interval: int) -> bool:
    """lightzero's rule: a per-env reset after a step (one env id, its episode's steps) clears every ``interval``."""
    return isinstance(env_id, (int, np.integer)) and current_steps is not None and bool(interval) \
        and current_steps % interval == 0


class MultiTaskPolicyMixin:
    """Mixed in before a lightzero UniZero policy class; see the module docstring."""

    @classmethod
    def default_config(cls) -> EasyDict:
        """ding merges a policy's ``config`` with ``cls.__base__`` only, which here is this mixin:
        merge with the lightzero parent policy instead."""
        parent = next(b for b in cls.__mro__[1:] if issubclass(b, Policy) and not issubclass(b, MultiTaskPolicyMixin))
        cfg = deep_merge_dicts(parent.default_config(), EasyDict(copy.deepcopy(cls.config)))
        cfg.cfg_type = cls.__name__ + "Dict"
        return cfg

    # ------------------------------------------------------------------ model (DPS adapters)
    def _create_model(self, cfg: EasyDict, model: Optional[torch.nn.Module] = None) -> torch.nn.Module:
        # With dps.enabled the staged LoRA layers go in before the optimizer and the target model are built.
        model = super()._create_model(cfg, model)
        if cfg.dps.enabled:
            dps = resolve_dps_config(cfg.dps)
            apply_staged_lora(model, **{key: dps[key] for key in LORA_KEYS})
        return model

    def set_dps_stage(self, stage: int) -> int:
        """Enters DPS stage ``stage`` (what trains: see ``lzero_ext.dps.set_dps_stage``); returns the
        number of trainable parameters. Every parameter is already in the optimizer (``build_optimizer``)."""
        return set_dps_stage(self._model, stage)

    # ------------------------------------------------------------------ task configs
    def set_task_configs(self, task_cfgs: Dict[int, EasyDict]) -> None:
        """Registers each task's compiled policy config (its observation shape, env numbers, ...)."""
        unknown = [t for t in task_cfgs if not 0 <= t < self._cfg.task_num]
        if unknown:
            raise ValueError(f"task ids {unknown} outside 0..{self._cfg.task_num - 1} (policy.task_num={self._cfg.task_num})")
        self._task_cfgs = dict(task_cfgs)

    def task_cfg(self, task_id: int) -> EasyDict:
        return getattr(self, "_task_cfgs", {}).get(task_id, self._cfg)

    # ------------------------------------------------------------------ collect / eval per task
    def task_collect_mode(self, task_id: int) -> "Policy.collect_function":
        return self._bind_interface(self.collect_mode, task_id, "collect")

    def task_eval_mode(self, task_id: int) -> "Policy.eval_function":
        return self._bind_interface(self.eval_mode, task_id, "eval")

    @functools.cached_property
    def lightzero_route(self) -> bool:
        """Whether this (one-task) model needs what only lightzero's own single-task code serves: rotary position
        embeddings or lightzero's dormant-ratio analysis. Collection, evaluation and the loss then run lightzero's own
        methods, as ``policy.collect_mode`` does in lightzero's entries (docs/policy_swap.md). A multi-task model
        with either is refused."""
        wm_cfg = self._cfg.model.world_model_cfg
        route = bool(wm_cfg.get("rotary_emb", False) or wm_cfg.get("analysis_dormant_ratio", False))
        if route and self._cfg.task_num > 1:
            raise ValueError("world_model_cfg.rotary_emb / analysis_dormant_ratio are served by lightzero's single-task "
                             f"code only: set them False for a multi-task model (task_num={self._cfg.task_num})")
        return route

    def _bind_interface(self, interface: tuple, task_id: int, mode: str) -> tuple:
        """ding's interface tuple for one task, the task passed explicitly: ``forward`` joins the task's lockstep
        step (served alone outside a round), ``reset`` resets the task's own inference state, and
        ``get_attribute('cfg')`` answers the task's config (lightzero's workers read it). On the
        :attr:`lightzero_route`, lightzero's own interface."""
        if self.lightzero_route:
            return interface

        def forward(*args: Any, **kwargs: Any) -> Dict[int, Any]:
            lockstep = self.lockstep(mode)
            if lockstep.is_member(task_id):  # pauses until every task's step is served
                return lockstep.forward(task_id, *args, **kwargs)
            return self.lockstep_forward(mode, {task_id: (args, kwargs)})[task_id]

        def reset(env_id: Any = None, current_steps: Optional[int] = None, reset_init_data: bool = True) -> None:
            self._reset_task(task_id, mode, env_id, current_steps, reset_init_data)

        def get_attribute(name: str) -> Any:
            return self.task_cfg(task_id) if name == "cfg" else interface.get_attribute(name)

        bound = {"forward": forward, "reset": reset, "get_attribute": get_attribute}
        return type(interface)(*[bound.get(name, fn) for name, fn in zip(interface._fields, interface)])

    # ------------------------------------------------------------------ lockstep collect / eval
    def run_workers(self, mode: str, jobs: Dict[int, Callable[[], Any]]) -> Dict[int, Any]:
        """``{task_id: job()}`` of task-bound ``mode`` worker calls (a collector's ``collect``, an evaluator's
        ``eval``), in lockstep: one batched forward per step for all of them."""
        return self.lockstep(mode).run(jobs)

    def lockstep(self, mode: str) -> LockstepInference:
        """The loop through which the task-bound ``mode`` workers of one lockstep round share each forward."""
        loops = self.__dict__.setdefault("_lockstep", {})
        if mode not in loops:
            loops[mode] = LockstepInference(lambda requests: self.lockstep_forward(mode, requests))
        return loops[mode]

    def lockstep_forward(self, mode: str, requests: Dict[int, Request]) -> Dict[int, Dict[int, Any]]:
        """One step of every requesting task: one initial inference and one MCTS search over all their roots
        (one search per action dim for continuous tasks: the sampled tree has one)."""
        states = {t: self._task_state(t, mode) for t in requests}
        groups: Dict[Tuple[bool, int], List[int]] = {}  # one search per action kind (and continuous dim)
        for task_id in sorted(requests):
            groups.setdefault(self._search_kind(task_id), []).append(task_id)
        outputs = {}
        for tasks in groups.values():
            outputs.update(self._act_batched(mode, tasks, requests, states))
        return outputs

    def _task_continuous(self, task_id: int) -> bool:
        return self._model.world_model.task_is_continuous(task_id)

    def _search_kind(self, task_id: int) -> Tuple[bool, int]:
        """Which search serves the task: the sampled tree has one per action dim, the discrete tree one for all."""
        continuous = self._task_continuous(task_id)
        return continuous, self._model.world_model._action_dims[task_id] if continuous else 0

    def _inference_cache(self, mode: str) -> InferenceCache:
        """The batched KV cache of ``mode``'s lockstep steps: one slot per (task, env) of this policy's tasks."""
        caches = self.__dict__.setdefault("_inference_caches", {})
        if mode not in caches:
            key = "collector_env_num" if mode == "collect" else "evaluator_env_num"
            env_counts = {t: int(cfg[key]) for t, cfg in getattr(self, "_task_cfgs", {0: self._cfg}).items()}
            caches[mode] = InferenceCache(self._model.world_model, env_counts, num_simulations=self._cfg.num_simulations)
        return caches[mode]

    def _act_batched(self, mode: str, tasks: List[int], requests: Dict[int, Request],
                     states: Dict[int, Dict[str, Any]]) -> Dict[int, Dict[int, Any]]:
        """Every requesting task's step through :func:`policies.batched_act.act`; each task's per-env last
        observations and actions are updated for its ready envs only."""
        names = ("data", "action_mask", "temperature", "to_play", "epsilon") if mode == "collect" \
            else ("data", "action_mask", "to_play")  # lightzero's _forward_collect / _forward_eval arguments
        calls = {t: dict(zip(names, requests[t][0]), **requests[t][1]) for t in tasks}
        env_ids = {t: [int(i) for i in (range(calls[t]["data"].shape[0]) if calls[t].get("ready_env_id") is None
                                         else calls[t]["ready_env_id"])] for t in tasks}
        continuous, dim = self._search_kind(tasks[0])  # the same for every task of the group
        first = np.concatenate([[is_first_step(states[t]["last_batch_action"], continuous)]
                                * len(env_ids[t]) for t in tasks])
        last_actions = self._last_actions(tasks, env_ids, states)
        timesteps = [s for t in tasks for s in calls[t].get("timestep", [-1] * len(env_ids[t]))]
        first_call = calls[tasks[0]]
        if self._model.training:  # as lightzero's _forward_collect / _forward_eval (BatchNorm, dropout); once per round
            self._model.eval()
        searches = self.__dict__.setdefault("_searches", {})  # one per action kind and continuous dim
        if (continuous, dim) not in searches:  # the group's config: a continuous task's carries its sampled K
            searches[(continuous, dim)] = BatchedSearch.from_policy_config(self.task_cfg(tasks[0]), action_space_size=dim,
                                                                           continuous=continuous)
        search = searches[(continuous, dim)]
        world_model = self._model.world_model
        with autocast(self._cfg.amp, self._cfg.device, self._model):
            outputs = act(
                world_model, search, self._inference_cache(mode),
                obs=cat_observations(world_model, [calls[t]["data"] for t in tasks], tasks),
                task_ids=[t for t in tasks for _ in env_ids[t]], env_ids=[e for t in tasks for e in env_ids[t]],
                last_obs=cat_observations(world_model, [states[t]["last_batch_obs"][env_ids[t]] for t in tasks], tasks),
                last_actions=last_actions, first_step=first,
                action_masks=[m for t in tasks for m in calls[t]["action_mask"]], mode=mode,
                temperature=first_call.get("temperature", 1.0), epsilon=first_call.get("epsilon", 0.0),
                noise=(self._cfg.root_dirichlet_alpha, self._cfg.root_noise_weight), timesteps=timesteps)
        result, row = {}, 0
        for t in tasks:
            ids, data, state = env_ids[t], calls[t]["data"], states[t]
            result[t] = dict(zip(ids, outputs[row:row + len(ids)]))
            row += len(ids)
            last_obs = state["last_batch_obs"].to(data.dtype, copy=True)  # token ids (text tasks) are integers
            last_obs[ids] = data
            state["last_batch_obs"] = last_obs
            state["last_batch_action"] = list(state["last_batch_action"])
            for env_id, out in result[t].items():
                state["last_batch_action"][env_id] = out["action"]
        return result

    def _last_actions(self, tasks: List[int], env_ids: Dict[int, List[int]],
                      states: Dict[int, Dict[str, Any]]) -> torch.Tensor:
        """The rows' previous actions: ``(B,)`` discrete ids, or ``(B, a_max)`` continuous actions (zeros where an
        episode starts: lightzero marks those with -1); a model of both kinds takes ``(B, 1)`` discrete ids too."""
        world_model = self._model.world_model
        if not self._task_continuous(tasks[0]):
            ids = torch.as_tensor([int(states[t]["last_batch_action"][e]) for t in tasks for e in env_ids[t]])
            return ids[:, None].float() if world_model.mixed_actions else ids
        width = max(d for t, d in enumerate(world_model._action_dims) if self._task_continuous(t))
        rows = []
        for t in tasks:
            for e in env_ids[t]:
                action = states[t]["last_batch_action"][e]
                row = np.zeros(width, dtype=np.float32)
                if isinstance(action, np.ndarray):
                    row[:action.shape[-1]] = action
                rows.append(row)
        return torch.from_numpy(np.stack(rows))

    def recompute_pos_emb_diff_and_clear_cache(self) -> None:
        # lightzero clears its own inference caches after a learn round; the batched caches follow it.
        super().recompute_pos_emb_diff_and_clear_cache()
        for cache in self.__dict__.get("_inference_caches", {}).values():
            cache.invalidate()

    def _task_state(self, task_id: int, mode: str) -> Dict[str, Any]:
        """Task ``task_id``'s ``mode`` inference state: its envs' last observations and actions."""
        states = self.__dict__.setdefault("_task_states", {})
        if (task_id, mode) not in states:
            states[(task_id, mode)] = self._empty_task_state(task_id, mode)
        return states[(task_id, mode)]

    def _empty_task_state(self, task_id: int, mode: str) -> Dict[str, Any]:
        cfg = self.task_cfg(task_id)
        return _empty_context(cfg, int(cfg.collector_env_num if mode == "collect" else cfg.evaluator_env_num))

    def _reset_task(self, task_id: int, mode: str, env_id: Any, current_steps: Optional[int],
                    reset_init_data: bool) -> None:
        """lightzero UniZero's collect/eval reset, for one task of the lockstep engine. ``reset_init_data``: forget
        the task's last observations and actions (of every env, as lightzero does). lightzero's UniZero workers also
        call ``reset(env_id=i, current_steps=n, reset_init_data=False)`` after each step of env ``i`` (``n``: its
        episode's steps so far; ``lzero_ext.workers`` makes them do so for ScaleZero): every
        ``cache_clear_interval`` steps the task's rows of the batched KV cache are dropped (its next step restarts
        from the last observation), as lightzero's UniZero clears its caches. Other tasks keep theirs."""
        if reset_init_data:
            self.__dict__.setdefault("_task_states", {})[(task_id, mode)] = self._empty_task_state(task_id, mode)
        if _cache_clear_due(env_id, current_steps, self._cfg.cache_clear_interval) \
                and mode in self.__dict__.get("_inference_caches", {}):
            self._inference_cache(mode).invalidate(task_id)

    # lightzero's own collect/eval (``policy.collect_mode`` / ``eval_mode``: the single-task route into lightzero's
    # entries, docs/policy_swap.md) resets as lightzero's UniZero does, every cache_clear_interval steps and quietly
    def _reset_collect(self, env_id: Any = None, current_steps: Optional[int] = None,
                       reset_init_data: bool = True) -> None:
        self._reset_lightzero_state(self._cfg.collector_env_num, env_id, current_steps, reset_init_data)

    def _reset_eval(self, env_id: Any = None, current_steps: Optional[int] = None,
                    reset_init_data: bool = True) -> None:
        self._reset_lightzero_state(self._cfg.evaluator_env_num, env_id, current_steps, reset_init_data)

    def _reset_lightzero_state(self, env_num: int, env_id: Any, current_steps: Optional[int],
                               reset_init_data: bool) -> None:
        if reset_init_data:
            self.__dict__.update(_empty_context(self._cfg, env_num))
        if _cache_clear_due(env_id, current_steps, self._cfg.cache_clear_interval):
            self._model.world_model.clear_caches()

    # ------------------------------------------------------------------ learning
    def _init_learn(self) -> None:
        if self._cfg.get("engine", "batched") != "batched":
            raise ValueError(f"policy.engine={self._cfg.engine!r}: ScaleZero has one engine, every task through one "
                             "batched forward (the task-by-task engine was removed); drop the key")
        _ = self.lightzero_route  # a multi-task model lightzero's code alone can serve is refused here, before training
        super()._init_learn()
        # Rebuilt over every parameter: the parent's optimizer drops frozen ones (see build_optimizer).
        self._optimizer_world_model = build_optimizer(
            self._model.world_model, learning_rate=self._cfg.learning_rate, weight_decay=self._cfg.weight_decay
        )
        compile_world_model(self._learn_model, device=self._cfg.device, enabled=self._cfg.compile)
        self.lr_scheduler = None
        if self._cfg.cos_lr_scheduler:
            self.lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self._optimizer_world_model, 1e5, eta_min=0)

    def _task_batches(self, data: Any) -> List[TaskBatch]:
        """Accepts ``[(task_id, current_batch, target_batch), ...]`` (multi-task) or lightzero's
        single-task ``[current_batch, target_batch, train_iter]`` (task ``policy.task_id``)."""
        if len(data) == 3 and isinstance(data[2], (int, type(None))) and not isinstance(data[0], tuple):
            return [(self._cfg.task_id, data[0], data[1])]
        return list(data)

    def _forward_learn(self, data: Any) -> Dict[str, float]:
        task_batches = self._task_batches(data)
        self._learn_model.train()
        self._target_model.train()
        weights = self._cfg.task_loss_weights
        task_losses: Dict[int, torch.Tensor] = {}
        log: Dict[str, float] = {}
        latent_norms: Dict[int, float] = {}
        diagnose = self._diagnostics_due()
        arrays: Dict[str, Any] = {}  # this step's full diagnostics (pictures): usage (L, E) per task, cosine matrix
        probe = DormantNeuronProbe.for_transformer(self._learn_model) if diagnose else contextlib.nullcontext()
        with probe:
            for task_id, (losses, task_log) in self._task_losses(task_batches).items():
                task_losses[task_id] = losses.loss_total * (1.0 if weights is None else weights[task_id])
                log.update({f"task{task_id}/{name}": value for name, value in task_log.items()})
                if diagnose and "latent_state_l2_norms" in task_log:  # lightzero's mean L2 norm of the encoder latents
                    latent_norms[task_id] = task_log["latent_state_l2_norms"]
                if diagnose and losses.router_stats:
                    log.update(expert_usage_log(expert_usage_metrics(losses.router_stats["usage_per_task"])))
                    arrays[f"expert_usage/task{task_id}"] = losses.router_stats["usage_per_task"][:, task_id].tolist()
        total_loss: Optional[torch.Tensor] = sum(task_losses.values()) if task_losses else None
        if latent_norms:
            key = f"{DEFAULT_PREFIX}{KEY_LATENT_NORM}"
            log.update({f"{key}/task{task_id}": value for task_id, value in latent_norms.items()})
            log[key] = sum(latent_norms.values()) / len(latent_norms)
        if diagnose and task_losses:  # before backward: autograd.grad leaves .grad untouched
            conflict = gradient_conflict(task_losses, shared_backbone_parameters(self._learn_model))
            log.update(conflict.as_log())
            arrays["grad_cos"] = {"task_ids": conflict.task_ids, "matrix": conflict.matrix.tolist()}
            log.update(probe.result().as_log())
        if diagnose:
            self.diagnostic_arrays = arrays  # read by the trainer's DiagnosticsRecorder (the learn log holds scalars)

        self._optimizer_world_model.zero_grad(set_to_none=True)
        if total_loss is not None:  # a rank whose tasks have no data yet still joins the collectives
            if not torch.isfinite(total_loss):
                raise FloatingPointError(f"non-finite total loss {total_loss.item()} (tasks {[t for t, _, _ in task_batches]})")
            total_loss.backward()
        world_model_params = list(self._learn_model.world_model.parameters())
        average_gradients(world_model_params, get_world_size())
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in world_model_params if p.grad is not None], self._cfg.grad_clip_value
        )
        check_finite_gradient(grad_norm)  # before the step: the parameters stay finite
        self._optimizer_world_model.step()
        if self._cfg.dps.enabled:
            clamp_adapter_scales_(self._learn_model)  # keep the adapter scales within their range
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        self._update_target_model()

        log.update({
            "weighted_total_loss": 0.0 if total_loss is None else total_loss.item(),
            "total_grad_norm_before_clip_wm": float(grad_norm),
            "cur_lr_world_model": self._optimizer_world_model.param_groups[0]["lr"],
            "num_task_batches": float(len(task_batches)),
        })
        if len(task_batches) == 1:  # lightzero's single-task log names, for its learner and dashboards
            log.update({k.split("/", 1)[1]: v for k, v in log.items() if k.startswith(f"task{task_batches[0][0]}/")})
        return log

    def _update_target_model(self) -> None:
        """lightzero's momentum target update, skipping frozen pretrained text-encoder weights: they are the
        same fixed tensors in both models, and MiniLM's 22M parameters cost ~100 ms per learn step on CPU."""
        frozen = self.__dict__.get("_frozen_target_keys")
        if frozen is None:
            frozen = self._frozen_target_keys = frozenset(frozen_pretrained_state_keys(self._learn_model))
        if not frozen:
            self._target_model.update(self._learn_model.state_dict())
            return
        theta, state = self._cfg.target_update_theta, self._learn_model.state_dict()
        for name, param in self._target_model.named_parameters():  # ding's momentum rule, frozen names left out
            if name not in frozen:
                param.data = (1 - theta) * param.data + theta * state[name]

    def _diagnostics_due(self) -> bool:
        """True every ``diagnostics_freq`` learn steps (the first included); counts the calls."""
        step = self.__dict__.get("_learn_calls", 0)
        self._learn_calls = step + 1
        freq = self._cfg.diagnostics_freq
        return bool(freq) and step % freq == 0

    def _task_losses(self, task_batches: Sequence[TaskBatch]) -> Dict[int, Tuple[Any, Dict[str, float]]]:
        """``{task_id: (losses, log)}`` from one world-model forward over every task's rows."""
        batches, stats = {}, {}
        for task_id, current_batch, target_batch in task_batches:
            cfg = self.task_cfg(task_id)
            check_finite_targets(task_id, target_batch)  # NaN targets would crash inside lightzero's value transform
            batches[task_id], stats[task_id] = build_world_model_batch(
                current_batch, target_batch, observation_shape=cfg.model.observation_shape, policy_cfg=cfg,
                support=self.value_support, continuous_actions=self._task_continuous(task_id),
            )
        world_model, target_tokenizer = self._learn_model.world_model, self._target_model.world_model.tokenizer
        with autocast(self._cfg.amp, self._cfg.device):  # bf16 forward and loss; backward runs outside
            if not batches:
                losses = {}
            elif self.lightzero_route:  # one task: lightzero's own loss
                losses = {t: world_model.compute_loss(batch, target_tokenizer, self.inverse_scalar_transform_handle,
                                                      task_id=t) for t, batch in batches.items()}
            else:
                losses = world_model.compute_task_losses(batches, target_tokenizer, self.inverse_scalar_transform_handle)
        logs = {t: _loss_log(task_losses, stats[t]) for t, task_losses in losses.items()}
        for task_id, log in logs.items():
            check_finite_losses(task_id, log)
        return {t: (losses[t], logs[t]) for t in losses}

    def _monitor_vars_learn(self) -> List[str]:
        return super()._monitor_vars_learn() + ["num_task_batches"]

    def _state_dict_learn(self) -> Dict[str, Any]:
        state = super()._state_dict_learn()
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        for key, model in (("model", self._learn_model), ("target_model", self._target_model)):
            for name in frozen_pretrained_state_keys(model):  # fixed by text_encoder.model_path: not saved
                state[key].pop(name, None)
        return state

    def _load_state_dict_learn(self, state_dict: Dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        for key, model in (("model", self._learn_model), ("target_model", self._target_model)):
            missing = frozen_pretrained_state_keys(model)
            if missing:  # put the frozen pretrained weights (left out by _state_dict_learn) back for strict loading
                current = model.state_dict()
                state_dict[key] = {**{name: current[name] for name in missing}, **state_dict[key]}
        super()._load_state_dict_learn(state_dict)
        if self.lr_scheduler is not None and "lr_scheduler" in state_dict:
            self.lr_scheduler.load_state_dict(state_dict["lr_scheduler"])
