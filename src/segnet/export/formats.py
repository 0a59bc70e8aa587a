"""Export a checkpoint for inference without segnet's training stack: ONNX, and bioimage.io packages.

ONNX
    PyTorch's legacy TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) cannot export
    SegNet: with dynamic height and width it fails while tracing ``max_unpool2d``'s output-size
    check, and it has no ONNX translation of ``max_unpool2d`` in any case. A naive translation to
    ONNX ``MaxUnpool`` would also be wrong: ONNX ``MaxPool`` indices count over the whole flattened
    ``(N, C, H, W)`` tensor, PyTorch's within each ``(n, c)`` plane. The ``torch.export``-based
    exporter (``dynamo=True``, onnxscript's torchlib) gets both right: it turns PyTorch's
    per-plane indices into ``ScatterND`` coordinates, and the model's padding to a multiple of its
    stride becomes shape arithmetic on the dynamic height and width. Every export is checked
    against PyTorch on random inputs of odd sizes and batch sizes (:func:`check_onnx_export`).

    Logits of two runtimes do not always agree to float32 rounding, through no fault of the
    export: where the two largest inputs of a max-pool window differ by less than rounding, each
    runtime's rounding picks the index, and unpooling then puts the value one pixel apart, which
    changes logits by up to ~0.1 around it. PyTorch does the same between its own convolution
    backends (oneDNN on or off). The check therefore makes PyTorch follow onnxruntime's pooling
    choices and requires those choices to be maxima; then logits agree to 1e-4.

    The graph takes the *normalised* image batch and returns raw logits; class names,
    normalisation and stride travel in the file's metadata (see
    :class:`segnet.predict.OnnxModelInfo`), which ``segnet predict --onnx`` reads.

bioimage.io
    :func:`export_bioimageio` writes a model package in the bioimage.io model format 0.5: ``rdf.yaml``,
    ONNX weights and the PyTorch state dict (architecture ``segnet.model.build_model_from_kwargs``
    with the checkpoint's :class:`~segnet.plan.spec.ModelSpec` as kwargs), a test input and its expected
    output (also as sample images), a cover image and a README. The input is the RGB image as
    float32 on 0..255; the normalisation is declared as ``fixed_zero_mean_unit_variance``
    preprocessing and the output is class probabilities (``softmax`` postprocessing). The test
    input is dithered so that no pooling is a near-tie (above), so bioimage.io's default
    reproducibility tolerance holds for every runtime. The package is validated with ``bioimageio.spec`` (file hashes checked locally, nothing
    downloaded). TorchScript weights are not written: the ONNX file serves the runtimes that
    would use them.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
import yaml
from PIL import Image
from scipy.special import softmax
from torch import nn

from segnet.core.errors import DataError, SegnetError
from segnet.core.outputs import refuse_overwriting, write_atomically, write_text_atomically
from segnet.data.pairs import read_image
from segnet.data.palette import colorize
from segnet.data.synthetic import generate_sample
from segnet.model.backends import OnnxModelInfo
from segnet.model.checkpoint import Checkpoint
from segnet.plan.spec import ModelSpec

__all__ = [
    "ExportCheck",
    "check_onnx_export",
    "export_bioimageio",
    "export_onnx",
    "model_to_onnx",
    "validate_bioimageio",
]

ONNX_INPUT = "input"
ONNX_OUTPUT = "logits"
# (batch, channel, height, width) names of the dynamic axes, for the input and the output.
_DYNAMIC_AXES = ("batch", None, "height", "width")
# onnxruntime must reproduce PyTorch's logits to this (absolute and relative) after export.
_EXPORT_TOLERANCE = 1e-4
# Batch size and (odd) sizes of the random inputs the export is checked on.
_CHECK_SHAPES = ((2, 37, 45), (1, 21, 70), (1, 1, 1))
# How closely another runtime must reproduce the test output (class probabilities): bioimage.io's
# defaults. A max-pool whose two largest inputs differ by less than rounding picks its index by that
# rounding, and unpooling then moves a value by a pixel, which changes probabilities by up to ~0.1
# around it: one such window in a 256 x 256 input put 0.17% of the outputs beyond 1e-3. The test
# input is therefore chosen to have no such window (_tie_free_test_input); then onnxruntime and
# PyTorch agree to about 2e-5 (segnet-basic, downsample 1 and 3).
_REPRODUCIBILITY_TOLERANCE = {
    "relative_tolerance": 1e-3,
    "absolute_tolerance": 1e-3,
    "mismatched_elements_per_million": 100,
}
# The sample image (cover, sample tensors): a centre crop of at most this many pixels per side.
_SAMPLE_MAX_SIDE = 256
# The test tensors: a centre crop of the sample of at most this many pixels per side at the
# network's resolution (x downsample in the image). A 32 x 32 input to segnet-basic has about 22,000
# pooling windows, of which about 2 are near-ties; a 64 x 64 one has about 8, so a tie-free dither
# is rare there and common here.
_TEST_NETWORK_SIDE = 32
# A pooling window is a near-tie when its two largest inputs are closer than this (relative to the
# largest, at least 1 in absolute terms): ten times the largest rounding difference seen between
# onnxruntime and PyTorch at a window that they resolved differently.
_TIE_MARGIN = 1e-5
_DITHER_SEEDS = 64
_COVER_HEIGHT = 256

_CITATIONS = {
    "segnet": {
        "text": "Badrinarayanan V, Kendall A, Cipolla R. SegNet: A Deep Convolutional Encoder-Decoder "
        "Architecture for Image Segmentation. IEEE TPAMI 39(12), 2017.",
        "doi": "10.1109/TPAMI.2016.2644615",
    },
    "bayesian": {
        "text": "Kendall A, Badrinarayanan V, Cipolla R. Bayesian SegNet: Model Uncertainty in Deep "
        "Convolutional Encoder-Decoder Architectures for Scene Understanding. BMVC 2017.",
        "doi": "10.5244/C.31.57",
    },
    "unet": {
        "text": "Ronneberger O, Fischer P, Brox T. U-Net: Convolutional Networks for Biomedical Image "
        "Segmentation. MICCAI 2015, LNCS 9351.",
        "doi": "10.1007/978-3-319-24574-4_28",
    },
}


@dataclass(frozen=True)
class _Architecture:
    """How a package describes its network: the bioimage.io type, how its decoder upsamples, what to cite."""

    kind: str
    decoder: str
    reference: str
    cite: list[dict[str, str]]


def _architecture(model_name: str) -> _Architecture:
    if model_name == "unet":
        return _Architecture(
            "U-Net",
            "upsamples and concatenates the encoder's features of each level",
            "Ronneberger et al., 2015",
            [_CITATIONS["unet"]],
        )
    bayesian = [_CITATIONS["bayesian"]] if "bayesian" in model_name else []
    return _Architecture(
        "SegNet",
        "upsamples with the encoder's max-pooling indices",
        "Badrinarayanan et al., 2017",
        [_CITATIONS["segnet"], *bayesian],
    )


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------


def _load_model(path: str | Path) -> tuple[nn.Module, OnnxModelInfo, Checkpoint]:
    """The checkpoint's model in eval mode (on the CPU), its ONNX metadata and the checkpoint."""
    checkpoint = Checkpoint.load(path)
    model = checkpoint.load_model(path)
    diameters = checkpoint.reference_diameters
    info = OnnxModelInfo(
        model_name=checkpoint.spec.name,
        class_names=tuple(checkpoint.class_names),
        mean=tuple(map(float, checkpoint.mean)),
        std=tuple(map(float, checkpoint.std)),
        total_stride=checkpoint.spec.total_stride,
        class_diameter=tuple(diameters) if diameters is not None else None,
        class_roles=checkpoint.roles.by_name(checkpoint.class_names),
    )
    return model, info, checkpoint


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter (missing torchvision ops, attribute-type notes, deprecations)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnx_ir", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def model_to_onnx(model: nn.Module, info: OnnxModelInfo, out: str | Path) -> int:
    """Export a segnet ``model`` (eval mode) with dynamic batch, height and width to ``out``.

    ``info`` is stored as the file's metadata. :func:`export_onnx` does this for a checkpoint and
    checks the result; this is for models built in code.

    Returns:
        The ONNX opset version of the graph.
    """
    out = Path(out)
    stride = info.total_stride
    # An example of two images of a few strides: no size of 0 or 1, which torch.export specialises.
    example = torch.randn(2, 3, 2 * stride, 3 * stride)
    dynamic = {index: torch.export.Dim(name) for index, name in enumerate(_DYNAMIC_AXES) if name}
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT],
                dynamic_shapes={"x": dynamic},
                verbose=False,
            )
    except Exception as error:  # the exporter raises many types; the first line says what failed
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SegnetError(f"ONNX export of {info.model_name} failed ({first_line})") from error
    proto = program.model_proto
    # The output's height and width come out as the exporter's symbolic expressions of the input's
    # ("Min(height, 16*...)"); they equal the input's, which is what the file should say.
    for axes in (proto.graph.input[0], proto.graph.output[0]):
        for dim, name in zip(axes.type.tensor_type.shape.dim, _DYNAMIC_AXES):
            if name:
                dim.dim_param = name
    proto.doc_string = (
        f"segnet {info.model_name}: input '{ONNX_INPUT}' is the normalised RGB batch (N, 3, H, W), "
        "(pixel / 255 - mean) / std with mean and std from metadata; output "
        f"'{ONNX_OUTPUT}' is (N, {len(info.class_names)}, H, W) raw class scores."
    )
    onnx.helper.set_model_props(proto, info.to_metadata())
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(out, f"could not write the ONNX model ({error.strerror or error})") from error
    write_atomically(out, lambda temporary: onnx.save(proto, temporary), "ONNX model")
    return next(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))


