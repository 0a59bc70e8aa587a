"""The scripts beside the package (benchmarks/, docs/, tools/) import only what segnet has: a module
moved or renamed in src/ breaks them without any test running them at full length."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(path for folder in ("benchmarks", "docs", "tools") for path in (ROOT / folder).glob("*.py"))


def segnet_imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) for each ``from segnet... import name`` and (module, None) for each ``import segnet...``."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "segnet":
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == "segnet"]
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_a_script_imports_only_what_segnet_has(script: Path) -> None:
    for module_name, name in segnet_imports(script):
        module = importlib.import_module(module_name)
        if name is not None:
            assert hasattr(module, name) or importlib.util.find_spec(f"{module_name}.{name}"), (
                f"{script.name}: {module_name} has no {name}"
            )


def test_the_scripts_are_found() -> None:
    assert {"peers.py", "napari_screenshot.py", "import_layers.py"} <= {path.name for path in SCRIPTS}
