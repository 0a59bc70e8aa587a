"""Inference on images of any size: sliding windows, test-time augmentation, Monte Carlo dropout.

Sliding-window inference (as in nnU-Net) keeps memory bounded on large images: the image is cut
into overlapping ``tile x tile`` windows whose starts are spread evenly so that the last window
ends exactly at the image edge; each window's softmax is weighted by a Gaussian importance map
(pixels near a window's centre saw more context than those at its border, so they count more) and
summed into one float32 ``(C, H, W)`` accumulator and an ``(H, W)`` weight map, then divided.
Memory is one batch of windows plus the accumulator, whatever the image size.

Test-time augmentation averages the softmax over the 8 dihedral views of the input (4 rotations x
an optional flip), each undone on the output. Monte Carlo dropout (Bayesian SegNet, Kendall et al.
2015) keeps the dropout layers sampling at test time and averages ``mc_samples`` stochastic passes;
the spread of those samples shows up as predictive entropy (:func:`predictive_entropy`).

The network itself sits behind an :class:`InferenceBackend`: a batch of normalised float32
``(N, 3, H, W)`` numpy tiles in, float32 logits ``(N, C, H, W)`` out. Windows, views, softmax and
blending are numpy, so the same pipeline runs a PyTorch model (:class:`TorchBackend`) or an ONNX
file from ``segnet export`` on onnxruntime (:class:`OnnxBackend`); the ONNX path never imports
torch. An ONNX file carries what inference needs besides the graph in its metadata
(:class:`OnnxModelInfo`): class names, normalisation and the model's total stride.

:func:`predict_paths` runs a :class:`Predictor` over files, folders and glob patterns and writes,
per image, the class mask, a colour overlay, (with Monte Carlo dropout) an uncertainty map, and
one row of cell counts in ``counts.csv``.
"""

from __future__ import annotations

import abc
import csv
import glob
import json
import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import matplotlib
import numpy as np
from PIL import Image
from scipy.special import entr, softmax
from tqdm import tqdm

from segnet.counting import count_objects, coverage
from segnet.data import IMAGE_EXTENSIONS, normalize_array, read_image
from segnet.errors import CheckpointError, DataError, SegnetError

if TYPE_CHECKING:  # torch is imported only where a PyTorch model runs
    import torch
    from torch import nn

__all__ = [
    "InferenceBackend",
    "OnnxBackend",
    "OnnxModelInfo",
    "Predictor",
    "TorchBackend",
    "class_palette",
    "colorize",
    "expand_inputs",
    "gaussian_importance_map",
    "gaussian_importance_weights",
    "overlay",
    "predict_paths",
    "predictive_entropy",
    "sliding_window_starts",
]

# Fixed colours of the first classes: background black, erythrocytes red, spirochetes green.
_BASE_PALETTE = ((0, 0, 0), (255, 0, 0), (0, 255, 0))
# Further classes cycle through this qualitative colormap.
_EXTRA_CLASS_COLORMAP = "tab10"
_UNCERTAINTY_COLORMAP = "inferno"  # black when certain, so a confident darkfield field stays dark
_UNCERTAINTY_ALPHA = 0.5
# Weight of a window's outermost pixels relative to its centre. The Gaussian falls to ~1e-7 in the
# corners; a floor keeps every pixel covered by some weight without letting borders matter.
_MIN_IMPORTANCE = 1e-4
# Results waiting to be written; more would only hold (C, H, W) arrays in memory.
_MAX_PENDING_WRITES = 2

TileProgress = Callable[[int, int], None]
"""Called as ``progress(windows_done, windows_total)`` after each batch of windows."""


# --------------------------------------------------------------------------------------------
# Sliding windows
# --------------------------------------------------------------------------------------------


