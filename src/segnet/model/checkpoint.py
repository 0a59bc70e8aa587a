"""Self-describing checkpoints: everything needed to resume training or to predict.

:class:`Checkpoint` is a checkpoint's content as one typed value, and this module alone knows how
it is laid out on disk: :meth:`Checkpoint.load` reads and checks a file, :meth:`Checkpoint.save`
writes one. Every other module reads the checkpoint's attributes.

On disk a checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(weights_only=True)``: opening a checkpoint never runs code from it. Its keys,
format version ``FORMAT_VERSION`` (the only one there has been):

    format_version   int, ``FORMAT_VERSION`` when written
    model            the :class:`~segnet.plan.spec.ModelSpec` as a plain dict (:meth:`ModelSpec.to_dict`)
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

The first five are required; the others are written where known (an attribute that is ``None`` is
left out). The model spec's ``space_to_depth`` is optional and ``False`` where missing: the shipped
``darkfield.pt`` predates it. A file is checked against this layout on every load (a damaged or
forged one is refused in one line naming the file and the key), and a retired option in its
config or spec is dropped or refused (:mod:`segnet.plan.retired`); nothing else is filled in.

Every file of a run folder that is rewritten in place is written with :func:`segnet.core.outputs.atomic_write`, so a
crash, a full disk or ``kill -9`` leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
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
from segnet.data.classes import ClassRoles
from segnet.data.pairs import ChannelMeans, ChannelStds, ClassDiameters, FiniteNumber
from segnet.model.networks import build_model
from segnet.plan.config import saved_palette, saved_roles
from segnet.plan.retired import without_retired
from segnet.plan.spec import ModelSpec, model_names

FORMAT_VERSION = 1
_REQUIRED_KEYS = ("format_version", "model", "model_state", "class_names", "normalization")
_OPTIONAL_KEYS = (
    "config",
    "fingerprint",
    "epoch",
    "best_score",
    "best_epoch",
    "optimizer_state",
    "scheduler_state",
    "training_images",
    "calibration",
)
"""The optional keys, each the :class:`Checkpoint` attribute of that name."""

# The layout (module docstring) as types, checked on every load: a damaged or forged file is
# refused naming the key, rather than failing later as a traceback or a silent wrong result.
# Strict: "3" is no number of classes and true no epoch. Keys not listed here are not checked.
_STRICT = ConfigDict(strict=True)
_Positive = Annotated[int, Field(ge=1)]
_Colour = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)]


@with_config(_STRICT)
class _ModelSpec(TypedDict):
    name: str
    num_classes: _Positive
    in_channels: _Positive
    downsample: _Positive
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
_CLASS_DIAMETERS = TypeAdapter(ClassDiameters)


def _check_layout(state: Any, path: str | Path) -> None:
    """Refuse a loaded dict that is not laid out as :meth:`Checkpoint.save` writes it.

    Raises:
        CheckpointError: naming ``path``, the first key that is wrong and what was found there.
    """
    if not isinstance(state, dict) or any(key not in state for key in _REQUIRED_KEYS):
        missing = (
            [key for key in _REQUIRED_KEYS if key not in state] if isinstance(state, dict) else list(_REQUIRED_KEYS)
        )
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


@dataclass(frozen=True, eq=False)  # eq: the weights are tensors, which == does not reduce to a bool
class Checkpoint:
    """A checkpoint's content (the module docs give the layout on disk).

    Attributes:
        spec: the model (:class:`~segnet.plan.spec.ModelSpec`).
        model_state: its state dict, ``logit_offsets`` included.
        class_names: one name per output class, in index order.
        mean, std: the input normalisation per RGB channel, on images scaled to [0, 1].
        config: the fully resolved training config, as a plain dict (:meth:`setting` reads one option).
        fingerprint: the dataset fingerprint the run was planned from.
        epoch: epochs completed.
        best_score, best_epoch: the best validation mean IoU so far and its epoch.
        optimizer_state, scheduler_state: what ``--resume`` continues from.
        training_images: the stems of the images the run trained on.
        calibration: the summary of :mod:`segnet.train.calibration` once it set the logit offsets.

    ``None``: not recorded (the key is absent from the file).
    """

    spec: ModelSpec
    model_state: dict[str, torch.Tensor]
    class_names: list[str]
    mean: list[float]
    std: list[float]
    config: dict[str, Any] | None = None
    fingerprint: dict[str, Any] | None = None
    epoch: int | None = None
    best_score: float | None = None
    best_epoch: int | None = None
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None
    training_images: list[str] | None = None
    calibration: dict[str, Any] | None = None

    @classmethod
    def of_model(
        cls, model: nn.Module, class_names: list[str], mean: list[float], std: list[float], **fields: Any
    ) -> Checkpoint:
        """The checkpoint of a model built by :func:`segnet.model.build_model` (its spec and
        current weights), its classes and normalisation; ``fields`` set the other attributes."""
        return cls(model.spec, model.state_dict(), list(class_names), list(mean), list(std), **fields)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
        """Read and check the checkpoint file ``path`` (written by :meth:`save`).

        Only tensors and plain containers are unpickled (``weights_only=True``): a file that would
        run code when opened is refused, as is one that is not laid out as the module docs say or
        was trained with an option segnet no longer has (:mod:`segnet.plan.retired`).

        Raises:
            CheckpointError: in one line naming ``path`` (and the key that is wrong).
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint not found")
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:  # torch raises many types for a corrupt or unsafe file
            raise CheckpointError(f"{path}: {_describe_load_error(error)}") from error
        return cls.from_dict(state, path)

    @classmethod
    def from_dict(cls, state: Any, path: str | Path) -> Checkpoint:
        """The checkpoint a dict loaded from ``path`` holds, checked as :meth:`load` checks a file.

        Raises:
            CheckpointError: naming ``path``, the first key that is wrong and what was found there.
        """
        _check_layout(state, path)
        optional = {key: state[key] for key in _OPTIONAL_KEYS if key in state}
        if "config" in optional:
            optional["config"] = without_retired(optional["config"], path, CheckpointError)
        normalization = state["normalization"]
        return cls(
            ModelSpec.from_dict(state["model"], path),
            dict(state["model_state"]),
            list(state["class_names"]),
            list(normalization["mean"]),
            list(normalization["std"]),
            **optional,
        )

    def to_dict(self) -> dict[str, Any]:
        """The plain dict :meth:`save` writes (module docs): the attributes that are ``None`` are left out."""
        state = {
            "format_version": FORMAT_VERSION,
            "model": self.spec.to_dict(),
            "model_state": self.model_state,
            "class_names": list(self.class_names),
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
        }
        state.update((key, value) for key in _OPTIONAL_KEYS if (value := getattr(self, key)) is not None)
        return state

    def save(self, path: str | Path) -> None:
        """Write the checkpoint to ``path`` atomically: a crash leaves either the old file or the new one.

        Raises:
            CheckpointError: the file could not be written (disk full, read-only folder); the
                previous checkpoint at ``path`` is kept.
        """
        path = Path(path)
        try:
            with atomic_write(path, "checkpoint") as temporary, temporary.open("xb") as handle:
                torch.save(self.to_dict(), handle)
        except SegnetError as error:
            raise CheckpointError(str(error)) from error.__cause__

    def replace(self, **changes: Any) -> Checkpoint:
        """A copy with ``changes`` to its attributes."""
        return dataclasses.replace(self, **changes)

    def setting(self, name: str, default: Any = None) -> Any:
        """The training config's option ``name`` as the run recorded it; ``default`` where it did not."""
        return (self.config or {}).get(name, default)

    @property
    def palette(self) -> dict[int, list[int]] | None:
        """The colour-mask palette the run was trained with, keyed by class index (:func:`segnet.plan.config.saved_palette`)."""
        return saved_palette(self.config, self.class_names)

    @property
    def roles(self) -> ClassRoles:
        """The class roles the run was trained with (:func:`segnet.plan.config.saved_roles`)."""
        return saved_roles(self.config, self.class_names)

    @property
    def reference_diameters(self) -> list[float | None] | None:
        """The fingerprint's ``class_diameter`` (the training masks' median object size per class),
        or ``None`` where the fingerprint records none that fits the classes."""
        diameters = (self.fingerprint or {}).get("class_diameter")
        try:
            diameters = _CLASS_DIAMETERS.validate_python(diameters, strict=True)
        except ValidationError:
            return None
        return diameters if len(diameters) == len(self.class_names) else None

    @property
    def logit_offsets(self) -> dict[str, float] | None:
        """The calibrated logit offsets by class name; ``None`` where the checkpoint is not calibrated."""
        return dict(self.calibration["offsets"]) if self.calibration is not None else None

    def for_shipping(self) -> Checkpoint:
        """The checkpoint as a built-in model ships it (:mod:`segnet.model.builtin`): the model,
        classes, normalisation, calibration, config, fingerprint and epoch, with the float weights
        in float16 (the logit offsets stay float32); the optimiser and scheduler states, the best
        score and the training images are left behind."""
        weights = {
            name: tensor.half() if tensor.is_floating_point() and name != "logit_offsets" else tensor
            for name, tensor in self.model_state.items()
        }
        return Checkpoint(
            self.spec,
            weights,
            self.class_names,
            self.mean,
            self.std,
            config=self.config,
            fingerprint=self.fingerprint,
            epoch=self.epoch,
            calibration=self.calibration,
        )

    def load_model(self, path: str | Path) -> nn.Module:
        """The checkpoint's model with its weights, in eval mode on the CPU (``path`` names the
        checkpoint in messages).

        Raises:
            CheckpointError: the model does not take RGB images (what prediction, calibration and
                export feed it), or the weights do not fit the model the checkpoint names or are not finite.
        """
        spec = self.spec
        if spec.in_channels != 3:
            raise CheckpointError(
                f"{path}: model expects {spec.in_channels} input channels; segnet reads RGB images (3)"
            )
        model = build_model(spec)
        try:
            model.load_state_dict(self.model_state)
        except RuntimeError as error:
            raise CheckpointError(
                f"{path}: weights do not fit model {spec.name} ({_state_dict_problem(error)})"
            ) from error
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
        self, model_name: str, class_names: list[str], path: str | Path, downsample: int | None = None
    ) -> None:
        """Refuse to resume from (or fine-tune) a checkpoint of another model, class list or (if one
        is asked for) downsample."""
        spec = self.spec
        if spec.name != model_name:
            raise CheckpointError(f"{path}: checkpoint holds model '{spec.name}', but '{model_name}' was asked for")
        if list(self.class_names) != list(class_names):
            raise CheckpointError(
                f"{path}: checkpoint classes {list(self.class_names)} differ from {list(class_names)}"
            )
        if downsample is not None and downsample != spec.downsample:
            raise CheckpointError(
                f"{path}: the run was trained with downsample {spec.downsample}, not {downsample}; resume without --downsample"
            )


def _state_dict_problem(error: RuntimeError) -> str:
    """What ``load_state_dict`` found wrong, in one line: its first line names only the model,
    the next what is missing, unexpected or of another shape."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    line = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    return line if len(line) <= 200 else line[:197] + "..."
