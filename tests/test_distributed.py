"""lzero_ext.distributed: task splitting, and gradient averaging over a real 2-rank gloo group.

The 2-rank cases start this file as two worker processes (RANK/WORLD_SIZE/MASTER_* env vars as
torchrun sets them, loopback only); each writes its results to JSON and the tests read them. The
workers run under ``strict_collectives('cuda')``: a collective handed a tensor that is not on the
group's declared device (CUDA, as under NCCL) fails them.
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lzero_ext.distributed as distributed
from lzero_ext.distributed import (
    DistInfo, StrictDistributed, all_gather_object, all_reduce_scalar, average_gradients, broadcast_module,
    broadcast_object, cleanup_distributed, init_distributed, is_main_process, split_tasks, strict_collectives,
)

WORLD = 2
NUM_MANY = 40  # small parameters, to show the collective count does not grow with their number


def _worker(out_dir: str) -> None:
    with strict_collectives("cuda"):
        _strict_worker(out_dir)


def _strict_worker(out_dir: str) -> None:
    info = init_distributed(timeout_s=30)
    rank = info.rank
    results = {"info": [info.rank, info.world_size, info.backend, str(info.device)]}

    both = torch.nn.Parameter(torch.zeros(3))  # grad on both ranks: 1 and 3 -> mean 2
    only1 = torch.nn.Parameter(torch.zeros(2, 2))  # grad only on rank 1: 5 -> 5 on both
    unused = torch.nn.Parameter(torch.zeros(4))  # grad nowhere -> None on both
    frozen = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
    double = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))  # other dtype -> other bucket
    many = [torch.nn.Parameter(torch.zeros(5)) for _ in range(NUM_MANY)]
    both.grad = torch.full((3,), 1.0 + 2 * rank)
    if rank == 1:
        only1.grad = torch.full((2, 2), 5.0)
    frozen.grad = torch.full((2,), float(rank))  # must be left alone
    double.grad = torch.full((2,), 10.0 * (rank + 1), dtype=torch.float64)
    for i, p in enumerate(many):
        if rank == 0 or i % 2 == 0:  # odd ones only on rank 0
            p.grad = torch.full((5,), float(i + 100 * rank))
    params = [both, only1, unused, frozen, double, *many]
    results["collectives"] = average_gradients(params, info.world_size)
    results["both"] = both.grad.tolist()
    results["only1"] = only1.grad.tolist()
    results["unused_is_none"] = unused.grad is None
    results["frozen"] = frozen.grad.tolist()
    results["double"] = double.grad.tolist()
    results["many"] = [p.grad.tolist() for p in many]

    # Tiny buckets: one bucket per parameter, same result.
    small = [torch.nn.Parameter(torch.zeros(3)) for _ in range(3)]
    small[0].grad = torch.full((3,), 2.0 * (rank + 1))
    if rank == 0:
        small[2].grad = torch.full((3,), 7.0)
    results["small_collectives"] = average_gradients(small, bucket_bytes=4)
    results["small"] = [None if p.grad is None else p.grad.tolist() for p in small]

    # A real module: rank-specific data through the same weights.
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    net(torch.full((1, 3), float(rank + 1))).sum().backward()
    average_gradients(net.parameters())
    results["linear_weight"] = net.weight.grad.tolist()

    results["sum"] = all_reduce_scalar(rank + 1.0)
    results["max"] = all_reduce_scalar(float(rank), "max")
    module = torch.nn.Linear(2, 1)
    torch.nn.init.constant_(module.weight, float(rank))
    broadcast_module(module, src=1)
    results["broadcast_module"] = module.weight.tolist()

    results["broadcast"] = broadcast_object({"from": rank}, src=1)
    results["gathered"] = all_gather_object(rank * 10)
    results["is_main"] = is_main_process()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = {
            **os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo",
            "CUDA_VISIBLE_DEVICES": "",
        }
        procs.append(subprocess.Popen([sys.executable, __file__, str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=60)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, (proc, log) in enumerate(zip(procs, logs)):
        assert proc.returncode == 0, f"rank {rank} failed:\n{log[-3000:]}"
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(WORLD)]


def test_init_from_env(two_ranks):
    assert [r["info"] for r in two_ranks] == [[0, 2, "gloo", "cpu"], [1, 2, "gloo", "cpu"]]
    assert [r["is_main"] for r in two_ranks] == [True, False]


def test_grad_on_both_ranks_is_mean(two_ranks):
    for r in two_ranks:
        assert r["both"] == [2.0, 2.0, 2.0]
        assert r["double"] == [15.0, 15.0]
        assert r["linear_weight"] == [[1.5, 1.5, 1.5], [1.5, 1.5, 1.5]]  # d(sum)/dW = mean input


def test_grad_on_one_rank_is_not_halved(two_ranks):
    for r in two_ranks:
        assert r["only1"] == [[5.0, 5.0], [5.0, 5.0]]
        for i, grad in enumerate(r["many"]):
            expected = (i + (i + 100)) / 2 if i % 2 == 0 else float(i)
            assert grad == [expected] * 5, i


def test_no_grad_anywhere_stays_none_and_frozen_untouched(two_ranks):
    for rank, r in enumerate(two_ranks):
        assert r["unused_is_none"]
        assert r["frozen"] == [float(rank)] * 2
        assert r["small"][1] is None


def test_few_collectives(two_ranks):
    # presence vector + one float32 bucket + one float64 bucket, for 40+ parameters
    assert all(r["collectives"] == 3 for r in two_ranks)
    # bucket_bytes=4: one bucket per parameter with a gradient somewhere (2) + presence
    for r in two_ranks:
        assert r["small_collectives"] == 3
        assert r["small"][0] == [3.0] * 3 and r["small"][2] == [7.0] * 3


def test_object_helpers(two_ranks):
    assert all(r["broadcast"] == {"from": 1} for r in two_ranks)
    assert all(r["gathered"] == [0, 10] for r in two_ranks)


def test_scalars_and_module_broadcast_on_a_strict_cuda_group(two_ranks):
    for r in two_ranks:
        assert r["sum"] == 3.0 and r["max"] == 1.0
        assert r["broadcast_module"] == [[1.0, 1.0]]


# ------------------------------------------------------------------ device-strict collectives, one process
@pytest.fixture
def one_rank_gloo(monkeypatch):
    """A real one-process gloo group, as torchrun would start it, destroyed afterwards."""
    port = _free_port()
    for key, value in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(port)).items():
        monkeypatch.setenv(key, value)
    torch.distributed.init_process_group("gloo", init_method="env://", rank=0, world_size=1)
    yield
    cleanup_distributed()


@pytest.fixture
def strict_cuda(monkeypatch) -> StrictDistributed:
    """This module's collectives through a wrapper whose group declares device ``cuda``."""
    strict = StrictDistributed("cuda")
    monkeypatch.setattr(distributed, "dist", strict)
    return strict


