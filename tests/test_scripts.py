"""The scripts beside the package (benchmarks/, docs/, tools/) import only what segnet has: a module
moved or renamed in src/ breaks them without any test running them at full length."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from segnet.data.pairs import find_pairs, split_pairs

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


def test_every_script_the_docs_and_code_name_exists() -> None:
    """README, docs (but decisions.md, which keeps retired scripts with the commit that had them),
    the package, the tests and the scripts name only scripts that exist."""
    named = re.compile(r"\b(?:benchmarks|docs|tools)/[a-z_]+\.py\b")
    sources = [ROOT / "README.md", ROOT / "Makefile", *(ROOT / "docs").glob("*.md")]
    sources += [path for folder in ("src", "tests", "benchmarks", "tools") for path in (ROOT / folder).rglob("*.py")]
    missing = {
        (source.name, name)
        for source in sources
        if source.name != "decisions.md"
        for name in named.findall(source.read_text(encoding="utf-8"))
        if not (ROOT / name).is_file()
    }
    assert not missing


def test_split_folders_writes_the_split_train_makes(synthetic_dataset: Path, tmp_path: Path) -> None:
    """tools/split_folders.py: the README's SEED folders hold exactly train's split, as links."""
    out = tmp_path / "seed1"
    command = [sys.executable, str(ROOT / "tools" / "split_folders.py"), "--data", str(synthetic_dataset)]
    subprocess.run([*command, "--seed", "1", "--val-fraction", "0.25", "--out", str(out)], check=True)
    train, held_out = split_pairs(find_pairs(synthetic_dataset), 0.25, 1)
    for side, expected in (("train", train), ("test", held_out)):
        linked = find_pairs(out / side)
        assert [pair.stem for pair in linked] == [pair.stem for pair in expected]
        assert all(pair.image.is_symlink() and pair.image.resolve() == source.image.resolve()
                   for pair, source in zip(linked, expected, strict=True))  # fmt: skip
    again = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True)
    assert again.returncode != 0 and "already exists" in again.stderr


def test_split_folders_last_makes_the_fine_tuning_split(synthetic_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "lowmag"
    script = str(ROOT / "tools" / "split_folders.py")
    subprocess.run(
        [sys.executable, script, "--data", str(synthetic_dataset), "--last", "4", "--out", str(out)], check=True
    )
    stems = [pair.stem for pair in find_pairs(synthetic_dataset)]
    found = {side: [pair.stem for pair in find_pairs(out / side)] for side in ("base", "tune", "test")}
    assert found == {"base": stems[:-4], "tune": stems[-4::2], "test": stems[-3::2]}
