"""Self-describing checkpoints: everything needed to resume training or to predict.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: opening a checkpoint never runs code from it.

Keys:
    format_version   int, ``FORMAT_VERSION`` when written
    model            {"name": str, "num_classes": int, "in_channels": int}
    model_state      the model's state dict (never wrapped in DDP)
    class_names      list of class names, index = class id
    normalization    {"mean": [float]*C, "std": [float]*C} on images scaled to [0, 1]
    config           the fully resolved training config (a plain dict)
    epoch            number of epochs completed
    best_score       best validation mean IoU so far (or None)
    optimizer_state, scheduler_state   present in training checkpoints, for ``--resume``
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from segnet.errors import CheckpointError

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "model_state", "class_names", "normalization")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: a crash leaves either the old file or the new one.

    The data goes to a temporary file in the same folder, is flushed to disk, and is then renamed
    over ``path`` (a rename within one file system is atomic).
    """
    path = Path(path)
    state = {"format_version": FORMAT_VERSION, **state}
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as error:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise CheckpointError(
                f"{path}: could not write checkpoint ({error.strerror or error}); "
                "the previous checkpoint is kept"
            ) from error
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt or unsafe file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a readable segnet checkpoint ({first_line})") from error
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        raise CheckpointError(f"{path}: not a segnet checkpoint (missing keys)")
    version = state["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is newer than this segnet "
            f"understands ({FORMAT_VERSION}); upgrade segnet"
        )
    return state


def check_compatible(state: dict[str, Any], model_name: str, class_names: list[str], path: str | Path) -> None:
    """Refuse to resume from a checkpoint of another model or another class list."""
    if state["model"]["name"] != model_name:
        raise CheckpointError(
            f"{path}: checkpoint holds model '{state['model']['name']}', but '{model_name}' was asked for"
        )
    if list(state["class_names"]) != list(class_names):
        raise CheckpointError(
            f"{path}: checkpoint classes {list(state['class_names'])} differ from {list(class_names)}"
        )
