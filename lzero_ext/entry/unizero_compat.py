"""``train_unizero`` with lightzero's signature that also accepts the ScaleZero policy types.

lightzero 0.2.0's own ``lzero.entry.train_unizero`` asserts ``policy.type in ['unizero',
'sampled_unizero']`` before it imports ``policy.import_names``, so no plugin policy can pass it.
This drop-in keeps an existing pipeline's call unchanged apart from the import::

    from lzero_ext.entry import train_unizero      # was: from lzero.entry import train_unizero
    create_config.policy.type = 'scalezero'        # was: 'unizero'
    create_config.policy.import_names = ['policies.scalezero']
    train_unizero([main_config, create_config], seed=0, max_env_step=int(2e5))

lightzero's own types go to lightzero's entry unchanged; ScaleZero types run as a one-task
:func:`train_scalezero` (lightzero's collector, evaluator, game buffer and C++ MCTS).
"""
from typing import Any, Optional, Sequence

import torch

LIGHTZERO_TYPES = frozenset({"unizero", "sampled_unizero"})
SCALEZERO_TYPES = frozenset({"scalezero", "sampled_scalezero"})


def train_unizero(input_cfg: Sequence[Any], seed: int = 0, model: Optional[torch.nn.Module] = None,
                  model_path: Optional[str] = None, max_train_iter: Optional[int] = int(1e10),
                  max_env_step: Optional[int] = int(1e10)) -> Any:
    """Trains ``input_cfg = (main_config, create_config)`` and returns the policy, as lightzero's entry does."""
    main_config, create_config = input_cfg
    policy_type = create_config.policy.type
    if policy_type in LIGHTZERO_TYPES:
        from lzero.entry import train_unizero as lightzero_train_unizero
        return lightzero_train_unizero(input_cfg, seed=seed, model=model, model_path=model_path,
                                       max_train_iter=max_train_iter, max_env_step=max_env_step)
    if policy_type not in SCALEZERO_TYPES:
        raise ValueError(f"train_unizero runs policy types {sorted(LIGHTZERO_TYPES | SCALEZERO_TYPES)}, "
                         f"got {policy_type!r}")
    if model is not None or model_path is not None:
        raise ValueError("with a ScaleZero policy type, pass neither `model` nor `model_path`: the model is built "
                         "from the config, and a stopped run continues with train_scalezero(..., resume=True)")
    from lzero_ext.entry.train_scalezero import train_scalezero
    return train_scalezero([(main_config, create_config)], seed=seed, max_env_step=max_env_step,
                           max_train_iter=max_train_iter).policy
