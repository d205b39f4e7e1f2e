"""Every ``docs/upstream/*.patch`` applies to the LightZero main snapshot, and its LightZero-style test passes against
the patched snapshot's module (loaded over the installed lightzero 0.2.0, see docs/upstream/README.md)."""
import importlib.util
import py_compile
import shutil
import subprocess
import sys
import tarfile
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

import pytest
import torch
from torch import nn

import lzero_ext  # noqa: F401
import policies  # noqa: F401  (registers scalezero, sampled_scalezero)

REPO = Path(__file__).resolve().parents[1]
PATCHES = sorted((REPO / "docs" / "upstream").glob("*.patch"))
SNAPSHOT = "LightZero-main-9f717c80"
TARBALL_DIRS = [REPO / "shared" / "upstream", REPO.parent / "shared" / "upstream"]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    """LightZero main, extracted once per module."""
    tarball = next((d / f"{SNAPSHOT}.tar.gz" for d in TARBALL_DIRS if (d / f"{SNAPSHOT}.tar.gz").is_file()), None)
    if tarball is None:
        pytest.skip(f"{SNAPSHOT}.tar.gz not found in {[str(d) for d in TARBALL_DIRS]}")
    if shutil.which("git") is None:
        pytest.skip("git is needed to apply the patches")
    root = tmp_path_factory.mktemp("lightzero_main")
    with tarfile.open(tarball) as archive:
        archive.extractall(root, filter="data")
    return root / SNAPSHOT


def _patched(snapshot: Path, tmp_path: Path, patches: List[Path]) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(snapshot, tree)
    for patch in patches:
        for args in (["--check"], []):
            done = subprocess.run(["git", "apply", *args, str(patch)], cwd=tree, capture_output=True, text=True)
            assert done.returncode == 0, f"{patch.name} does not apply to LightZero main: {done.stderr}"
    return tree


def _changed_python_files(patch: Path) -> List[str]:
    return [line[len("+++ b/"):] for line in patch.read_text().splitlines()
            if line.startswith("+++ b/") and line.endswith(".py")]


def test_there_are_patches():
    assert {p.name for p in PATCHES} >= {"lightzero-unizero-capability.patch", "lightzero-moe-router.patch",
                                         "lightzero-segment-collector-action-mask.patch"}


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.stem)
def test_patch_applies_to_lightzero_main_and_compiles(patch, snapshot, tmp_path):
    tree = _patched(snapshot, tmp_path, [patch])
    files = _changed_python_files(patch)
    assert files
    for name in files:
        py_compile.compile(str(tree / name), doraise=True)


def test_all_patches_apply_together(snapshot, tmp_path):
    _patched(snapshot, tmp_path, PATCHES)


