"""Self-describing checkpoints: everything needed to resume training or to predict.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: opening a checkpoint never runs code from it.

Keys (what :func:`new_checkpoint` and ``segnet.train`` write):
    format_version   int, ``FORMAT_VERSION`` when written
    model            the :class:`~segnet.plan.spec.ModelSpec` as a plain dict: {"name": str,
                     "num_classes": int, "in_channels": int, "downsample": int}; older checkpoints
                     lack the last two and are upgraded on loading (:func:`model_spec`)
    model_state      the model's state dict (never wrapped in DDP), ``logit_offsets`` included
    class_names      list of class names, index = class id
    normalization    {"mean": [float]*3, "std": [float]*3} on images scaled to [0, 1]
    config           the fully resolved training config (a plain dict)
    fingerprint      the dataset fingerprint the run was planned from (``segnet.data``)
    epoch            number of epochs completed
    best_score       best validation mean IoU so far (or None)
    best_epoch       the epoch of ``best_score`` (or None)
    optimizer_state, scheduler_state   for ``--resume``
    training_images  the stems of the training images (split.json's "train" when it was written)
    calibration      present once :mod:`segnet.train.calibration` has set the model's logit offsets

Every file of a run folder that is rewritten in place is written with :func:`segnet.core.outputs.atomic_write`, so a
crash, a full disk or ``kill -9`` leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, NotRequired

import torch
from pydantic import (
    ConfigDict,
    Field,
    InstanceOf,
    TypeAdapter,
    ValidationError,
    with_config,
)
from torch import nn
from typing_extensions import (  # pydantic reads TypedDicts from here before Python 3.12
    TypedDict,
)

from segnet.core.errors import CheckpointError, SegnetError
from segnet.core.outputs import atomic_write
from segnet.data.pairs import ChannelMeans, ChannelStds, ClassDiameters, FiniteNumber
from segnet.model.networks import build_model
from segnet.plan.retired import without_retired
from segnet.plan.spec import ModelSpec, model_names

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model", "model_state", "class_names", "normalization")
TRAINING_IMAGES_KEY = "training_images"
"""The stems of the images a run trained on: ``evaluate`` refuses to call any of them held out."""

# The checkpoint's layout (module docstring) as types, checked on every load: a damaged or forged
# file is refused naming the key, rather than failing later as a traceback or a silent wrong result.
# Strict: "3" is no number of classes and true no epoch. Keys not listed here are not checked.
_STRICT = ConfigDict(strict=True)
_Positive = Annotated[int, Field(ge=1)]
_Colour = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)]


@with_config(_STRICT)
class _ModelSpec(TypedDict):
    name: str
    num_classes: _Positive
    in_channels: NotRequired[_Positive]
    downsample: NotRequired[_Positive]
    space_to_depth: NotRequired[bool]


@with_config(_STRICT)
class _Normalization(TypedDict):
    mean: ChannelMeans
    std: ChannelStds


@with_config(_STRICT)
class _Calibration(TypedDict):
    offsets: dict[str, FiniteNumber]


@with_config(_STRICT)
class _Config(TypedDict):
    mask_palette: NotRequired[dict[str, _Colour] | None]


@with_config(_STRICT)
class _Checkpoint(TypedDict):
    model: _ModelSpec
    model_state: dict[str, InstanceOf[torch.Tensor]]
    class_names: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    normalization: _Normalization
    calibration: NotRequired[_Calibration]
    config: NotRequired[_Config]
    fingerprint: NotRequired[dict[str, Any]]
    epoch: NotRequired[Annotated[int, Field(ge=0)]]
    best_score: NotRequired[FiniteNumber | None]
    best_epoch: NotRequired[Annotated[int, Field(ge=0)] | None]
    optimizer_state: NotRequired[dict[str, Any]]
    scheduler_state: NotRequired[dict[str, Any]]
    training_images: NotRequired[list[str]]


_CHECKPOINT = TypeAdapter(_Checkpoint)


def validate_checkpoint(state: Any, path: str | Path) -> None:
    """Refuse a loaded checkpoint that is not laid out as :func:`save_checkpoint` writes it.

    Raises:
        CheckpointError: naming ``path``, the first key that is wrong and what was found there.
    """
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        missing = [key for key in REQUIRED_KEYS if key not in state] if isinstance(state, dict) else list(REQUIRED_KEYS)
        raise CheckpointError(f"{path}: not a segnet checkpoint (missing {', '.join(missing)})")
    version = state["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(
            f"{path}: not a segnet checkpoint (format version {version!r} is not a positive whole number)"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is newer than this segnet understands ({FORMAT_VERSION}); upgrade segnet"
        )
    try:
        _CHECKPOINT.validate_python(state)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(
            repr(part)[1:-1] if isinstance(part, str) else str(part) for part in first["loc"]
        )  # a key may hold a newline
        found = repr(first["input"])
        found = found if len(found) <= 60 else found[:57] + "..."
        raise CheckpointError(
            f"{path}: damaged or forged checkpoint: {where}: {first['msg']} (found {found})"
        ) from None
    names, spec = state["class_names"], state["model"]
    if spec["name"] not in model_names():
        raise CheckpointError(
            f"{path}: checkpoint of an unknown model {spec['name']!r}; segnet builds {', '.join(model_names())} "
            "(a model a benchmark registers, such as its notebook baseline, loads only in that benchmark)"
        )
    if len(names) != spec["num_classes"] or len(set(names)) != len(names):
        raise CheckpointError(
            f"{path}: damaged or forged checkpoint: class_names {names} are not {spec['num_classes']} distinct names, "
            "one per output of the model"
        )


def _describe_load_error(error: Exception) -> str:
    """Why ``torch.load`` refused a file, in the user's terms (never its advice to unpickle it unsafely)."""
    text = str(error).strip()
    refused = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if refused:
        reason = refused.group(1).strip()
        code = re.match(r"Unsupported global: GLOBAL (\S+)", reason)
        if code:
            return (
                f"not a segnet checkpoint: it holds Python objects ({code.group(1)}), which segnet never loads "
                "because opening them could run code; it was not written by this tool"
            )
        return f"not a segnet checkpoint ({reason})"
    first_sentence = text.splitlines()[0].split(". ")[0] if text else type(error).__name__
    if "weights_only" in first_sentence:  # torch's hint to load unsafely: never passed on
        return "not a segnet checkpoint (unreadable file)"
    return f"not a readable segnet checkpoint ({first_sentence}: damaged, truncated or not a checkpoint)"


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
    code when opened is refused with a :class:`~segnet.core.errors.CheckpointError`, as is one
    trained with an option segnet no longer has (:mod:`segnet.plan.retired`).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt or unsafe file
        raise CheckpointError(f"{path}: {_describe_load_error(error)}") from error
    validate_checkpoint(state, path)
    # The one place older checkpoints are upgraded: the spec gets its missing fields, the config
    # loses the retired options at their neutral values (segnet.plan.retired; others are refused),
    # and the state dict gets the logit offsets that models did not have yet (theirs were zero).
    spec = ModelSpec.from_dict(state["model"], path)
    if "config" in state:
        state["config"] = without_retired(state["config"], path, CheckpointError)
    state["model"] = spec.to_dict()
    if "logit_offsets" not in state["model_state"]:
        state["model_state"]["logit_offsets"] = torch.zeros(spec.num_classes)
    return state


