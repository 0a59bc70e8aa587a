"""Where a cross-validation run keeps its folds: folds.json, one run folder per fold, their checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field
from typing_extensions import (
    TypedDict,  # pydantic reads TypedDicts from here before Python 3.12
)

from segnet.core.errors import DataError, SegnetError
from segnet.core.readback import read_json
from segnet.core.runfiles import BEST_CHECKPOINT

FOLDS_FILE = "folds.json"


class FoldsRecord(TypedDict):
    """What ``folds.json`` holds and is read back for (its seed is a record only): checked on reading."""

    folds: Annotated[int, Field(ge=2)]
    stems: list[list[str]]


def fold_dir(run_dir: Path, fold: int) -> Path:
    """The run folder of fold ``fold`` (counted from 1)."""
    return run_dir / f"fold_{fold}"


def fold_checkpoints(run_dir: Path, checkpoint_name: str = BEST_CHECKPOINT) -> list[Path]:
    """Every fold's ``checkpoint_name`` of a cross-validation run, in fold order.

    Raises:
        SegnetError: ``run_dir`` is not a cross-validation run (no folds.json).
        DataError: the folds file is unreadable, or a fold lacks the checkpoint (not trained yet).
    """
    path = run_dir / FOLDS_FILE
    if not path.is_file():
        raise SegnetError(
            f"{run_dir}: not a cross-validation run (no {FOLDS_FILE}); a run folder must be a cross-validation run "
            "(train --folds K), otherwise pass a checkpoint such as RUN/best.pt"
        )
    folds = read_json(path, "folds file", FoldsRecord)["folds"]
    checkpoints = [fold_dir(run_dir, k) / checkpoint_name for k in range(1, folds + 1)]
    missing = [str(c) for c in checkpoints if not c.is_file()]
    if missing:
        raise DataError(
            run_dir,
            f"cross-validation run is unfinished: no {', '.join(missing)} (resume it with train --folds {folds} --resume)",
        )
    return checkpoints
