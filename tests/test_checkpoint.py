"""lzero_ext.checkpoint: atomic saves, latest resolution, pruning, clear load errors, RNG state."""
import json
import pickle
import random

import numpy as np
import pytest
import torch

from lzero_ext.checkpoint import (
    FORMAT_VERSION, CheckpointError, capture_rng_state, load_checkpoint, resolve_checkpoint, restore_rng_state,
    save_checkpoint,
)


def _state(step: int) -> dict:
    torch.manual_seed(step)
    return {"model": torch.nn.Linear(3, 2).state_dict(), "iteration": step, "per_task": {0: {"env_steps": step}}}


def test_roundtrip(tmp_path):
    state = _state(7)
    path = save_checkpoint(tmp_path / "ckpt" / "iteration_7.pth.tar", state)
    loaded = load_checkpoint(path, required_keys=("model", "iteration"))
    assert loaded["format_version"] == FORMAT_VERSION and "format_version" not in state
    assert loaded["iteration"] == 7 and loaded["per_task"] == {0: {"env_steps": 7}}
    for key, value in state["model"].items():
        assert torch.equal(loaded["model"][key], value)


class _Unpicklable:
    def __reduce__(self):
        raise pickle.PicklingError("refuse to pickle")


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    good = save_checkpoint(tmp_path / "iteration_1.pth.tar", _state(1))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(pickle.PicklingError):
        save_checkpoint(tmp_path / "iteration_1.pth.tar", {**_state(2), "bad": _Unpicklable()})
    with pytest.raises(pickle.PicklingError):
        save_checkpoint(tmp_path / "iteration_2.pth.tar", {**_state(2), "bad": _Unpicklable()})
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temp or partial file left
    assert load_checkpoint(good)["iteration"] == 1
    assert load_checkpoint(tmp_path)["iteration"] == 1  # latest still points at the good one


def test_latest_resolution_and_pruning(tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt).mkdir()
    (ckpt / "best.pth.tar").write_bytes(b"not ours")  # never pruned
    for step in (1, 2, 3, 4):
        save_checkpoint(ckpt / f"iteration_{step}.pth.tar", _state(step), keep_last=2)
    save_checkpoint(ckpt / "eval_only.pth.tar", _state(99), update_latest=False)
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "best.pth.tar", "eval_only.pth.tar", "iteration_3.pth.tar", "iteration_4.pth.tar", "latest.json",
    ]
    assert json.loads((ckpt / "latest.json").read_text())["checkpoint"] == "iteration_4.pth.tar"
    assert resolve_checkpoint(tmp_path) == ckpt / "iteration_4.pth.tar"  # experiment dir -> ckpt/
    assert load_checkpoint(tmp_path)["iteration"] == 4
    assert load_checkpoint(ckpt)["iteration"] == 4


def test_missing_file_and_dir(tmp_path):
    with pytest.raises(CheckpointError, match="not found: .*nope.pth.tar"):
        load_checkpoint(tmp_path / "nope.pth.tar")
    with pytest.raises(CheckpointError, match="no latest.json"):
        load_checkpoint(tmp_path)
    (tmp_path / "latest.json").write_text("{trunc")
    with pytest.raises(CheckpointError, match="unreadable checkpoint pointer"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_raises_checkpoint_error(tmp_path, damage):
    path = save_checkpoint(tmp_path / "iteration_5.pth.tar", _state(5))
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x80\x04junk" * 50, "empty": b""}[damage])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert err.value.__cause__ is None  # no chained pickle/zip traceback
    assert err.value.__context__ is None or err.value.__suppress_context__


def test_missing_keys(tmp_path):
    path = tmp_path / "foreign.pth.tar"
    torch.save({"model": {}}, path)  # not written by save_checkpoint: no format_version
    with pytest.raises(CheckpointError, match="lacks required keys: format_version, optimizer"):
        load_checkpoint(path, required_keys=("model", "optimizer"))
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(path)


def _draw():
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()


def test_rng_roundtrip(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_checkpoint(tmp_path / "rng.pth.tar", {"rng": capture_rng_state()})
    expected = _draw()
    assert _draw() != expected  # the streams moved on
    restore_rng_state(load_checkpoint(tmp_path)["rng"])
    assert _draw() == expected