def sliding_window_starts(length: int, tile: int, overlap: float, stride: int = 1) -> list[int]:
    """Start offsets of windows of size ``tile`` covering ``0..length`` along one axis.

    As nnU-Net's ``compute_steps_for_sliding_window``: the fewest windows whose step is at most
    ``tile * (1 - overlap)``, spread evenly so the first starts at 0 and the last ends exactly at
    the edge. With ``stride > 1`` everything is counted in whole strides: starts are multiples of
    ``stride`` (``tile`` must be one) and the edge is ``length`` rounded up to a multiple of it.
    A ``length`` no longer than ``tile`` gives one window at 0.
    """
    if length < 1 or tile < 1 or stride < 1:
        raise ValueError(f"length, tile and stride must be positive, got {length}, {tile} and {stride}")
    if tile % stride:
        raise ValueError(f"tile {tile} is not a multiple of the stride {stride}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    length_in_strides, tile_in_strides = -(-length // stride), tile // stride
    if length_in_strides <= tile_in_strides:
        return [0]
    span = length_in_strides - tile_in_strides
    target_step = max(tile_in_strides * (1 - overlap), 1.0)  # below one stride would repeat windows
    count = math.ceil(span / target_step) + 1
    actual_step = span / (count - 1)
    return [round(actual_step * index) * stride for index in range(count)]


def gaussian_importance_weights(height: int, width: int) -> np.ndarray:
    """``(height, width)`` float32 Gaussian weights, sigma = size / 8 per axis, peak 1.

    Values are clamped below at a small positive minimum, so a pixel covered only by window
    borders still gets a (tiny, but non-zero) weight and the final division is always defined.
    """
    def axis(size: int) -> np.ndarray:
        # Centred between the middle pixels, so the map is symmetric (flips and rotations of a
        # square window see the same weights, which keeps TTA consistent).
        offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
        return np.exp(-0.5 * (offsets / (size / 8)) ** 2)

    weights = axis(height)[:, None] * axis(width)[None, :]
    weights /= weights.max()
    return np.maximum(weights, _MIN_IMPORTANCE).astype(np.float32)


def gaussian_importance_map(height: int, width: int) -> torch.Tensor:
    """:func:`gaussian_importance_weights` as a float32 torch tensor, for callers working in torch."""
    import torch

    return torch.from_numpy(gaussian_importance_weights(height, width))


def _dihedral_views(tta: bool) -> list[tuple[int, bool]]:
    """``(quarter_turns, flip)`` pairs: all 8 symmetries of the square with TTA, else the identity."""
    if not tta:
        return [(0, False)]
    return [(turns, flip) for flip in (False, True) for turns in range(4)]


def _apply_view(batch: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """The ``(N, C, H, W)`` batch flipped left-right (if ``flip``), then turned ``turns`` quarters."""
    if flip:
        batch = batch[..., ::-1]
    return np.rot90(batch, turns, axes=(-2, -1))


def _undo_view(batch: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    batch = np.rot90(batch, -turns, axes=(-2, -1))
    return batch[..., ::-1] if flip else batch


# --------------------------------------------------------------------------------------------
# Backends: PyTorch and onnxruntime
# --------------------------------------------------------------------------------------------


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
        import torch

        from segnet.model import enable_mc_dropout

        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.model.eval()
        if mc_dropout:
            enable_mc_dropout(self.model)
        self.samples_dropout = mc_dropout
        self.stride = getattr(model, "total_stride", 1)
        self.num_classes = getattr(model, "num_classes", None)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            logits = self.model(torch.from_numpy(batch).to(self.device))
            return logits.float().cpu().numpy()


@dataclass(frozen=True)
class OnnxModelInfo:
    """What ``segnet export`` stores in an ONNX file's ``metadata_props`` beside the graph.

    The graph's input ``input`` is the *normalised* float32 image batch ``(N, 3, H, W)`` (any N, H,
    W): ``(pixel / 255 - mean) / std`` per channel, with ``mean`` and ``std`` given here on [0, 1]
    as in the checkpoint. Its output ``logits`` is ``(N, C, H, W)``, raw scores before softmax.
    Keeping normalisation out of the graph lets tiles be zero-padded in normalised space exactly as
    the model pads a whole image.
    """

    model_name: str
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    total_stride: int

    _KEYS: ClassVar[dict[str, str]] = {
        "model_name": "segnet.model",
        "class_names": "segnet.class_names",
        "mean": "segnet.normalization.mean",
        "std": "segnet.normalization.std",
        "total_stride": "segnet.total_stride",
    }

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` entries (values JSON-encoded)."""
        return {key: json.dumps(getattr(self, field)) for field, key in self._KEYS.items()}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], path: str | Path) -> OnnxModelInfo:
        """Read :meth:`to_metadata`'s entries back; a missing or malformed one is an error naming ``path``."""
        values: dict[str, Any] = {}
        for field, key in cls._KEYS.items():
            if key not in metadata:
                raise CheckpointError(f"{path}: ONNX model has no '{key}' metadata; export it with 'segnet export'")
            try:
                values[field] = json.loads(metadata[key])
            except json.JSONDecodeError as error:
                raise CheckpointError(f"{path}: ONNX metadata '{key}' is not valid JSON ({error})") from error
        return cls(
            str(values["model_name"]),
            tuple(map(str, values["class_names"])),
            tuple(map(float, values["mean"])),
            tuple(map(float, values["std"])),
            int(values["total_stride"]),
        )


def _onnx_providers(device: str, available: Sequence[str]) -> list[str]:
    """onnxruntime execution providers for ``device`` (``auto``, ``cpu`` or ``cuda``)."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device in ("auto", "cuda"):
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device == "cuda":
            raise SegnetError("device cuda was asked for, but this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
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
        self.input_name = self.session.get_inputs()[0].name
        self.stride = self.info.total_stride
        self.num_classes = len(self.info.class_names)
        self.device = f"onnxruntime {self.session.get_providers()[0]}"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


# --------------------------------------------------------------------------------------------
# Predictor
# --------------------------------------------------------------------------------------------


class Predictor:
    """Segment whole images with a trained model.

    Args:
        model: a PyTorch model returning logits ``(N, C, H, W)`` for inputs ``(N, 3, H, W)`` of any
            size (run on ``device``), or an :class:`InferenceBackend` such as :class:`OnnxBackend`
            (``device`` is then unused; see :meth:`from_onnx`).
        class_names: one name per output class; index 0 is the background.
        mean, std: per-channel normalisation on images scaled to [0, 1], as stored in the checkpoint.
        device: where a PyTorch model runs (it is moved there); ``None`` is the CPU.
        tile: window size for sliding-window inference, rounded down to a multiple of the model's
            ``total_stride`` (at least one stride); ``None`` runs each image whole.
        overlap: fraction of a window shared with its neighbour (the step is at most
            ``tile * (1 - overlap)``).
        batch_size: windows per forward pass.
        tta: average over the 8 flips/rotations of the input.
        mc_samples: with ``N > 0``, keep dropout active and average ``N`` stochastic passes
            (needs a PyTorch model with dropout layers: ``bayesian-segnet`` or
            ``bayesian-segnet-basic``).
    """

    def __init__(
        self,
        model: nn.Module | InferenceBackend,
        class_names: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str | None = None,
        *,
        tile: int | None = None,
        overlap: float = 0.25,
        batch_size: int = 4,
        tta: bool = False,
        mc_samples: int = 0,
    ) -> None:
        if tile is not None and tile < 1:
            raise SegnetError(f"tile size must be a positive number of pixels, got {tile}")
        if not 0 <= overlap < 1:
            raise SegnetError(f"tile overlap must be at least 0 and below 1, got {overlap}")
        if batch_size < 1:
            raise SegnetError(f"batch size must be at least 1, got {batch_size}")
        if mc_samples < 0:
            raise SegnetError(f"Monte Carlo samples must be 0 (off) or more, got {mc_samples}")
        if len(mean) != 3 or len(std) != 3:
            raise SegnetError(f"normalisation needs 3 channel means and stds, got {list(mean)} and {list(std)}")
        if isinstance(model, InferenceBackend):
            if mc_samples > 0 and not model.samples_dropout:
                raise SegnetError(
                    f"Monte Carlo dropout needs a PyTorch checkpoint of a bayesian model; {model.device} runs without dropout"
                )
            self.backend = model
        else:
            self.backend = TorchBackend(model, device if device is not None else "cpu", mc_dropout=mc_samples > 0)
        model_classes = self.backend.num_classes
        if model_classes is not None and model_classes != len(class_names):
            raise SegnetError(f"the model predicts {model_classes} classes but {len(class_names)} class names were given")
        self.class_names = list(class_names)
        self.tile = tile
        self.overlap = overlap
        self.batch_size = batch_size
        self.tta = tta
        self.mc_samples = mc_samples
        # The model pads its input to a multiple of this and pools on that grid (_predict_tiled).
        self.stride: int = self.backend.stride
        # segnet.data.normalize_array takes mean/std on 0..255 (training does the same).
        self.mean_255 = np.asarray(mean, dtype=np.float32) * 255.0
        self.std_255 = np.asarray(std, dtype=np.float32) * 255.0

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", **options: Any) -> Predictor:
        """Build the checkpoint's model with its weights, classes and normalisation.

        ``device`` is ``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]``; ``options`` are the
        keyword arguments of :class:`Predictor` (``tile``, ``overlap``, ``batch_size``, ``tta``,
        ``mc_samples``).
        """
        from segnet.checkpoint import load_checkpoint
        from segnet.distributed import resolve_device
        from segnet.model import build_model

        state = load_checkpoint(path)
        spec = state["model"]
        if spec.get("in_channels", 3) != 3:
            raise CheckpointError(f"{path}: model expects {spec['in_channels']} input channels; prediction reads RGB images (3)")
        model = build_model(spec["name"], spec["num_classes"], spec.get("in_channels", 3))
        try:
            model.load_state_dict(state["model_state"])
        except RuntimeError as error:
            first_line = str(error).strip().splitlines()[0]
            raise CheckpointError(f"{path}: weights do not fit model {spec['name']} ({first_line})") from error
        normalization = state["normalization"]
        return cls(model, state["class_names"], normalization["mean"], normalization["std"], resolve_device(device), **options)

    @classmethod
    def from_onnx(cls, path: str | Path, device: str = "auto", **options: Any) -> Predictor:
        """Run an ONNX file from ``segnet export`` on onnxruntime, without importing torch.

        Classes and normalisation come from the file's metadata. ``device`` is ``auto`` (CUDA when
        this onnxruntime has it), ``cpu`` or ``cuda``; ``options`` as for :meth:`from_checkpoint`
        (Monte Carlo dropout is not available: the exported graph has no dropout).
        """
        backend = OnnxBackend(path, device)
        return cls(backend, backend.info.class_names, backend.info.mean, backend.info.std, **options)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def device(self) -> Any:
        """Where the model runs (a ``torch.device``, or a description of the onnxruntime provider)."""
        return self.backend.device

    def predict_proba(self, image: np.ndarray, *, progress: TileProgress | None = None) -> np.ndarray:
        """Softmax probabilities ``(C, H, W)`` float32 for a uint8 ``H x W x 3`` RGB image.

        Averaged over the TTA views and Monte Carlo samples when those are on. ``progress`` is
        told how many windows are done after each batch (sliding-window mode only).

        Raises:
            SegnetError: the image is not ``H x W x 3`` uint8, or the model output is not finite.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise SegnetError(f"expected an H x W x 3 uint8 RGB image, got shape {image.shape} of {image.dtype}")
        if self.tile is None:
            batch = normalize_array(image, self.mean_255, self.std_255)[None]
            return self._average_softmax(batch)[0]
        return self._predict_tiled(image, progress)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Class index per pixel: ``H x W`` uint8 (the argmax of :meth:`predict_proba`)."""
        return self.predict_proba(image).argmax(axis=0).astype(np.uint8)

    def _predict_tiled(self, image: np.ndarray, progress: TileProgress | None) -> np.ndarray:
        height, width = image.shape[:2]
        # Windows start on multiples of the model's total stride and windows at the bottom/right
        # edge are zero-padded as the model pads a whole image, so every window sees the same
        # pooling grid and the same padding as whole-image inference. SegNet's unpooling puts
        # values back at the argmax positions of that grid; a window shifted off it by a few
        # pixels gives visibly different predictions.
        stride = self.stride
        tile = max(self.tile // stride, 1) * stride
        tile_h = min(tile, -(-height // stride) * stride)  # a small image is one padded window
        tile_w = min(tile, -(-width // stride) * stride)
        windows = [
            (top, left)
            for top in sliding_window_starts(height, tile_h, self.overlap, stride)
            for left in sliding_window_starts(width, tile_w, self.overlap, stride)
        ]
        importance = gaussian_importance_weights(tile_h, tile_w)
        summed = np.zeros((self.num_classes, height, width), dtype=np.float32)
        weights = np.zeros((height, width), dtype=np.float32)
        for done in range(0, len(windows), self.batch_size):
            batch_windows = windows[done : done + self.batch_size]
            crops = [image[top : top + tile_h, left : left + tile_w] for top, left in batch_windows]
            batch = np.zeros((len(crops), 3, tile_h, tile_w), dtype=np.float32)
            for window, crop in zip(batch, crops):
                window[:, : crop.shape[0], : crop.shape[1]] = normalize_array(crop, self.mean_255, self.std_255)
            proba = self._average_softmax(batch) * importance
            for (top, left), crop, window_proba in zip(batch_windows, crops, proba):
                inside_h, inside_w = crop.shape[:2]  # the padding's predictions are dropped
                summed[:, top : top + inside_h, left : left + inside_w] += window_proba[:, :inside_h, :inside_w]
                weights[top : top + inside_h, left : left + inside_w] += importance[:inside_h, :inside_w]
            if progress is not None:
                progress(done + len(batch_windows), len(windows))
        summed /= weights
        return summed

    def _average_softmax(self, batch: np.ndarray) -> np.ndarray:
        """Mean softmax ``(N, C, h, w)`` float32 over the TTA views and MC samples of a normalised batch."""
        views = _dihedral_views(self.tta)
        samples = max(self.mc_samples, 1)
        total: np.ndarray | None = None
        for turns, flip in views:
            view = np.ascontiguousarray(_apply_view(batch, turns, flip))
            for _ in range(samples):
                logits = self.backend(view)
                if not np.isfinite(logits).all():
                    raise SegnetError("the model produced NaN or infinite values; its weights are probably broken")
                proba = _undo_view(softmax(logits.astype(np.float32, copy=False), axis=1), turns, flip)
                total = proba if total is None else total + proba
        return total / np.float32(len(views) * samples)

# --------------------------------------------------------------------------------------------
# Uncertainty and pictures
# --------------------------------------------------------------------------------------------


def predictive_entropy(proba: np.ndarray) -> np.ndarray:
    """Entropy ``-sum_c p log p`` in nats of ``(C, H, W)`` probabilities: ``(H, W)`` float32.

    0 where one class has all the probability, ``log(C)`` where all classes are equally likely.
    """
    return np.maximum(entr(proba.astype(np.float64)).sum(axis=0), 0.0).astype(np.float32)


def class_palette(num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` uint8 RGB colours: black, red, green, then a matplotlib colormap."""
    extra = matplotlib.colormaps[_EXTRA_CLASS_COLORMAP]
    colours = list(_BASE_PALETTE[:num_classes])
    for index in range(len(colours), num_classes):
        rgb = extra((index - len(_BASE_PALETTE)) % extra.N)[:3]
        colours.append(tuple(round(255 * channel) for channel in rgb))
    return np.array(colours, dtype=np.uint8).reshape(num_classes, 3)


def colorize(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Colour a ``H x W`` class-index mask: ``H x W x 3`` uint8 (see :func:`class_palette`)."""
    if mask.size and int(mask.max()) >= num_classes:
        raise ValueError(f"mask holds class {int(mask.max())}, but there are only {num_classes} classes")
    return class_palette(num_classes)[mask]


def _blend(image: np.ndarray, colours: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colours`` as uint8; ``alpha`` may be an ``H x W`` map."""
    if np.ndim(alpha) == 2:
        alpha = alpha[..., None]
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, num_classes: int, alpha: float = 0.45) -> np.ndarray:
    """The image with each non-background pixel blended with its class colour (``alpha`` of it)."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image size {image.shape[:2]} differs from mask size {mask.shape}")
    return _blend(image, colorize(mask, num_classes), np.where(mask > 0, np.float32(alpha), np.float32(0)))


def _uncertainty_overlay(image: np.ndarray, scaled_entropy: np.ndarray) -> np.ndarray:
    """Heatmap of entropy (scaled to 0..1) blended over the image."""
    heat = matplotlib.colormaps[_UNCERTAINTY_COLORMAP](scaled_entropy)[..., :3] * 255
    return _blend(image, heat, _UNCERTAINTY_ALPHA)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Turn files, folders and glob patterns into a list of image files.

    A file is taken as it is; a folder gives its images (``.png``, ``.jpg``, ``.jpeg``, ``.tif``,
    ``.tiff``; not recursive), sorted by name; anything else is a glob pattern (``**`` recurses)
    giving its matching images, sorted. A file reached twice is listed once.

    Raises:
        DataError: an input names no existing file or folder, or matches no image.
    """
    found: dict[Path, None] = {}  # an ordered set
    for entry in inputs:
        path = Path(entry)
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = sorted(p for p in path.iterdir() if _is_image_file(p))
            if not matches:
                raise DataError(path, f"folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        else:
            matches = sorted(p for p in map(Path, glob.glob(entry, recursive=True)) if _is_image_file(p))
            if not matches:
                problem = "no images match this pattern" if glob.has_magic(entry) else "no such file or folder"
                raise DataError(path, problem)
        found.update(dict.fromkeys(matches))
    return list(found)


def _check_unique_stems(paths: Sequence[Path]) -> None:
    """Outputs are named by stem, so two inputs with one stem would overwrite each other."""
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise DataError(path, f"has the same name stem as {seen[path.stem]}; their outputs would overwrite each other")
        seen[path.stem] = path


def _write_outputs(
    path: Path,
    image: np.ndarray,
    proba: np.ndarray,
    out_dir: Path,
    class_names: Sequence[str],
    min_area: int,
    with_uncertainty: bool,
) -> tuple[list[Path], list[Any]]:
    """Write one image's pictures; return the written paths and its ``counts.csv`` row."""
    num_classes = len(class_names)
    mask = proba.argmax(axis=0).astype(np.uint8)
    outputs = {
        "mask": Image.fromarray(mask, mode="L"),
        "overlay": Image.fromarray(overlay(image, mask, num_classes), mode="RGB"),
    }
    if with_uncertainty:
        # 65535 is the largest possible entropy, log(C): the same grey means the same
        # uncertainty in every image.
        max_entropy = math.log(num_classes) if num_classes > 1 else 1.0
        scaled = np.clip(predictive_entropy(proba) / max_entropy, 0.0, 1.0)
        outputs["uncertainty"] = Image.fromarray(np.rint(scaled * 65535).astype(np.uint16))
        outputs["uncertainty_overlay"] = Image.fromarray(_uncertainty_overlay(image, scaled), mode="RGB")
    written = []
    for suffix, picture in outputs.items():
        target = out_dir / f"{path.stem}_{suffix}.png"
        try:
            picture.save(target)
        except OSError as error:
            raise DataError(target, f"could not write ({error.strerror or error})") from error
        written.append(target)

    object_classes = list(range(1, num_classes))
    counts = count_objects(mask, object_classes, min_area=min_area)
    fractions = coverage(mask, object_classes)
    row: list[Any] = [str(path)]
    for class_id in object_classes:
        row += [counts[class_id], f"{fractions[class_id]:.6f}"]
    return written, row


def _read_ahead(paths: Sequence[Path], reader: ThreadPoolExecutor) -> Iterator[tuple[Path, np.ndarray]]:
    """Yield decoded images in order while the next one is being read in the background."""
    upcoming: Future | None = reader.submit(read_image, paths[0]) if paths else None
    for index, path in enumerate(paths):
        image = upcoming.result()
        upcoming = reader.submit(read_image, paths[index + 1]) if index + 1 < len(paths) else None
        yield path, image


def predict_paths(
    predictor: Predictor, inputs: Sequence[str], out_dir: str | Path, *, min_area: int = 30, progress: bool = True
) -> list[Path]:
    """Segment every image named by ``inputs`` (see :func:`expand_inputs`); return the files written.

    For each input ``STEM.ext`` this writes into ``out_dir``:

    * ``STEM_mask.png``: class index per pixel (8-bit, one channel, the input's size);
    * ``STEM_overlay.png``: the image with each class blended in its colour;
    * with Monte Carlo dropout, ``STEM_uncertainty.png``: predictive entropy as a 16-bit PNG where
      65535 is ``log(C)``, the largest possible entropy; and ``STEM_uncertainty_overlay.png``:
      that entropy as a heatmap over the image.

    ``counts.csv`` gets one row per image, written as each image finishes: ``file``, then per
    non-background class ``<name>_count`` (objects of at least ``min_area`` pixels) and
    ``<name>_area_fraction``. Images are read and results written in background threads while the
    model runs; a progress bar counts images (and windows of large images).

    Raises:
        DataError: an input is missing or unreadable, two inputs share a stem, or an output
            cannot be written (the message names the file).
    """
    paths = expand_inputs(inputs)
    _check_unique_stems(paths)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(out_dir, f"cannot create the output folder ({error.strerror or error})") from error
    object_names = predictor.class_names[1:]
    header = ["file"] + [f"{name}_{column}" for name in object_names for column in ("count", "area_fraction")]
    counts_path = out_dir / "counts.csv"
    written: list[Path] = []
    pending: deque[Future] = deque()

    def finish_oldest() -> None:
        paths_written, row = pending.popleft().result()
        counts_writer.writerow(row)
        counts_file.flush()  # an interrupted run still leaves the counts of finished images
        written.extend(paths_written)

    with (
        counts_path.open("w", newline="") as counts_file,
        ThreadPoolExecutor(1, thread_name_prefix="segnet-read") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="segnet-write") as writer,
        tqdm(total=len(paths), unit="image", desc="predict", disable=not progress) as bar,
    ):
        counts_writer = csv.writer(counts_file)
        counts_writer.writerow(header)

        def show_windows(done: int, total: int) -> None:
            bar.set_postfix_str(f"tiles {done}/{total}" if total > 1 else "")

        for path, image in _read_ahead(paths, reader):
            try:
                proba = predictor.predict_proba(image, progress=show_windows if progress else None)
            except SegnetError as error:
                raise SegnetError(f"{path}: {error}") from error
            pending.append(
                writer.submit(
                    _write_outputs, path, image, proba, out_dir, predictor.class_names, min_area, predictor.mc_samples > 0
                )
            )
            while len(pending) > _MAX_PENDING_WRITES:
                finish_oldest()
            bar.update(1)
        while pending:
            finish_oldest()
    written.append(counts_path)
    return written
