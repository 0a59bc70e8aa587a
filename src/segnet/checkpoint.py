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
    calibration      present once :mod:`segnet.calibration` has set the model's logit offsets

Every file of a run folder that is rewritten in place is written with :func:`atomic_write`, so a
crash, a full disk or ``kill -9`` leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segnet.errors import CheckpointError, SegnetError

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "model_state", "class_names", "normalization")
TEMPORARY_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")
"""Temporary files of atomic writes, ``.NAME.RANDOM.tmp``: hidden, and never mistaken for ``*.pt``."""


def describe_write_error(path: str | Path, error: OSError, what: str = "file") -> str:
    """One line for a failed write (disk full, read-only folder), naming the file and what to do."""
    reason = error.strerror or str(error)
    return f"{path}: could not write {what} ({reason}): free some space or choose a writable folder"


@contextmanager
def atomic_write(path: str | Path, what: str = "file") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends it replaces ``path`` atomically.

    The temporary file is flushed to disk and renamed over ``path`` (a rename within one file system
    is atomic), so readers and crashes see the old file or the new one. On any failure the
    temporary file is removed and ``path`` is left as it was; an ``OSError`` becomes a
    :class:`~segnet.errors.SegnetError` naming ``path`` and ``what`` it holds.
    """
    path = Path(path)
    # Named here rather than by tempfile.mkstemp, which creates files readable by their owner only.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        yield temporary
        with temporary.open("r+b") as written:  # r+: Windows flushes only handles open for writing
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except OSError as error:
        kept = f"; the previous {what} is kept" if path.exists() else ""
        raise SegnetError(describe_write_error(path, error, what) + kept) from error
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(path: str | Path, text: str, what: str = "file") -> None:
    """Replace ``path`` with ``text``; readers and crashes see the old file or the new one."""
    with atomic_write(path, what) as temporary:
        temporary.write_text(text)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary files that a killed process left behind in ``folder``; returns them.

    Only one process writes a run folder, so when it starts, no write of its files is in progress.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [path for path in folder.iterdir() if TEMPORARY_NAME.match(path.name) and path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: a crash leaves either the old file or the new one.

    Raises:
        CheckpointError: the file could not be written (disk full, read-only folder); the
            previous checkpoint at ``path`` is kept.
    """
    path = Path(path)
    state = {"format_version": FORMAT_VERSION, **state}
    try:
        with atomic_write(path, "checkpoint") as temporary, temporary.open("xb") as handle:
            torch.save(state, handle)
    except SegnetError as error:
        raise CheckpointError(str(error)) from error.__cause__


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint written by :func:`save_checkpoint`.

    Only tensors and plain containers are unpickled (``weights_only=True``): a file that would run
    code when opened is refused with a :class:`~segnet.errors.CheckpointError`.
    """
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
    # Checkpoints written before models had logit offsets: theirs were zero.
    if isinstance(state["model_state"], dict) and "logit_offsets" not in state["model_state"]:
        state["model_state"]["logit_offsets"] = torch.zeros(int(state["model"]["num_classes"]))
    return state


def load_model(state: dict[str, Any], path: str | Path) -> nn.Module:
    """The model of a loaded checkpoint, with its weights, in eval mode on the CPU.

    Raises:
        CheckpointError: the model does not take RGB images (what prediction, calibration and
            export feed it), or the weights do not fit the model the checkpoint names.
    """
    from segnet.model import build_model  # segnet.model needs nothing from here; imported late to keep this module light

    spec = state["model"]
    if spec.get("in_channels", 3) != 3:
        raise CheckpointError(f"{path}: model expects {spec['in_channels']} input channels; segnet reads RGB images (3)")
    model = build_model(spec["name"], spec["num_classes"], 3, spec.get("downsample", 1))
    try:
        model.load_state_dict(state["model_state"])
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit model {spec['name']} ({first_line})") from error
    return model.eval()


def check_compatible(
    state: dict[str, Any], model_name: str, class_names: list[str], path: str | Path, downsample: int | None = None
) -> None:
    """Refuse to resume from a checkpoint of another model, class list or (if one is asked for) downsample."""
    if state["model"]["name"] != model_name:
        raise CheckpointError(
            f"{path}: checkpoint holds model '{state['model']['name']}', but '{model_name}' was asked for"
        )
    if list(state["class_names"]) != list(class_names):
        raise CheckpointError(
            f"{path}: checkpoint classes {list(state['class_names'])} differ from {list(class_names)}"
        )
    trained_downsample = state["model"].get("downsample", 1)
    if downsample is not None and downsample != trained_downsample:
        raise CheckpointError(
            f"{path}: the run was trained with downsample {trained_downsample}, not {downsample}; resume without --downsample"
        )
