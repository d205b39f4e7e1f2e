"""Training entries: :func:`train_scalezero` (multi-task, one process or torchrun DDP) and
:func:`train_unizero` (lightzero's single-task signature, also for ScaleZero policy types);
:func:`config_from_main` gets the config of a lightzero zoo config that builds it inside ``main()``."""
from lzero_ext.entry.configs import TaskConfigError, validate_task_configs  # noqa: F401
from lzero_ext.entry.lightzero_configs import config_from_main  # noqa: F401
from lzero_ext.entry.train_scalezero import TrainResult, train_scalezero  # noqa: F401
from lzero_ext.entry.unizero_compat import train_unizero  # noqa: F401
