"""The network behind inference: a PyTorch model or an ONNX file on onnxruntime.

An :class:`InferenceBackend` takes a batch of normalised float32 ``(N, 3, H, W)`` numpy tiles
and returns float32 logits ``(N, C, H, W)``. The ONNX backend never imports torch; an ONNX file
carries what inference needs besides the graph in its metadata (:class:`OnnxModelInfo`).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, NotRequired

import numpy as np
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import (  # pydantic reads TypedDicts from here before Python 3.12
    TypedDict,
)

from segnet.core.errors import CheckpointError, SegnetError
from segnet.data.classes import ClassRoles
from segnet.data.pairs import ChannelMeans, ChannelStds, ClassDiameters

if TYPE_CHECKING:  # torch is imported only where a PyTorch model runs
    import torch
    from torch import nn


class InferenceBackend(abc.ABC):
    """Runs the network on a batch of normalised float32 ``(N, 3, H, W)`` tiles.

    Attributes:
        stride: the network pads its input to a multiple of this and pools on that grid.
        num_classes: output channels, or ``None`` if unknown.
        device: where it runs, for messages and reports.
        samples_dropout: whether repeated calls sample dropout (Monte Carlo dropout is on).
    """

    stride: int = 1
    num_classes: int | None = None
    device: Any = "cpu"
    samples_dropout: bool = False

    @abc.abstractmethod
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Float32 logits ``(N, C, H, W)`` for a C-contiguous float32 batch ``(N, 3, H, W)``."""


class TorchBackend(InferenceBackend):
    """A PyTorch model in eval mode on ``device``; with ``mc_dropout`` its dropout layers keep sampling."""

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu", *, mc_dropout: bool = False) -> None:
        # torch only for a PyTorch model: the ONNX path never loads it
        import torch

        from segnet.model.networks import enable_mc_dropout

        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.model.eval()
        if mc_dropout:
            enable_mc_dropout(self.model)
        self.samples_dropout = mc_dropout
        self.stride = getattr(model, "total_stride", 1)
        self.num_classes = getattr(model, "num_classes", None)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        # torch only for a PyTorch model: the ONNX path never loads it
        import torch

        with torch.inference_mode():
            logits = self.model(torch.from_numpy(batch).to(self.device))
            return logits.float().cpu().numpy()


@with_config(ConfigDict(strict=True))
class _OnnxMetadata(TypedDict):
    """The decoded metadata's types: strict, so "3" is no stride and [0.5, 0.5] no normalisation."""

    model_name: Annotated[str, Field(min_length=1)]
    class_names: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    mean: ChannelMeans
    std: ChannelStds
    total_stride: Annotated[int, Field(ge=1)]
    class_diameter: NotRequired[ClassDiameters]
    class_roles: NotRequired[dict[str, str]]


_ONNX_METADATA = TypeAdapter(_OnnxMetadata)


