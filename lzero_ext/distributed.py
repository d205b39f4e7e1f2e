"""Process-group helpers for multi-task training across ranks (torchrun / DDP without ding).

ding 0.5.3's ``dist_init`` always calls ``torch.cuda.set_device`` (ZeroDivisionError on CPU) and
its ``Policy.sync_gradients`` crashes on ``grad=None`` and divides by the world size. Here:

- :func:`init_distributed` initialises ``torch.distributed`` itself (gloo on CPU, nccl on GPU);
- :func:`split_tasks` gives each rank a contiguous block of tasks;
- :func:`average_gradients` averages each gradient over the ranks that *produced* one, with a
  few bucketed collectives (clip after it, not before).

Every helper also works in a single process without an initialised group.

Every tensor a collective sees lives on the process group's device (CUDA for NCCL, CPU for gloo):
helpers move their tensors there with :meth:`TorchDistributed.to_group_device` and copy results back.
The module's operations go through one object, ``dist`` (a :class:`TorchDistributed`); tests swap in a
:class:`StrictDistributed`, which declares a device (e.g. ``cuda`` on a CPU-only machine) and fails any
collective given a tensor that was not moved to it (see :func:`strict_collectives`).

At world size 1 the gradient average skips its collectives, unless the group was started with
``init_distributed(..., force_collectives=True)`` (a one-GPU check that exercises them).

Example::

    info = init_distributed()  # rank 0 / world 1 unless torchrun set RANK and WORLD_SIZE
    my_tasks = split_tasks(list(range(8)), info.rank, info.world_size)
    loss.backward()
    average_gradients(model.parameters(), info.world_size)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
"""
import contextlib
import datetime
import os
import socket
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as torch_dist

BACKENDS = frozenset({"gloo", "nccl", "mpi"})
DEFAULT_BUCKET_BYTES = 25 * 2**20  # same order as DDP's default bucket_cap_mb


class TorchDistributed:
    """``torch.distributed`` as this module uses it, plus the group's device.

    Attribute access falls through to ``torch.distributed``; :meth:`group_device` and
    :meth:`to_group_device` say where a collective's tensors must live.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(torch_dist, name)

    def group_device(self) -> torch.device:
        """CUDA (the current device) for an NCCL group, else CPU."""
        if torch_dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def to_group_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on the group's device (itself when it is there already)."""
        return tensor.to(self.group_device())


# Collectives that take tensors: the arguments a strict wrapper checks.
TENSOR_COLLECTIVES = frozenset({
    "all_reduce", "broadcast", "reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter",
    "reduce_scatter_tensor", "all_to_all", "all_to_all_single", "gather", "scatter", "send", "recv",
    "isend", "irecv"})


class StrictDistributed(TorchDistributed):
    """A test seam: ``torch.distributed`` whose group declares ``device`` and whose tensor collectives fail
    on any tensor that was not moved there through :meth:`to_group_device`.

    On a CPU-only machine a gloo group can declare ``cuda``: moved tensors stay on the CPU (gloo reduces
    them) but are marked, so code that hands NCCL a CPU tensor fails here as it would on a GPU.

    Example:
        >>> strict = StrictDistributed("cuda")
        >>> strict.group_device()
        device(type='cuda')
        >>> strict.all_reduce(torch.zeros(1))
        Traceback (most recent call last):
        ...
        RuntimeError: all_reduce got a tensor on cpu; the process group's device is cuda
    """

    _MARK = "_strict_group_device"

    def __init__(self, device: str = "cuda") -> None:
        self.device = torch.device(device)

    def group_device(self) -> torch.device:
        return self.device

    def to_group_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type == self.device.type:
            return tensor
        moved = tensor.clone()  # a copy, as a real move would make: results must be copied back
        setattr(moved, self._MARK, True)
        return moved

    def _check(self, name: str, values: Iterable[Any]) -> None:
        for value in values:
            tensors = value if isinstance(value, (list, tuple)) else [value]
            for tensor in tensors:
                if isinstance(tensor, torch.Tensor) and tensor.device.type != self.device.type \
                        and not getattr(tensor, self._MARK, False):
                    raise RuntimeError(f"{name} got a tensor on {tensor.device.type}; "
                                       f"the process group's device is {self.device.type}")

    def __getattr__(self, name: str) -> Any:
        target = getattr(torch_dist, name)
        if name not in TENSOR_COLLECTIVES:
            return target

        def checked(*args: Any, **kwargs: Any) -> Any:
            self._check(name, (*args, *kwargs.values()))
            return target(*args, **kwargs)
        return checked


dist: TorchDistributed = TorchDistributed()  # every operation of this module goes through it
_force_collectives = False  # init_distributed(force_collectives=True): collectives also at world size 1