@dataclass(frozen=True)
class ExportCheck:
    """How closely onnxruntime reproduces PyTorch (see :func:`check_onnx_export`).

    Attributes:
        max_difference: largest |logit difference| with PyTorch following onnxruntime's pooling choices.
        decisions: 2x2 pooling windows compared, over all inputs and encoder stages.
        differing_decisions: windows where onnxruntime picked another element than PyTorch; each is
            a near-tie, its value within rounding of PyTorch's maximum.
    """

    max_difference: float
    decisions: int
    differing_decisions: int


def _pooling_indices_session(out: Path, stages: int) -> onnxruntime.InferenceSession:
    """An onnxruntime session of ``out`` that also returns each encoder pooling's indices.

    The exporter writes every 2x2 max-pool as an ONNX ``MaxPool`` with an ``Indices`` output, in
    stage order; those outputs are added as graph outputs.
    """
    proto = onnx.load(out)
    pools = [
        node
        for node in proto.graph.node
        if node.op_type == "MaxPool"
        and len(node.output) == 2
        and any(attribute.name == "kernel_shape" and list(attribute.ints) == [2, 2] for attribute in node.attribute)
    ]
    if len(pools) != stages:
        raise SegnetError(f"{out}: expected {stages} 2x2 max-pools with indices in the ONNX graph, found {len(pools)}")
    proto.graph.output.extend(
        onnx.helper.make_tensor_value_info(node.output[1], onnx.TensorProto.INT64, None) for node in pools
    )
    return onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _plane_indices(onnx_indices: np.ndarray) -> torch.Tensor:
    """ONNX ``MaxPool`` indices (over the flattened ``(N, C, H, W)`` input) as PyTorch's, per ``(n, c)`` plane."""
    batch, channels, height, width = onnx_indices.shape
    plane = 4 * height * width  # 2x2/2 pooling of an input padded to an exact multiple
    planes = np.arange(batch * channels).reshape(batch, channels, 1, 1)
    if not np.array_equal(onnx_indices // plane, np.broadcast_to(planes, onnx_indices.shape)):
        raise SegnetError("the ONNX max-pool indices are not laid out over (N, C, H, W) as the ONNX spec says")
    return torch.from_numpy(onnx_indices % plane)


@contextlib.contextmanager
def _pooling_follows(model: nn.Module, decisions: Sequence[torch.Tensor]) -> Iterator[list[tuple[torch.Tensor, ...]]]:
    """Make each encoder max-pool of ``model`` take the elements at ``decisions`` (per-plane indices).

    Yields a list that gets, per pooling, ``(own maxima, own indices, values taken, indices taken)``.
    """
    record: list[tuple[torch.Tensor, ...]] = []

    def take(forced: torch.Tensor) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        def hook(
            module: nn.Module, inputs: tuple[torch.Tensor], output: tuple[torch.Tensor, torch.Tensor]
        ) -> tuple[torch.Tensor, torch.Tensor]:
            taken = inputs[0].flatten(2).gather(2, forced.flatten(2)).view_as(forced)
            record.append((*output, taken, forced))
            return taken, forced

        return hook

    handles = [pool.register_forward_hook(take(forced)) for pool, forced in zip(model.unpooled_pools(), decisions)]
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


def check_onnx_export(
    model: nn.Module, out: str | Path, shapes: Sequence[tuple[int, int, int]] = _CHECK_SHAPES, seed: int = 0
) -> ExportCheck:
    """Check that onnxruntime computes what PyTorch computes, on random inputs ``(batch, height, width)``.

    A plain comparison of logits is not a sound test for SegNet: a max-pool whose two largest
    inputs differ by less than float32 rounding picks its index by that rounding, and unpooling
    then moves a value by a pixel, which changes logits by up to ~0.1 nearby. PyTorch itself does
    this between its own convolution backends (oneDNN or not). So the check runs PyTorch with
    onnxruntime's pooling choices and requires (1) the logits to agree to 1e-4 (absolute and
    relative), and (2) every choice onnxruntime made to be a maximum, within that tolerance, of
    PyTorch's pooling input. Together these say the graph is SegNet up to float32 rounding and
    the resolution of near-ties.

    Args:
        model: a :class:`segnet.model.SegNet` in eval mode, the one ``out`` was exported from.
        out: its ONNX file.

    Raises:
        SegnetError: the graph does not reproduce the model.
    """
    out = Path(out)
    session = _pooling_indices_session(out, len(model.unpooled_pools()))
    generator = torch.Generator().manual_seed(seed)
    max_difference, decisions, differing = 0.0, 0, 0
    for batch, height, width in shapes:
        inputs = torch.randn(batch, 3, height, width, generator=generator)
        logits, *onnx_indices = session.run(None, {ONNX_INPUT: inputs.numpy()})
        with torch.no_grad(), _pooling_follows(model, [_plane_indices(indices) for indices in onnx_indices]) as record:
            expected = model(inputs).numpy()
        where = f"{out}: on a {batch}x3x{height}x{width} input"
        if logits.shape != expected.shape or not np.allclose(
            logits, expected, rtol=_EXPORT_TOLERANCE, atol=_EXPORT_TOLERANCE
        ):
            difference = np.abs(logits - expected).max() if logits.shape == expected.shape else f"shape {logits.shape}"
            raise SegnetError(
                f"{where}, onnxruntime's logits differ from PyTorch's by {difference}; the export is wrong"
            )
        for own_maxima, own_indices, taken, taken_indices in record:
            gap = (own_maxima - taken).abs()
            if (gap > _EXPORT_TOLERANCE * own_maxima.abs().clamp(min=1)).any():
                raise SegnetError(
                    f"{where}, an ONNX max-pool picked a value {gap.max().item():.3g} below the maximum; the export is wrong"
                )
            decisions += own_indices.numel()
            differing += int((own_indices != taken_indices).sum())
        max_difference = max(max_difference, float(np.abs(logits - expected).max()))
    return ExportCheck(max_difference, decisions, differing)


def export_onnx(checkpoint: str | Path, out: str | Path) -> Path:
    """Export a checkpoint's model to an ONNX file for ``segnet predict --onnx`` or any onnxruntime.

    The graph's input ``input`` is the normalised float32 batch ``(N, 3, H, W)`` with dynamic N, H
    and W (any size: the model pads to a multiple of its stride inside); its output ``logits`` is
    ``(N, C, H, W)``. Class names and roles, normalisation (mean/std on [0, 1]), stride and the
    reference cell sizes are stored in the file's ``metadata_props``
    (:class:`segnet.predict.OnnxModelInfo`). Dropout is off (eval mode), so Monte Carlo dropout
    needs the PyTorch checkpoint. The export is checked with
    :func:`check_onnx_export`.

    Returns:
        ``out``.

    Raises:
        CheckpointError: unreadable checkpoint; SegnetError: the export or its check failed;
        DataError: ``out`` cannot be written, or is the checkpoint itself (:class:`~segnet.core.errors.OutputError`).
    """
    out = Path(out)
    refuse_overwriting([out], [checkpoint])
    model, info, _ = _load_model(checkpoint)
    model_to_onnx(model, info, out)
    check_onnx_export(model, out)
    return out


# --------------------------------------------------------------------------------------------
# bioimage.io
# --------------------------------------------------------------------------------------------


def _sample_image(sample: str | Path | None) -> np.ndarray:
    """The image the package shows: ``sample``, or a synthetic image."""
    if sample is None:
        return generate_sample(_SAMPLE_MAX_SIDE, _SAMPLE_MAX_SIDE, np.random.default_rng(0))[0]
    return read_image(sample)


def _centre_crop(image: np.ndarray, max_side: int, stride: int, source: str | Path | None) -> np.ndarray:
    """The centre crop of ``image`` with sides at most ``max_side`` and multiples of ``stride``."""
    sides = [min(side, max_side) // stride * stride for side in image.shape[:2]]
    if min(sides) == 0:
        raise DataError(source, f"image {image.shape[1]}x{image.shape[0]} is smaller than the model's stride {stride}")
    top, left = ((side - crop) // 2 for side, crop in zip(image.shape[:2], sides))
    return np.ascontiguousarray(image[top : top + sides[0], left : left + sides[1]])


def _near_tie_windows(model: nn.Module, normalized: np.ndarray) -> int:
    """How many encoder max-pool windows of ``model`` on ``normalized`` are near-ties (:data:`_TIE_MARGIN`).

    Windows whose maximum is about 0 (all inputs clipped by the ReLU) are harmless: whichever index
    a runtime picks, it unpools about 0.
    """
    found = []

    def count(module: nn.Module, inputs: tuple[torch.Tensor], output: Any) -> None:
        windows = torch.nn.functional.unfold(inputs[0].flatten(0, 1)[:, None], kernel_size=2, stride=2)
        top = windows.topk(2, dim=1).values
        scale = top[:, 0].abs().clamp(min=1)
        found.append(int(((top[:, 0] - top[:, 1] < _TIE_MARGIN * scale) & (top[:, 0].abs() > _TIE_MARGIN)).sum()))

    handles = [pool.register_forward_hook(count) for pool in model.unpooled_pools()]
    try:
        with torch.no_grad():
            model(torch.from_numpy(normalized))
    finally:
        for handle in handles:
            handle.remove()
    return sum(found)


def _tie_free_test_input(model: nn.Module, image: np.ndarray, mean_255: np.ndarray, std_255: np.ndarray) -> np.ndarray:
    """The test input ``(1, 3, H, W)`` float32 on 0..255: ``image`` plus a dither of under half a grey
    level, seeded so that no max-pool window is a near-tie, so every runtime reproduces the output.

    Raises:
        SegnetError: no seed of :data:`_DITHER_SEEDS` gives a tie-free input.
    """
    raw = image.transpose(2, 0, 1)[None].astype(np.float32)
    for seed in range(_DITHER_SEEDS):
        dither = np.random.default_rng(seed).uniform(-0.49, 0.49, raw.shape).astype(np.float32)
        candidate = np.clip(raw + dither, 0.0, 255.0)
        if _near_tie_windows(model, (candidate - mean_255) / std_255) == 0:
            return candidate
    raise SegnetError(
        f"no test input without near-tie poolings in {_DITHER_SEEDS} dithers of the test image; pass another --sample"
    )


def _cover(image: np.ndarray, mask: np.ndarray, num_classes: int) -> Image.Image:
    """The image and its colour-coded prediction side by side, :data:`_COVER_HEIGHT` pixels tall."""
    pair = Image.fromarray(np.concatenate([image, colorize(mask, num_classes)], axis=1))
    width = round(pair.width * _COVER_HEIGHT / pair.height)
    return pair.resize((width, _COVER_HEIGHT), Image.Resampling.LANCZOS)


def _readme(info: OnnxModelInfo, checkpoint: Checkpoint, test_shape: tuple[int, ...]) -> str:
    classes = "\n".join(f"| {index} | {name} |" for index, name in enumerate(info.class_names))
    best = checkpoint.best_score
    best_text = f"{best:.4f}" if best is not None else "not recorded"
    epochs = checkpoint.epoch if checkpoint.epoch is not None else "not recorded"
    bayesian = "bayesian" in info.model_name
    architecture = _architecture(info.model_name)
    return f"""# {architecture.kind} ({info.model_name}) for darkfield microscopy

Semantic segmentation of darkfield microscopy images, pixel by pixel, into the classes below;
trained and exported with the `segnet` toolkit.

| index | class |
|---|---|
{classes}

## Model

`{info.model_name}` is an encoder-decoder network whose decoder {architecture.decoder}
({architecture.reference}). The network pads its input to a multiple of
{info.total_stride} pixels internally, so any image size works; tiling tools should use tiles that
are multiples of {info.total_stride} pixels so that every tile sees the same pooling grid.
{"Dropout is switched off in these weights: Monte Carlo dropout uncertainty needs the segnet checkpoint and `segnet predict --mc-samples`." if bayesian else ""}

## Inputs and outputs

* Input `raw`: RGB image, float32 values 0..255, axes (batch, channel, y, x). Preprocessing
  (declared in `rdf.yaml`): per channel `(x - mean) / std` with mean
  {[round(255 * m, 4) for m in info.mean]} and std {[round(255 * s, 4) for s in info.std]}.
* Output `probabilities`: per-class probabilities (softmax over the channel axis), same size as the input.
  The class of a pixel is the channel with the highest probability.

Weights are given as ONNX (`weights.onnx`, runs in onnxruntime alone) and as a PyTorch state dict
(`weights.pt`, built by `segnet.model.build_model_from_kwargs` from the kwargs in `rdf.yaml`, which needs the segnet package).

## Training

Epochs: {epochs}; optimiser: {checkpoint.setting("optimizer", "not recorded")};
crop size: {checkpoint.setting("image_size", "not recorded")}; loss: {checkpoint.setting("loss", "not recorded")}.

## Validation

Best validation mean IoU during training: {best_text}. To validate on your own labelled images
(a folder with `images/` and `masks/`), run `segnet evaluate --checkpoint best.pt --data DIR --split all`
with the segnet checkpoint this package was exported from; it reports per-class IoU, Dice, boundary
F1 and the agreement of cell counts. The test tensors (`test_input.npy`, {test_shape[2]}x{test_shape[3]} pixels,
and `test_output.npy`) check that a runtime reproduces these weights. The test input is the test
image plus a dither of under half a grey level, chosen so that no max-pooling window holds two
values within rounding of each other (where runtimes may pick different positions and unpool a
value one pixel apart); so runtimes reproduce it to float32 rounding, within bioimage.io's default
`reproducibility_tolerance`.

## Limitations

Trained for darkfield images of blood with spirochetes; other modalities, stains or magnifications
need retraining. Touching cells are separated by segnet's counting step, not by this network.
"""


def _file_entry(folder: Path, name: str) -> dict[str, str]:
    """A bioimage.io file description: the file name and its SHA-256."""
    digest = hashlib.sha256()
    with (folder / name).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"source": name, "sha256": digest.hexdigest()}


def _tensors(
    info: OnnxModelInfo, files: dict[str, dict[str, str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rdf's input (RGB 0..255, normalised by preprocessing) and output (softmax) tensor descriptions."""
    stride = info.total_stride
    spatial_in = [{"type": "space", "id": axis, "size": {"min": stride, "step": stride}} for axis in ("y", "x")]
    spatial_out = [{"type": "space", "id": axis, "size": {"tensor_id": "raw", "axis_id": axis}} for axis in ("y", "x")]
    normalisation = {
        "axis": "channel",
        "mean": [255.0 * value for value in info.mean],
        "std": [255.0 * value for value in info.std],
    }
    inputs = [
        {
            "id": "raw",
            "description": "RGB image, values 0..255",
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["r", "g", "b"]}, *spatial_in],
            "test_tensor": files["test_input"],
            "sample_tensor": files["sample_input"],
            "data": {"type": "float32", "range": [0.0, 255.0]},
            "preprocessing": [{"id": "fixed_zero_mean_unit_variance", "kwargs": normalisation}],
        }
    ]
    outputs = [
        {
            "id": "probabilities",
            "description": "class probabilities per pixel",
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": list(info.class_names)}, *spatial_out],
            "test_tensor": files["test_output"],
            "sample_tensor": files["sample_output"],
            "data": {"type": "float32", "range": [0.0, 1.0]},
            "postprocessing": [{"id": "softmax", "kwargs": {"axis": "channel"}}],
        }
    ]
    return inputs, outputs


def _weights(checkpoint: Checkpoint, opset: int, files: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The rdf's two weights formats: the PyTorch state dict (rebuilt from the model spec) and its ONNX child."""
    return {
        "pytorch_state_dict": {
            **files["state_dict"],
            "architecture": {
                "callable": "build_model_from_kwargs",
                "import_from": "segnet.model.networks",
                "kwargs": checkpoint.spec.to_dict(),  # the whole spec (downsample included), as the checkpoint stores it
            },
            "pytorch_version": torch.__version__.split("+")[0],
        },
        "onnx": {
            **files["onnx"],
            "opset_version": opset,
            "parent": "pytorch_state_dict",
            "comment": "exported with torch.onnx (dynamo); input is the normalised image",
        },
    }


def _rdf(
    info: OnnxModelInfo,
    checkpoint: Checkpoint,
    authors: Sequence[str],
    license_id: str,
    opset: int,
    parameter_count: int,
    files: dict[str, dict[str, str]],
) -> dict[str, Any]:
    """The ``rdf.yaml`` content (bioimage.io model format 0.5); ``files`` maps roles to :func:`_file_entry`."""
    # bioimageio.spec: the optional [export] extra, loaded only to export
    from bioimageio.spec.model.v0_5 import ModelDescr

    architecture = _architecture(info.model_name)
    inputs, outputs = _tensors(info, files)
    return {
        "format_version": ModelDescr.implemented_format_version,
        "type": "model",
        "name": f"{architecture.kind} ({info.model_name}) for darkfield microscopy",
        "description": f"Segments darkfield microscopy images into {', '.join(info.class_names)} ({architecture.kind}).",
        "authors": [{"name": name} for name in authors],
        "cite": architecture.cite,
        "license": license_id,
        "documentation": files["documentation"],
        "covers": [files["cover"]],
        "tags": ["segmentation", "semantic-segmentation", "2d", "darkfield", "microscopy", "segnet", "onnx", "pytorch"],
        "inputs": inputs,
        "outputs": outputs,
        "weights": _weights(checkpoint, opset, files),
        "config": {
            "bioimageio": {
                "reproducibility_tolerance": [_REPRODUCIBILITY_TOLERANCE],
                "architecture_type": architecture.kind,
                "architecture_description": f"{info.model_name}: encoder-decoder, the decoder {architecture.decoder}",
                "modality": "darkfield microscopy",
                "target_structure": list(info.class_names[1:]),
                "task": "semantic segmentation",
                "model_parameter_count": parameter_count,
            },
            "segnet": {"model": info.model_name, "epoch": checkpoint.epoch, "best_score": checkpoint.best_score},
        },
    }


def _check_reproduced(onnx_path: Path, normalized: np.ndarray, probabilities: np.ndarray) -> None:
    """Refuse test tensors that onnxruntime does not reproduce within :data:`_REPRODUCIBILITY_TOLERANCE`."""
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    reproduced = softmax(session.run(None, {ONNX_INPUT: normalized})[0], axis=1)
    tolerance = _REPRODUCIBILITY_TOLERANCE
    mismatched = ~np.isclose(
        reproduced, probabilities, rtol=tolerance["relative_tolerance"], atol=tolerance["absolute_tolerance"]
    )
    if mismatched.mean() * 1e6 > tolerance["mismatched_elements_per_million"]:
        raise SegnetError(
            f"{onnx_path}: onnxruntime reproduces the test output only at {mismatched.mean():.2%} mismatched values"
        )


def validate_bioimageio(rdf_path: str | Path) -> None:
    """Validate a bioimage.io package with ``bioimageio.spec``, offline.

    File hashes and readability are checked on the local files; no URL is fetched (the package
    refers to none) and GitHub user names are not looked up (none are given).

    Raises:
        SegnetError: the description is invalid; the message lists the errors.
    """
    # bioimageio.spec: the optional [export] extra, loaded only to check a package
    from bioimageio.spec import InvalidDescr, load_description

    rdf_path = Path(rdf_path)
    description = load_description(rdf_path, perform_io_checks=True)
    summary = description.validation_summary
    if isinstance(description, InvalidDescr) or summary.status == "failed":
        errors = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for detail in summary.details for e in detail.errors)
        raise SegnetError(f"{rdf_path}: bioimage.io validation failed: {errors or summary.status}")


_PACKAGE_FILES = {
    "onnx": "weights.onnx",
    "state_dict": "weights.pt",
    "test_input": "test_input.npy",
    "test_output": "test_output.npy",
    "sample_input": "sample_input.png",
    "sample_output": "sample_output.tif",
    "cover": "cover.png",
    "documentation": "README.md",
}
"""The files of a bioimage.io package by their role in ``rdf.yaml``."""
_RDF_FILE = "rdf.yaml"


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` to exactly ``path`` (given a name, it appends ``.npy``)."""
    with path.open("wb") as handle:
        np.save(handle, array)


def _write_weights(model: nn.Module, info: OnnxModelInfo, out_dir: Path) -> int:
    """The package's ONNX file (checked against PyTorch) and state dict; returns the ONNX opset."""
    opset = model_to_onnx(model, info, out_dir / _PACKAGE_FILES["onnx"])
    check_onnx_export(model, out_dir / _PACKAGE_FILES["onnx"])
    write_atomically(
        out_dir / _PACKAGE_FILES["state_dict"], lambda temporary: torch.save(model.state_dict(), temporary), "weights"
    )
    return opset


def _write_examples(
    model: nn.Module, info: OnnxModelInfo, spec: ModelSpec, image: np.ndarray, out_dir: Path, sample: str | Path | None
) -> tuple[int, ...]:
    """The test tensors (reproduced by onnxruntime), the sample and its probabilities, and the cover;
    returns the test input's shape."""
    import tifffile  # a bioimage.io package dependency, like bioimageio.spec itself

    names = _PACKAGE_FILES
    mean_255, std_255 = (
        np.asarray(values, dtype=np.float32)[:, None, None] * 255.0 for values in (info.mean, info.std)
    )

    def probabilities_of(raw: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return softmax(model(torch.from_numpy((raw - mean_255) / std_255)).numpy(), axis=1).astype(np.float32)

    test_input = _tie_free_test_input(
        model, _centre_crop(image, _TEST_NETWORK_SIDE * spec.downsample, spec.total_stride, sample), mean_255, std_255
    )
    test_output = probabilities_of(test_input)
    _check_reproduced(out_dir / names["onnx"], (test_input - mean_255) / std_255, test_output)
    for role, tensor in (("test_input", test_input), ("test_output", test_output)):
        write_atomically(
            out_dir / names[role], lambda temporary, tensor=tensor: _save_npy(temporary, tensor), "test tensor"
        )
    sample_output = probabilities_of(image.transpose(2, 0, 1)[None].astype(np.float32))[0]
    cover = _cover(image, sample_output.argmax(axis=0).astype(np.uint8), len(info.class_names))
    write_atomically(
        out_dir / names["sample_input"],
        lambda temporary: Image.fromarray(image).save(temporary, format="PNG"),
        "sample",
    )
    write_atomically(
        out_dir / names["sample_output"],
        lambda temporary: tifffile.imwrite(temporary, sample_output, photometric="minisblack"),
        "sample output",
    )
    write_atomically(out_dir / names["cover"], lambda temporary: cover.save(temporary, format="PNG"), "cover")
    return test_input.shape


def export_bioimageio(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    sample: str | Path | None = None,
    authors: Sequence[str] | None = None,
    license_id: str = "CC-BY-4.0",
) -> Path:
    """Write a bioimage.io model package (format 0.5) for a checkpoint into ``out_dir``; validate it.

    Files: ``rdf.yaml``, ``weights.onnx`` (as :func:`export_onnx`), ``weights.pt`` (state dict for
    ``segnet.model.build_model_from_kwargs``), the sample (a centre crop of ``sample``, or of a
    synthetic image, at most 256 pixels a side and a multiple of the stride) and its class
    probabilities from PyTorch (``sample_input.png``; ``sample_output.tif``, ``(C, H, W)``),
    ``test_input.npy`` (``(1, 3, H, W)`` float32 on 0..255: the sample's centre, 32 pixels a side
    at the network's resolution, dithered so that no pooling is a near-tie), ``test_output.npy``
    (its probabilities, ``(1, C, H, W)``; onnxruntime is checked to reproduce them), ``cover.png``
    (the sample and its colour-coded prediction side by side) and ``README.md``.

    Args:
        checkpoint: a segnet checkpoint.
        out_dir: the package folder (created; files of the same names are replaced).
        sample: an image for the test tensors and the cover; a real one shows the model best.
        authors: names for the package's ``authors`` (default: the login name).
        license_id: SPDX licence of the weights.

    Returns:
        The path of ``rdf.yaml``.

    Raises:
        CheckpointError, DataError, SegnetError: unreadable checkpoint or sample, failed export,
            or a package that does not validate.
    """
    out_dir = Path(out_dir)
    refuse_overwriting([out_dir / name for name in (*_PACKAGE_FILES.values(), _RDF_FILE)], [checkpoint, sample])
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(out_dir, f"cannot create the package folder ({error.strerror or error})") from error
    model, info, loaded = _load_model(checkpoint)
    names = _PACKAGE_FILES
    opset = _write_weights(model, info, out_dir)
    image = _centre_crop(_sample_image(sample), _SAMPLE_MAX_SIDE, loaded.spec.total_stride, sample)
    test_shape = _write_examples(model, info, loaded.spec, image, out_dir, sample)
    write_text_atomically(out_dir / names["documentation"], _readme(info, loaded, test_shape), "README")

    files = {role: _file_entry(out_dir, name) for role, name in names.items()}
    parameter_count = sum(parameter.numel() for parameter in model.parameters())
    rdf = _rdf(info, loaded, authors or [getpass.getuser()], license_id, opset, parameter_count, files)
    rdf_path = out_dir / _RDF_FILE
    write_text_atomically(rdf_path, yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True), "package description")
    validate_bioimageio(rdf_path)
    return rdf_path
