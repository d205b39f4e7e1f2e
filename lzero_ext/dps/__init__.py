"""Dynamic Parameter Scaling (DPS, docs/dps.md): staged LoRA adapters on the world-model
transformer (``lora``) and the curriculum controller that decides when to add the next one
(``controller``, pure Python).

Typical use in a training loop::

    preset = dps_preset('atari')
    apply_staged_lora(model, **{k: preset[k] for k in LORA_KEYS})   # before building the optimizer
    controller = DPSController.from_preset('atari', task_names)
    ...
    new_stage = controller.update(train_iter, eval_returns)        # same gathered returns on every rank
    if new_stage is not None:
        set_dps_stage(model, new_stage)
"""
from lzero_ext.dps.controller import (  # noqa: F401
    ATARI_DPS_TARGETS, CONTROLLER_KEYS, DMC_DPS_TARGETS, DPS_PRESETS, DPS_SUITES, DPS_TARGETS, LORA_KEYS,
    DPS_CONFIG, DPSController, controller_from_config, dps_preset, resolve_dps_config, resolve_targets,
)
from lzero_ext.dps.lora import (  # noqa: F401
    LORA_PREFIX, LORA_TARGETS, SCALE_MAX, SCALE_MIN, StagedLoRALinear, adapter_scales, apply_staged_lora,
    clamp_adapter_scales_, find_transformer, get_dps_stage, is_lora_name, lora_parameters, lora_state_dict,
    merge_lora, set_dps_stage, staged_lora_layers, trainable_parameter_count, unmerge_lora,
)
