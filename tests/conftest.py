"""Shared test set-up: quiet, deterministic, CPU-only."""
import os

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests never need a GPU
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed_everything():
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
