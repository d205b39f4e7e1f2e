"""Process-group helpers for multi-task training across ranks (torchrun / DDP without ding).

ding 0.5.3's ``dist_init`` always calls ``torch.cuda.set_device`` (ZeroDivisionError on CPU) and
its ``Policy.sync_gradients`` crashes on ``grad=None`` and divides by the world size. Here:

- :func:`init_distributed` initialises ``torch.distributed`` itself (gloo on CPU, nccl on GPU);
- :func:`split_tasks` gives each rank a contiguous block of tasks;
- :func:`average_gradients` averages each gradient over the ranks that *produced* one, with a
  few bucketed collectives (clip after it, not before).

Every helper also works in a single process without an initialised group.

Example::

    info = init_distributed()  # rank 0 / world 1 unless torchrun set RANK and WORLD_SIZE
    my_tasks = split_tasks(list(range(8)), info.rank, info.world_size)
    loss.backward()
    average_gradients(model.parameters(), info.world_size)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
"""
import datetime
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

BACKENDS = frozenset({"gloo", "nccl", "mpi"})
DEFAULT_BUCKET_BYTES = 25 * 2**20  # same order as DDP's default bucket_cap_mb


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    backend: Optional[str]  # None: single process, no process group
    device: torch.device


def _default_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(backend: Optional[str] = None, *, timeout_s: Optional[float] = None) -> DistInfo:
    """Initialise ``torch.distributed`` from torchrun's env vars (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT); without RANK/WORLD_SIZE return a single-process ``DistInfo``.

    ``backend`` defaults to nccl when CUDA is available, else gloo. Idempotent: an already
    initialised group is reported as is.
    """
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend(), _default_device(local_rank))
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo(0, 1, 0, None, _default_device(0))

    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {sorted(BACKENDS)}")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("backend 'nccl' needs CUDA; use 'gloo' on CPU")
    missing = [key for key in ("MASTER_ADDR", "MASTER_PORT") if key not in os.environ]
    if missing:
        raise ValueError(f"RANK/WORLD_SIZE are set but {', '.join(missing)} is not (launch with torchrun)")

    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = _default_device(local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs: Dict[str, Any] = {}
    if timeout_s is not None:
        kwargs["timeout"] = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size, **kwargs)
    return DistInfo(rank, world_size, local_rank, backend, device)


def cleanup_distributed() -> None:
    """Destroy the process group if one is initialised."""
    if _initialized():
        dist.destroy_process_group()


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if _initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if _initialized() else 1


def is_main_process() -> bool:
    """True on rank 0, and in a single process."""
    return get_rank() == 0


def barrier() -> None:
    """Synchronise all ranks (no-op in a single process)."""
    if _initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Return ``src``'s ``obj`` on every rank (picklable objects)."""
    if not _initialized():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


_REDUCE_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}


def all_reduce_scalar(value: float, op: str = "sum") -> float:
    """``value`` reduced over all ranks with ``op`` in {'sum', 'max', 'min'} (itself in a single process)."""
    if op not in _REDUCE_OPS:
        raise ValueError(f"op must be one of {sorted(_REDUCE_OPS)}, got {op!r}")
    if not _initialized():
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(tensor, op=getattr(dist.ReduceOp, _REDUCE_OPS[op]))
    return tensor.item()


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers into ``module`` on every rank (no-op in a single process)."""
    if _initialized():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=src)


def all_gather_object(obj: Any) -> List[Any]:
    """Return ``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not _initialized():
        return [obj]
    gathered: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def split_tasks(task_ids: Sequence[int], rank: int, world_size: int) -> List[int]:
    """The contiguous block of ``task_ids`` for ``rank``; block sizes differ by at most one
    (the first ``len % world_size`` ranks get one more). Every rank needs at least one task.
    """
    num_tasks = len(task_ids)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid rank {rank} for world_size {world_size}")
    if world_size > num_tasks:
        raise ValueError(
            f"{world_size} ranks but only {num_tasks} tasks: every rank needs at least one task; "
            f"launch at most {num_tasks} processes"
        )
    base, extra = divmod(num_tasks, world_size)
    start = rank * base + min(rank, extra)
    return list(task_ids[start:start + base + (1 if rank < extra else 0)])


def _buckets(params: List[torch.nn.Parameter], bucket_bytes: int) -> List[List[torch.nn.Parameter]]:
    """Group parameters by (dtype, device), then cut each group into buckets of ~bucket_bytes."""
    groups: Dict[Tuple[torch.dtype, torch.device], List[torch.nn.Parameter]] = {}
    for p in params:
        groups.setdefault((p.dtype, p.device), []).append(p)
    buckets: List[List[torch.nn.Parameter]] = []
    for group in groups.values():
        current: List[torch.nn.Parameter] = []
        size = 0
        for p in group:
            nbytes = p.numel() * p.element_size()
            if current and size + nbytes > bucket_bytes:
                buckets.append(current)
                current, size = [], 0
            current.append(p)
            size += nbytes
        if current:
            buckets.append(current)
    return buckets


def average_gradients(
    parameters: Iterable[torch.nn.Parameter],
    world_size: Optional[int] = None,
    *,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
) -> int:
    """Average ``.grad`` of every ``requires_grad`` parameter over the ranks that have one.

    ``grad=None`` on a rank means "this rank did not use the parameter" (other tasks' heads,
    unused experts, frozen adapters): it is left out of that parameter's mean instead of
    counting as a zero. One all_reduce of a presence count (one float per parameter), then one
    all_reduce per gradient bucket (missing gradients contribute zeros), then sum / count.
    A parameter with a gradient on any rank ends with the same averaged gradient on all ranks
    (assigned where it was None), so all ranks take identical optimizer steps; one with no
    gradient anywhere keeps ``grad=None``. Call it on every rank, with parameters in the same
    order. No-op without a process group or with world size 1.

    Returns the number of collectives issued.
    """
    params = [p for p in parameters if p.requires_grad]
    if not _initialized() or not params:
        return 0
    actual = dist.get_world_size()
    if world_size is not None and world_size != actual:
        raise ValueError(f"world_size {world_size} does not match the process group's {actual}")
    if actual == 1:
        return 0
    if any(p.grad is not None and p.grad.is_sparse for p in params):
        raise NotImplementedError("sparse gradients are not supported")

    # presence[i] = number of ranks holding a gradient for params[i]
    presence = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
    dist.all_reduce(presence)
    collectives = 1
    counts = {id(p): c for p, c in zip(params, presence.tolist())}
    active = [p for p in params if counts[id(p)] > 0]

    for bucket in _buckets(active, bucket_bytes):
        flat = torch.cat([
            p.grad.detach().reshape(-1) if p.grad is not None else p.new_zeros(p.numel())
            for p in bucket
        ])  # (sum of numels,)
        dist.all_reduce(flat)
        collectives += 1
        offset = 0
        for p in bucket:
            mean = flat[offset:offset + p.numel()].view_as(p) / counts[id(p)]
            offset += p.numel()
            if p.grad is None:
                p.grad = mean.clone()
            else:
                p.grad.copy_(mean)
    return collectives
