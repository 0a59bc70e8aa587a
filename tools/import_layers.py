"""Draw the import layers: which stage imports which, as counted in the code, beside the contract.

    python tools/import_layers.py        (or: make layers)

Rows are the stages of [tool.importlinter] in pyproject.toml, top to bottom; a cell counts the
direct imports from the row's modules into the column's. The contract allows only cells at or
below the diagonal (a stage imports itself and the stages under it); `make lint` fails otherwise.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def stages() -> list[str]:
    """The contract's layers, top to bottom, siblings (``a | b``) split into their own rows."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c["layers"] for c in config["contracts"] if c["type"] == "layers")
    return [name.strip() for layer in layers for name in layer.split("|")]


def stage_of(module: str, names: list[str]) -> str | None:
    """The stage a module belongs to (the longest stage name it starts with)."""
    matches = [name for name in names if module == name or module.startswith(name + ".")]
    return max(matches, key=len) if matches else None


def main() -> None:
    graph = grimp.build_graph("segnet")
    names = stages()
    counts = {(a, b): 0 for a in names for b in names}
    for module in graph.modules:
        source = stage_of(module, names)
        for imported in graph.find_modules_directly_imported_by(module):
            target = stage_of(imported, names)
            if source and target:
                counts[source, target] += 1
    short = [name.removeprefix("segnet.") for name in names]
    width = max(map(len, short)) + 1
    print(" " * width + "".join(f"{name[:8]:>9}" for name in short))
    for row, name in zip(names, short):
        cells = []
        for column in names:
            count = counts[row, column]
            upward = names.index(column) < names.index(row)
            cells.append(f"{(str(count) + ('!' if upward else '')) if count else '.':>9}")
        print(f"{name:<{width}}" + "".join(cells))
    print("rows import columns; '!' marks an import upward, which the contract refuses")


if __name__ == "__main__":
    main()
