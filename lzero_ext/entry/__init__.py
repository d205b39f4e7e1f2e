"""Training entries: :func:`train_scalezero` (multi-task, one process or torchrun DDP)."""
from lzero_ext.entry.configs import TaskConfigError, validate_task_configs  # noqa: F401
from lzero_ext.entry.train_scalezero import TrainResult, train_scalezero  # noqa: F401
