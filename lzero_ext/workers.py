"""lightzero's collectors and evaluator, with their UniZero-only per-step cache call open to UniZero subclasses.

After every env step, lightzero 0.2.0's ``MuZeroCollector``, ``MuZeroSegmentCollector`` and
``MuZeroEvaluator`` call ``policy.reset(env_id=i, current_steps=n, reset_init_data=False)``
(``n``: the steps of env ``i``'s episode so far), with which a UniZero policy drops its inference
KV caches every few hundred steps. They make that call only when
``policy.get_attribute('cfg').type in ['unizero', 'sampled_unizero']``, so a registered subclass of
those policies (``scalezero``, ``sampled_scalezero``, any plugin's) never gets it.

The workers here are lightzero's, except that the policy they hold answers
``get_attribute('cfg').type`` with the lightzero type its registered class extends
(:func:`unizero_family_type`): the cfg's one read of ``type`` in those workers is that check. Every
other key, and the policy's own config, are unchanged. LightZero main's version of the check is
replaced by a registry lookup in ``docs/upstream/lightzero-unizero-capability.patch``.

Example::

    >>> from lzero_ext.workers import UniZeroFamilyEvaluator, unizero_family_type
    >>> unizero_family_type('scalezero'), unizero_family_type('sampled_scalezero'), unizero_family_type('muzero')
    ('unizero', 'sampled_unizero', None)
"""
from collections import namedtuple
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from ding.utils import POLICY_REGISTRY
from lzero.policy.sampled_unizero import SampledUniZeroPolicy
from lzero.policy.unizero import UniZeroPolicy
from lzero.worker import MuZeroCollector, MuZeroEvaluator, MuZeroSegmentCollector

# lightzero's UniZero policy types, most derived first (SampledUniZeroPolicy subclasses UniZeroPolicy).
UNIZERO_FAMILY = (("sampled_unizero", SampledUniZeroPolicy), ("unizero", UniZeroPolicy))


# lightzero's evaluator.eval(save_ckpt_fn, train_iter, envstep, n_episode=None) -> (stop, info)
EvalFn = Callable[..., Tuple[bool, Dict[str, Any]]]


def eval_rounds(eval_fn: EvalFn, env_num: int, episodes: Optional[int], train_iter: int, envstep: int) -> List[float]:
    """Episode returns of one evaluation of ``episodes`` episodes (None: the evaluator's ``n_evaluator_episode``) by
    lightzero's evaluator ``eval_fn`` over ``env_num`` envs. More episodes than envs run as rounds of one episode per
    env (at least ``episodes`` in all): lightzero 0.2.0's evaluator hands further episodes to whichever env is free
    first, and an env whose episodes faster ones took never finishes its share, so the evaluation fails."""
    rounds = 1 if episodes is None else -(-int(episodes) // env_num)
    returns: List[float] = []
    for _ in range(rounds):
        _, info = eval_fn(None, train_iter, envstep, n_episode=None if episodes is None else env_num)
        returns.extend(float(r) for r in np.atleast_1d(info["eval_episode_return"]))
    return returns


def unizero_family_type(policy_type: str) -> Optional[str]:
    """The lightzero UniZero type (``'unizero'``, ``'sampled_unizero'``) whose policy class the policy registered
    as ``policy_type`` extends; None for any other policy. Raises ``KeyError`` for an unregistered type."""
    policy_cls = POLICY_REGISTRY.get(policy_type)
    return next((name for name, base in UNIZERO_FAMILY if issubclass(policy_cls, base)), None)


class FamilyTypedConfig:
    """A read-only view of a policy config whose ``type`` reads as its UniZero family type."""

    __slots__ = ("_cfg", "type")

    def __init__(self, cfg: Any, family_type: str) -> None:
        object.__setattr__(self, "_cfg", cfg)
        object.__setattr__(self, "type", family_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cfg, name)

    def __getitem__(self, key: str) -> Any:
        return self.type if key == "type" else self._cfg[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.type if key == "type" else self._cfg.get(key, default)


def family_typed(policy: namedtuple) -> namedtuple:
    """``policy`` (a ding collect/eval interface) whose ``get_attribute('cfg')`` is a :class:`FamilyTypedConfig`;
    ``policy`` itself for lightzero's own types and for policies outside the UniZero family."""
    get_attribute = policy.get_attribute
    own_type = get_attribute("cfg").type
    family_type = unizero_family_type(own_type)
    if family_type is None or family_type == own_type:
        return policy

    def typed_get_attribute(name: str) -> Any:
        value = get_attribute(name)
        return FamilyTypedConfig(value, family_type) if name == "cfg" else value

    return policy._replace(get_attribute=typed_get_attribute)


class UniZeroFamilyWorker:
    """Mixed in before a lightzero worker class: the policy it is given is wrapped by :func:`family_typed`."""

    def reset_policy(self, _policy: Optional[namedtuple] = None) -> None:
        super().reset_policy(None if _policy is None else family_typed(_policy))


class UniZeroFamilyCollector(UniZeroFamilyWorker, MuZeroCollector):
    """lightzero's ``MuZeroCollector`` (episodes), for every UniZero-family policy type."""


class UniZeroFamilySegmentCollector(UniZeroFamilyWorker, MuZeroSegmentCollector):
    """lightzero's ``MuZeroSegmentCollector`` (game segments), for every UniZero-family policy type."""


class UniZeroFamilyEvaluator(UniZeroFamilyWorker, MuZeroEvaluator):
    """lightzero's ``MuZeroEvaluator``, for every UniZero-family policy type."""