@contextlib.contextmanager
def strict_collectives(device: str = "cuda") -> Iterator[StrictDistributed]:
    """Within the block, this module's collectives go through a :class:`StrictDistributed` declaring ``device``
    (a test seam: a collective handed a tensor elsewhere raises)."""
    global dist
    saved, dist = dist, StrictDistributed(device)
    try:
        yield dist
    finally:
        dist = saved


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(backend: Optional[str] = None, *, timeout_s: Optional[float] = None,
                     force_collectives: bool = False) -> DistInfo:
    """Initialise ``torch.distributed`` from torchrun's env vars (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT); without RANK/WORLD_SIZE return a single-process ``DistInfo``.

    ``backend`` defaults to nccl when CUDA is available, else gloo. Idempotent: an already
    initialised group is reported as is.

    ``force_collectives``: without torchrun's env vars, start a one-process group on a loopback port,
    and make :func:`average_gradients` run its collectives at world size 1 too, so a single device
    exercises every collective of a run. :func:`cleanup_distributed` ends both.
    """
    global _force_collectives
    if dist.is_available() and dist.is_initialized():
        _force_collectives = _force_collectives or force_collectives
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend(), _default_device(local_rank))
    single = "RANK" not in os.environ or "WORLD_SIZE" not in os.environ
    if single and not force_collectives:
        return DistInfo(0, 1, 0, None, _default_device(0))

    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {sorted(BACKENDS)}")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("backend 'nccl' needs CUDA; use 'gloo' on CPU")
    kwargs: Dict[str, Any] = {}
    if timeout_s is not None:
        kwargs["timeout"] = datetime.timedelta(seconds=timeout_s)
    if single:
        rank, world_size, local_rank = 0, 1, 0
        init_method = f"tcp://127.0.0.1:{_free_port()}"
    else:
        missing = [key for key in ("MASTER_ADDR", "MASTER_PORT") if key not in os.environ]
        if missing:
            raise ValueError(f"RANK/WORLD_SIZE are set but {', '.join(missing)} is not (launch with torchrun)")
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        init_method = "env://"
    device = _default_device(local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size, **kwargs)
    _force_collectives = force_collectives
    return DistInfo(rank, world_size, local_rank, backend, device)


def cleanup_distributed() -> None:
    """Destroy the process group if one is initialised (and stop forcing collectives)."""
    global _force_collectives
    _force_collectives = False
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
    tensor = dist.to_group_device(torch.tensor([float(value)], dtype=torch.float64))
    dist.all_reduce(tensor, op=getattr(dist.ReduceOp, _REDUCE_OPS[op]))
    return tensor.item()  # a host read on purpose: the caller decides with it


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers into ``module`` on every rank (no-op in a single process).
    Tensors off the group's device travel through a copy on it."""
    if _initialized():
        for tensor in module.state_dict().values():
            moved = dist.to_group_device(tensor)
            dist.broadcast(moved, src=src)
            if moved is not tensor:
                tensor.copy_(moved)


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
    force: Optional[bool] = None,
) -> int:
    """Average ``.grad`` of every ``requires_grad`` parameter over the ranks that have one.

    ``grad=None`` on a rank means "this rank did not use the parameter" (other tasks' heads,
    unused experts, frozen adapters): it is left out of that parameter's mean instead of
    counting as a zero. One all_reduce of a presence count (one float per parameter), then one
    all_reduce per gradient bucket (missing gradients contribute zeros), then sum / count.
    A parameter with a gradient on any rank ends with the same averaged gradient on all ranks
    (assigned where it was None), so all ranks take identical optimizer steps; one with no
    gradient anywhere keeps ``grad=None``. Call it on every rank, with parameters in the same
    order. No-op without a process group, and with world size 1 unless ``force`` (default: the
    group's ``force_collectives``). Tensors reach the collectives on the group's device.

    Returns the number of collectives issued.
    """
    params = [p for p in parameters if p.requires_grad]
    if not _initialized() or not params:
        return 0
    actual = dist.get_world_size()
    if world_size is not None and world_size != actual:
        raise ValueError(f"world_size {world_size} does not match the process group's {actual}")
    if actual == 1 and not (_force_collectives if force is None else force):
        return 0
    if any(p.grad is not None and p.grad.is_sparse for p in params):
        raise NotImplementedError("sparse gradients are not supported")

    # presence[i] = number of ranks holding a gradient for params[i]
    presence = dist.to_group_device(torch.tensor([float(p.grad is not None) for p in params]))
    dist.all_reduce(presence)
    collectives = 1
    counts = {id(p): c for p, c in zip(params, presence.tolist())}  # one host read per learn step
    active = [p for p in params if counts[id(p)] > 0]

    for bucket in _buckets(active, bucket_bytes):
        flat = torch.cat([
            p.grad.detach().reshape(-1) if p.grad is not None else p.new_zeros(p.numel())
            for p in bucket
        ])  # (sum of numels,)
        flat = dist.to_group_device(flat)
        dist.all_reduce(flat)
        collectives += 1
        offset = 0
        for p in bucket:
            mean = flat[offset:offset + p.numel()].view_as(p).to(p.device) / counts[id(p)]
            offset += p.numel()
            if p.grad is None:
                p.grad = mean.clone()
            else:
                p.grad.copy_(mean)
    return collectives
