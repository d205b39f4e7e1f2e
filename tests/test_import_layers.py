"""Imports run one way: model <- dps <- policies <- entry <- zoo, and ``lzero_ext`` never imports ``policies``
at package level."""
import ast
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, at module level or inside a function."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


@pytest.mark.parametrize("package, allowed", [
    ("lzero_ext/model", ("lzero_ext.model",)),
    ("lzero_ext/dps", ("lzero_ext.dps", "lzero_ext.model")),
])
def test_lower_layers_import_nothing_above_them(package, allowed):
    project = ("lzero_ext", "policies", "zoo")
    for path in sorted((REPO / package).glob("*.py")):
        for module in imported_modules(path):
            if module.split(".")[0] in project:
                assert module.startswith(allowed), f"{path.relative_to(REPO)} imports {module}"


def test_policies_import_nothing_of_the_training_entry_or_zoo():
    above = ("lzero_ext.entry", "lzero_ext.bench", "lzero_ext.evaluate", "lzero_ext.registry", "zoo")
    for path in sorted((REPO / "policies").glob("*.py")):
        for module in imported_modules(path):
            assert not module.startswith(above), f"{path.relative_to(REPO)} imports {module}"


def test_package_inits_do_not_import_each_other():
    assert not [m for m in imported_modules(REPO / "lzero_ext" / "__init__.py") if m.split(".")[0] == "policies"]
    code = "import sys, lzero_ext; print(sorted(m for m in sys.modules if m.split('.')[0] in ('policies', 'zoo')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"  # importing lzero_ext loads neither the policies nor a zoo config


def test_policies_import_first_in_a_fresh_interpreter():
    code = ("import policies.scalezero; from lzero_ext.registry import REGISTERED, registered_names; "
            "assert registered_names() == REGISTERED, registered_names()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # and quietly: lightzero's import banners are captured
