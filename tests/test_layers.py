"""The package's stages import only the stages below them ([tool.importlinter] in pyproject.toml), without cycles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(source_root: Path) -> subprocess.CompletedProcess:
    """lint-imports with the project's contracts over the package found under ``source_root``."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        env={"PYTHONPATH": str(source_root), "PATH": str(Path(sys.executable).parent)},
        capture_output=True,
        text=True,
    )


def strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """The import cycles of ``graph``: its strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(component)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


@pytest.mark.slow
def test_the_stages_keep_their_layers():
    result = lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.slow
def test_an_import_from_a_stage_above_breaks_the_contract(tmp_path):
    shutil.copytree(
        ROOT / "src" / "segnet", tmp_path / "segnet", ignore=shutil.ignore_patterns("weights", "__pycache__")
    )
    errors = tmp_path / "segnet" / "data" / "pairs.py"
    errors.write_text(errors.read_text() + "\nfrom segnet.train.loop import train  # an upward import\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1
    assert "segnet.data is not allowed to import segnet.train" in result.stdout
    assert "segnet.data.pairs -> segnet.train.loop" in result.stdout


def test_no_module_imports_itself_through_others():
    assert strongly_connected(grimp.build_graph("segnet")) == []