def test_strict_wrapper_fails_a_cpu_tensor_in_all_reduce_and_broadcast(strict_cuda):
    with pytest.raises(RuntimeError, match="all_reduce got a tensor on cpu; the process group's device is cuda"):
        strict_cuda.all_reduce(torch.ones(2))
    with pytest.raises(RuntimeError, match="broadcast got a tensor on cpu"):
        strict_cuda.broadcast(torch.ones(2), src=0)
    with pytest.raises(RuntimeError, match="all_gather got a tensor on cpu"):
        strict_cuda.all_gather([torch.ones(1)], torch.ones(1))
    assert strict_cuda.group_device() == torch.device("cuda")


def test_all_reduce_scalar_hands_the_collective_a_tensor_on_the_group_device(one_rank_gloo, strict_cuda):
    # A CPU tensor in dist.all_reduce fails under NCCL ("No backend type associated with device type cpu").
    assert all_reduce_scalar(2.5) == 2.5
    assert all_reduce_scalar(1.0, "min") == 1.0


def test_broadcast_module_copies_back_from_the_group_device(one_rank_gloo, strict_cuda):
    module = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    broadcast_module(module)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_average_gradients_runs_its_collectives_at_world_size_1_only_when_forced(one_rank_gloo, strict_cuda):
    used, unused = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    used.grad = torch.tensor([1.0, 2.0, 3.0])
    assert average_gradients([used, unused], 1) == 0
    assert average_gradients([used, unused], 1, force=True) == 2  # presence + one bucket, device-strict
    assert used.grad.tolist() == [1.0, 2.0, 3.0] and used.grad.device.type == "cpu" and unused.grad is None


def test_init_distributed_force_collectives_starts_a_one_process_group(monkeypatch, strict_cuda):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    info = init_distributed("gloo", force_collectives=True)
    try:
        assert (info.rank, info.world_size, info.backend) == (0, 1, "gloo")
        p = torch.nn.Parameter(torch.zeros(2))
        p.grad = torch.ones(2)
        assert average_gradients([p]) == 2 and p.grad.tolist() == [1.0, 1.0]
        assert all_reduce_scalar(4.0, "max") == 4.0
    finally:
        cleanup_distributed()
    assert not torch.distributed.is_initialized()
    p.grad = torch.ones(2)
    assert average_gradients([p]) == 0  # no group: nothing forced any more


def test_single_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed()
    assert isinstance(info, DistInfo) and (info.rank, info.world_size, info.backend) == (0, 1, None)
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.ones(2)
    assert average_gradients([p], 1) == 0 and p.grad.tolist() == [1.0, 1.0]
    assert broadcast_object("x") == "x" and all_gather_object(3) == [3] and is_main_process()


def test_split_tasks_blocks():
    tasks = list(range(8))
    assert [split_tasks(tasks, r, 3) for r in range(3)] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert [split_tasks(tasks, r, 8) for r in range(8)] == [[t] for t in tasks]
    assert split_tasks([10, 11, 12], 0, 1) == [10, 11, 12]
    blocks = [split_tasks(list(range(26)), r, 4) for r in range(4)]
    assert sum(blocks, []) == list(range(26)) and [len(b) for b in blocks] == [7, 7, 6, 6]


def test_split_tasks_more_ranks_than_tasks():
    with pytest.raises(ValueError, match="4 ranks but only 3 tasks"):
        split_tasks([0, 1, 2], 0, 4)
    with pytest.raises(ValueError, match="invalid rank"):
        split_tasks([0, 1, 2], 3, 3)


if __name__ == "__main__":
    _worker(sys.argv[1])