@dataclass(frozen=True)
class OnnxModelInfo:
    """What ``segnet export`` stores in an ONNX file's ``metadata_props`` beside the graph.

    The graph's input ``input`` is the *normalised* float32 image batch ``(N, 3, H, W)`` (any N, H,
    W): ``(pixel / 255 - mean) / std`` per channel, with ``mean`` and ``std`` given here on [0, 1]
    as in the checkpoint. Its output ``logits`` is ``(N, C, H, W)``, raw scores before softmax.
    Keeping normalisation out of the graph lets tiles be zero-padded in normalised space exactly as
    the model pads a whole image. ``class_diameter`` is the training masks' median object diameter
    per class (the checkpoint fingerprint's), which ``--diameter`` scales images to, and
    ``class_roles`` the run's roles by class name (:meth:`segnet.plan.config.ClassRoles.of`); files
    exported before they were stored lack them, and load with none and the darkfield roles by name.
    """

    model_name: str
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    total_stride: int
    class_diameter: tuple[float | None, ...] | None = None
    class_roles: dict[str, str] | None = None

    _KEYS: ClassVar[dict[str, str]] = {
        "model_name": "segnet.model",
        "class_names": "segnet.class_names",
        "mean": "segnet.normalization.mean",
        "std": "segnet.normalization.std",
        "total_stride": "segnet.total_stride",
        "class_diameter": "segnet.class_diameter",
        "class_roles": "segnet.class_roles",
    }
    _OPTIONAL: ClassVar[frozenset[str]] = frozenset({"class_diameter", "class_roles"})

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` entries (values JSON-encoded)."""
        return {
            key: json.dumps(getattr(self, field))
            for field, key in self._KEYS.items()
            if getattr(self, field) is not None
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], path: str | Path) -> OnnxModelInfo:
        """Read :meth:`to_metadata`'s entries back; a missing or malformed one is an error naming ``path``."""
        values: dict[str, Any] = {}
        for field, key in cls._KEYS.items():
            if key not in metadata and field in cls._OPTIONAL:
                continue
            if key not in metadata:
                raise CheckpointError(f"{path}: ONNX model has no '{key}' metadata; export it with 'segnet export'")
            try:
                values[field] = json.loads(metadata[key])
            except json.JSONDecodeError as error:
                raise CheckpointError(f"{path}: ONNX metadata '{key}' is not valid JSON ({error})") from error
        try:
            _ONNX_METADATA.validate_python(values)
        except ValidationError as error:
            first = error.errors()[0]
            key = cls._KEYS[first["loc"][0]]
            raise CheckpointError(
                f"{path}: ONNX metadata '{key}' is wrong: {first['msg']} (found {metadata[key][:60]})"
            ) from None
        if len(set(values["class_names"])) != len(values["class_names"]):
            raise CheckpointError(
                f"{path}: ONNX metadata '{cls._KEYS['class_names']}' names a class twice: {values['class_names']}"
            )
        diameters = values.get("class_diameter")
        if diameters is not None and len(diameters) != len(values["class_names"]):
            raise CheckpointError(
                f"{path}: ONNX metadata '{cls._KEYS['class_diameter']}' gives {len(diameters)} diameters "
                f"for {len(values['class_names'])} classes"
            )
        roles = values.get("class_roles")
        try:
            ClassRoles.of(values["class_names"], roles)
        except SegnetError as error:
            raise CheckpointError(f"{path}: ONNX metadata '{cls._KEYS['class_roles']}' is wrong: {error}") from None
        return cls(
            values["model_name"],
            tuple(values["class_names"]),
            tuple(values["mean"]),
            tuple(values["std"]),
            values["total_stride"],
            tuple(diameters) if diameters is not None else None,
            roles,
        )


def _onnx_providers(device: str, available: Sequence[str]) -> list[str]:
    """onnxruntime execution providers for ``device`` (``auto``, ``cpu`` or ``cuda``)."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device in ("auto", "cuda"):
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device == "cuda":
            raise SegnetError(
                "device cuda was asked for, but this onnxruntime has no CUDA provider (install onnxruntime-gpu)"
            )
        return ["CPUExecutionProvider"]
    raise SegnetError(f"unknown device {device!r} for an ONNX model; use auto, cpu or cuda")


class OnnxBackend(InferenceBackend):
    """An ONNX file written by ``segnet export``, run by onnxruntime; torch is not imported.

    Attributes:
        info: the file's :class:`OnnxModelInfo` (class names, normalisation, stride).

    Raises:
        CheckpointError: the file is missing, unreadable, or lacks segnet's metadata.
    """

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        # onnxruntime: the optional [export] extra, only for ONNX files
        import onnxruntime

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: ONNX model not found")
        providers = _onnx_providers(device, onnxruntime.get_available_providers())
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"{path}: not a readable ONNX model ({first_line})") from error
        self.info = OnnxModelInfo.from_metadata(self.session.get_modelmeta().custom_metadata_map, path)
        self.path = path
        self.stride = self.info.total_stride
        self.num_classes = len(self.info.class_names)
        self.device = f"onnxruntime {self.session.get_providers()[0]}"
        # The class names must fit the graph, or counts.csv would get shifted columns.
        names = list(self.info.class_names)
        for values, what, channels, meaning in (
            (self.session.get_inputs(), "input", 3, "3 RGB channels"),
            (
                self.session.get_outputs(),
                "output",
                self.num_classes,
                f"{self.num_classes} classes, as the metadata names {names}",
            ),
        ):
            shape = values[0].shape if values else []
            if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != channels):
                raise CheckpointError(
                    f"{path}: the ONNX graph's {what} has shape {shape}; segnet needs (N, C, H, W) with C = {meaning}"
                )
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        logits = self.session.run(None, {self.input_name: batch})[0]
        if logits.ndim != 4 or logits.shape[1] != self.num_classes:
            raise CheckpointError(
                f"{self.path}: the ONNX graph gave logits of shape {logits.shape}, but its metadata names "
                f"{self.num_classes} classes {list(self.info.class_names)}"
            )
        return logits