def model_spec(state: dict[str, Any]) -> ModelSpec:
    """The :class:`~segnet.plan.spec.ModelSpec` of a checkpoint loaded by :func:`load_checkpoint`."""
    return ModelSpec(**state["model"])


_CLASS_DIAMETERS = TypeAdapter(ClassDiameters)


def reference_diameters(state: dict[str, Any]) -> list[float | None] | None:
    """The fingerprint's ``class_diameter`` (the training masks' median object size per class), or
    ``None`` where the checkpoint has none that fits its classes (older checkpoints)."""
    fingerprint = state.get("fingerprint")
    diameters = fingerprint.get("class_diameter") if isinstance(fingerprint, dict) else None
    try:
        diameters = _CLASS_DIAMETERS.validate_python(diameters, strict=True)
    except ValidationError:
        return None
    return diameters if len(diameters) == len(state["class_names"]) else None


def new_checkpoint(
    model: nn.Module, class_names: list[str], normalization: dict[str, list[float]], **entries: Any
) -> dict[str, Any]:
    """A checkpoint dict of a model built by :func:`segnet.model.build_model`, its classes and
    normalisation; ``entries`` add the other keys (module docs)."""
    return {
        "model": model.spec.to_dict(),
        "model_state": model.state_dict(),
        "class_names": list(class_names),
        "normalization": normalization,
        **entries,
    }


def load_model(state: dict[str, Any], path: str | Path) -> nn.Module:
    """The model of a loaded checkpoint, with its weights, in eval mode on the CPU.

    Raises:
        CheckpointError: the model does not take RGB images (what prediction, calibration and
            export feed it), or the weights do not fit the model the checkpoint names or are not finite.
    """

    spec = model_spec(state)
    if spec.in_channels != 3:
        raise CheckpointError(f"{path}: model expects {spec.in_channels} input channels; segnet reads RGB images (3)")
    model = build_model(spec)
    try:
        model.load_state_dict(state["model_state"])
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit model {spec.name} ({first_line})") from error
    broken = [
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    if broken:  # found by tests/test_run_files_fuzz.py: it would fail only at prediction, naming no file
        raise CheckpointError(
            f"{path}: damaged checkpoint: the weights {', '.join(broken[:3])} hold NaN or infinite values"
        )
    return model.eval()


def check_compatible(
    state: dict[str, Any], model_name: str, class_names: list[str], path: str | Path, downsample: int | None = None
) -> None:
    """Refuse to resume from a checkpoint of another model, class list or (if one is asked for) downsample."""
    spec = model_spec(state)
    if spec.name != model_name:
        raise CheckpointError(f"{path}: checkpoint holds model '{spec.name}', but '{model_name}' was asked for")
    if list(state["class_names"]) != list(class_names):
        raise CheckpointError(
            f"{path}: checkpoint classes {list(state['class_names'])} differ from {list(class_names)}"
        )
    if downsample is not None and downsample != spec.downsample:
        raise CheckpointError(
            f"{path}: the run was trained with downsample {spec.downsample}, not {downsample}; resume without --downsample"
        )
