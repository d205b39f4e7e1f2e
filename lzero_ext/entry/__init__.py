"""Training entries: :func:`train_scalezero` (multi-task, one process or torchrun DDP) and
:func:`train_unizero` (lightzero's single-task signature, also for ScaleZero policy types)."""
from lzero_ext.entry.configs import TaskConfigError, validate_task_configs  # noqa: F401
from lzero_ext.entry.train_scalezero import TrainResult, train_scalezero  # noqa: F401
from lzero_ext.entry.unizero_compat import train_unizero  # noqa: F401