# ---------------------------------------------------------------------- the patches' own tests
def _load(monkeypatch, name: str, path: Path) -> types.ModuleType:
    """``path`` imported as module ``name`` (restored in sys.modules after the test)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def _run_unittest_class(module: types.ModuleType, class_name: str) -> List[str]:
    """Runs every ``test_*`` method of a LightZero-style ``@pytest.mark.unittest`` test class; returns their names."""
    cls = getattr(module, class_name)
    assert any(mark.name == "unittest" for mark in getattr(cls, "pytestmark", [])), f"{class_name} is not a unittest"
    names = [name for name in dir(cls) if name.startswith("test_")]
    for name in names:
        getattr(cls(), name)()
    return names


def _stub_simple_parsing(monkeypatch) -> None:
    """moe.py imports simple_parsing for ``MoeArgs``' base class only; it is not in this project's stack."""
    helpers = types.ModuleType("simple_parsing.helpers")
    helpers.Serializable = object
    package = types.ModuleType("simple_parsing")
    package.helpers = helpers
    monkeypatch.setitem(sys.modules, "simple_parsing", package)
    monkeypatch.setitem(sys.modules, "simple_parsing.helpers", helpers)


def _load_moe(monkeypatch, tree: Path) -> types.ModuleType:
    import lzero.model.unizero_world_models  # noqa: F401  (the installed package hosts the snapshot's modules)

    _stub_simple_parsing(monkeypatch)
    models = tree / "lzero" / "model" / "unizero_world_models"
    _load(monkeypatch, "lzero.model.unizero_world_models.transformer", models / "transformer.py")
    return _load(monkeypatch, "lzero.model.unizero_world_models.moe", models / "moe.py")


def _patch(name: str) -> Path:
    return REPO / "docs" / "upstream" / name


def test_capability_patch_test_passes(snapshot, tmp_path, monkeypatch):
    tree = _patched(snapshot, tmp_path, [_patch("lightzero-unizero-capability.patch")])
    capability = _load(monkeypatch, "lzero.policy.capability", tree / "lzero" / "policy" / "capability.py")
    tests = _load(monkeypatch, "upstream_test_capability", tree / "lzero" / "policy" / "tests" / "test_capability.py")
    assert len(_run_unittest_class(tests, "TestPolicyCapability")) == 3
    # ScaleZero's registered policies are what the patched checks let through
    assert capability.is_unizero_policy("scalezero") and capability.is_unizero_policy("sampled_scalezero")
    assert capability.policy_base_type("sampled_scalezero", ["unizero_ppo", "sampled_unizero", "unizero"]) == \
        "sampled_unizero"


def test_moe_router_patch_test_passes(snapshot, tmp_path, monkeypatch):
    tree = _patched(snapshot, tmp_path, [_patch("lightzero-moe-router.patch")])
    _load_moe(monkeypatch, tree)
    tests = _load(monkeypatch, "upstream_test_moe_router", tree / "lzero" / "model" / "tests" / "test_moe_router.py")
    assert "test_top1_router_gets_a_gradient" in _run_unittest_class(tests, "TestMoERouter")


def _top1_router_gradient(moe: types.ModuleType) -> float:
    torch.manual_seed(0)
    config = SimpleNamespace(embed_dim=8, moe_use_lora=False, n_shared_experts=0)
    layer = moe.MoELayer(config, [nn.Linear(8, 8) for _ in range(4)], nn.Linear(8, 4, bias=False), num_experts_per_tok=1)
    layer(torch.randn(2, 6, 8)).pow(2).sum().backward()
    return 0.0 if layer.gate.weight.grad is None else float(layer.gate.weight.grad.abs().sum())


def test_moe_router_gets_a_gradient_at_top1_only_with_the_patch(snapshot, tmp_path, monkeypatch):
    unpatched = _load_moe(monkeypatch, snapshot)
    assert _top1_router_gradient(unpatched) == 0.0  # upstream: softmax over the one chosen logit is 1
    patched = _load_moe(monkeypatch, _patched(snapshot, tmp_path, [_patch("lightzero-moe-router.patch")]))
    assert _top1_router_gradient(patched) > 0.0


def test_segment_collector_action_mask_patch_test_passes(snapshot, tmp_path, monkeypatch):
    from ding.utils import SERIAL_COLLECTOR_REGISTRY

    tree = _patched(snapshot, tmp_path, [_patch("lightzero-segment-collector-action-mask.patch")])
    # the snapshot's collector registers the name lightzero 0.2.0's already holds: free it for this test
    registered: Dict[str, type] = {"segment_muzero": SERIAL_COLLECTOR_REGISTRY.pop("segment_muzero")}
    try:
        _load(monkeypatch, "lzero.worker.muzero_segment_collector", tree / "lzero" / "worker" / "muzero_segment_collector.py")
        tests = _load(monkeypatch, "upstream_test_collector_action_mask",
                      tree / "lzero" / "worker" / "tests" / "test_muzero_segment_collector_action_mask.py")
        assert len(_run_unittest_class(tests, "TestSegmentCollectorActionMask")) == 2
    finally:
        SERIAL_COLLECTOR_REGISTRY.pop("segment_muzero", None)
        SERIAL_COLLECTOR_REGISTRY.update(registered)
