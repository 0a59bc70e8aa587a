"""Segment a whole image with one model (:class:`Predictor`) or several (:class:`Ensemble`).

Windows, views, softmax and blending are numpy, so the same pipeline runs any
:class:`~segnet.predict.backends.InferenceBackend`. Monte Carlo dropout (Bayesian SegNet, Kendall
et al. 2015) keeps the dropout layers sampling at test time and averages ``mc_samples``
stochastic passes; their spread shows up as predictive entropy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import softmax

from segnet.core.errors import OutOfMemory, SegnetError, is_out_of_memory, out_of_memory
from segnet.data.classes import ClassRoles
from segnet.data.dataset import normalize_array
from segnet.data.pairs import class_mask
from segnet.model.backends import InferenceBackend, OnnxBackend, TorchBackend
from segnet.model.options import DEFAULT_INFERENCE, InferenceOptions
from segnet.model.scale import rescaler
from segnet.model.windows import (
    TileProgress,
    _apply_view,
    _dihedral_views,
    _undo_view,
    gaussian_importance_weights,
    sliding_window_starts,
)

if TYPE_CHECKING:
    from torch import nn

    from segnet.model.checkpoint import Checkpoint


class Predictor:
    """Segment whole images with a trained model.

    Args:
        model: a PyTorch model returning logits ``(N, C, H, W)`` for inputs ``(N, 3, H, W)`` of any
            size (moved to ``options.device``), or an :class:`InferenceBackend` such as
            :class:`OnnxBackend` (see :meth:`from_onnx`; it chose its device when built).
        class_names: one name per output class, in index order.
        mean, std: per-channel normalisation on images scaled to [0, 1], as stored in the checkpoint.
        options: tiling, TTA, Monte Carlo samples, batch and device (:class:`InferenceOptions`).
        roles: which class is the background and which are counted how (``segnet.plan.config.ClassRoles``);
            ``None``: the darkfield roles of the classes so named.
        reference_diameters: per class, the median object diameter of the model's training masks
            (``class_diameter`` of the checkpoint's fingerprint), which ``options.diameter`` scales
            images to (:mod:`segnet.predict.scale`); ``None``: not recorded.
    """

    def __init__(
        self,
        model: nn.Module | InferenceBackend,
        class_names: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        options: InferenceOptions = DEFAULT_INFERENCE,
        roles: ClassRoles | None = None,
        reference_diameters: Sequence[float | None] | None = None,
    ) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise SegnetError(f"normalisation needs 3 channel means and stds, got {list(mean)} and {list(std)}")
        if isinstance(model, InferenceBackend):
            if options.mc_samples > 0 and not model.samples_dropout:
                raise SegnetError(
                    f"Monte Carlo dropout needs a PyTorch checkpoint of a bayesian model; {model.device} runs without dropout"
                )
            self.backend = model
        else:
            from segnet.core.distributed import resolve_device

            self.backend = TorchBackend(model, resolve_device(options.device), mc_dropout=options.mc_samples > 0)
        model_classes = self.backend.num_classes
        if model_classes is not None and model_classes != len(class_names):
            raise SegnetError(
                f"the model predicts {model_classes} classes but {len(class_names)} class names were given"
            )
        self.class_names = list(class_names)
        self.roles = roles if roles is not None else ClassRoles.of(self.class_names)
        self.options = options
        # The model pads its input to a multiple of this and pools on that grid (_predict_tiled).
        self.stride: int = self.backend.stride
        # segnet.data.normalize_array takes mean/std on 0..255 (training does the same).
        self.mean_255 = np.asarray(mean, dtype=np.float32) * 255.0
        self.std_255 = np.asarray(std, dtype=np.float32) * 255.0
        self.reference_diameters = list(reference_diameters) if reference_diameters is not None else None
        self.scale = rescaler(_AsGiven(self), options.diameter)
        """With ``options.diameter`` (and a model that records its cells' size), what segments each image at the reference size (its ``factors``: the latest image's)."""

    @classmethod
    def from_checkpoint(cls, path: str | Path, options: InferenceOptions = DEFAULT_INFERENCE) -> Predictor:
        """Build the checkpoint's model with its weights, classes and normalisation."""
        # the checkpoint module loads torch: only for a PyTorch model
        from segnet.model.checkpoint import Checkpoint

        return cls.from_loaded(Checkpoint.load(path), path, options)

    @classmethod
    def from_loaded(
        cls, checkpoint: Checkpoint, path: str | Path, options: InferenceOptions = DEFAULT_INFERENCE
    ) -> Predictor:
        """:meth:`from_checkpoint` for a checkpoint already loaded (``path`` names it in messages)."""
        return cls(
            checkpoint.load_model(path),
            checkpoint.class_names,
            checkpoint.mean,
            checkpoint.std,
            options,
            checkpoint.roles,
            checkpoint.reference_diameters,
        )

    @classmethod
    def from_onnx(cls, path: str | Path, options: InferenceOptions = DEFAULT_INFERENCE) -> Predictor:
        """Run an ONNX file from ``segnet export`` on onnxruntime, without importing torch.

        Classes, their roles, normalisation and the reference cell sizes come from the file's metadata;
        ``options.device`` picks the onnxruntime provider. Monte Carlo dropout is not available:
        the exported graph has no dropout.
        """
        backend = OnnxBackend(path, options.device)
        info = backend.info
        roles = ClassRoles.of(info.class_names, info.class_roles)
        return cls(backend, info.class_names, info.mean, info.std, options, roles, info.class_diameter)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def samples_uncertainty(self) -> bool:
        """Whether the probabilities average stochastic samples (MC dropout), so entropy maps mean something."""
        return self.options.mc_samples > 0

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
        if self.scale is not None:
            return self.scale.predict_proba(image, progress=progress)
        return self._predict_as_given(image, progress)

    def _predict_as_given(self, image: np.ndarray, progress: TileProgress | None) -> np.ndarray:
        try:
            if self.options.tile is None or self._fits_one_tile(image):
                # An image that fits one tile is segmented whole, so the viewer's default tiles and the
                # CLI's whole images agree on it: a padded window turned by TTA would see its padding on
                # other sides than the whole image's views do.
                batch = normalize_array(image, self.mean_255, self.std_255)[None]
                proba = self._average_softmax(batch)[0]
                if progress is not None and self.options.tile is not None:
                    progress(1, 1)
                return proba
            return self._predict_tiled(image, progress)
        except (MemoryError, RuntimeError) as error:
            if not is_out_of_memory(error):
                raise
            raise self._out_of_memory(image.shape[:2]) from error

    def _out_of_memory(self, shape: tuple[int, ...]) -> OutOfMemory:
        """What to lower when an image does not fit: the tile size, or tiling at all."""
        device_type = getattr(self.device, "type", "cpu")
        if self.options.tile is None:
            doing = f"segmenting a whole {shape[1]}x{shape[0]} px image"
            advice = "segment it in tiles of 512 px or smaller (--tile; the napari widget's tile size)"
        else:
            doing = f"at tile size {self.options.tile} px, {self.options.batch_size} tiles per pass"
            advice = "lower the tile size (--tile) or the tiles per pass (--batch-size)"
        return out_of_memory(device_type, doing, advice)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Class index per pixel: ``H x W`` (the argmax of :meth:`predict_proba`; uint8, uint16 beyond 256 classes)."""
        return class_mask(self.predict_proba(image))

    def _window_shape(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The sliding window's ``(height, width)`` for an image of this size (the tile on the stride
        grid, at most the image padded to the stride) and that padded image's ``(height, width)``."""
        stride = self.stride
        tile = max(self.options.tile // stride, 1) * stride
        padded = (-(-height // stride) * stride, -(-width // stride) * stride)
        return (min(tile, padded[0]), min(tile, padded[1])), padded

    def _fits_one_tile(self, image: np.ndarray) -> bool:
        """Whether tiling ``image`` would make one window: the window is the whole padded image."""
        window, padded = self._window_shape(*image.shape[:2])
        return window == padded

    def _predict_tiled(self, image: np.ndarray, progress: TileProgress | None) -> np.ndarray:
        height, width = image.shape[:2]
        # Windows start on multiples of the model's total stride and windows at the bottom/right
        # edge are zero-padded as the model pads a whole image, so every window sees the same
        # pooling grid and the same padding as whole-image inference. SegNet's unpooling puts
        # values back at the argmax positions of that grid; a window shifted off it by a few
        # pixels gives visibly different predictions.
        stride = self.stride
        (tile_h, tile_w), _ = self._window_shape(height, width)  # a small side is one padded window
        windows = [
            (top, left)
            for top in sliding_window_starts(height, tile_h, self.options.overlap, stride)
            for left in sliding_window_starts(width, tile_w, self.options.overlap, stride)
        ]
        importance = gaussian_importance_weights(tile_h, tile_w)
        summed = np.zeros((self.num_classes, height, width), dtype=np.float32)
        weights = np.zeros((height, width), dtype=np.float32)
        batch_size = self.options.batch_size
        for done in range(0, len(windows), batch_size):
            batch_windows = windows[done : done + batch_size]
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
        views = _dihedral_views(self.options.tta)
        samples = max(self.options.mc_samples, 1)
        total: np.ndarray | None = None
        for turns, flip in views:
            # A copy, not ascontiguousarray: a view of a side of 1 pixel counts as contiguous while
            # keeping its negative strides, which torch.from_numpy refuses.
            view = _apply_view(batch, turns, flip).copy()
            for _ in range(samples):
                logits = self.backend(view)
                if not np.isfinite(logits).all():
                    raise SegnetError("the model produced NaN or infinite values; its weights are probably broken")
                proba = _undo_view(softmax(logits.astype(np.float32, copy=False), axis=1), turns, flip)
                total = proba if total is None else total + proba
        return total / np.float32(len(views) * samples)


class _AsGiven:
    """A predictor's own pass at the image's size, which :class:`~segnet.model.scale.Rescaled` calls at each scale."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.class_names = predictor.class_names
        self.roles = predictor.roles
        self.reference_diameters = predictor.reference_diameters

    def predict_proba(self, image: np.ndarray, *, progress: TileProgress | None = None) -> np.ndarray:
        return self.predictor._predict_as_given(image, progress)


class Ensemble:
    """Several :class:`Predictor` s, e.g. the K models of a cross-validation run, as one.

    Each member predicts with its own normalisation (every fold computes it on its own training
    images), tiling, TTA and MC samples; their softmax probabilities are averaged. The members
    must share the class names and roles. Usable wherever a :class:`Predictor` is (``predict_paths``).
    """

    def __init__(self, members: Sequence[Predictor]) -> None:
        if not members:
            raise SegnetError("an ensemble needs at least one model")
        for member in members[1:]:
            if member.class_names != members[0].class_names or member.roles != members[0].roles:
                raise SegnetError(
                    f"ensemble members predict different classes or roles: {members[0].class_names} {members[0].roles} "
                    f"and {member.class_names} {member.roles}"
                )
        self.members = list(members)
        self.class_names = members[0].class_names
        self.roles = members[0].roles

    @classmethod
    def from_checkpoints(cls, paths: Sequence[str | Path], options: InferenceOptions = DEFAULT_INFERENCE) -> Ensemble:
        """One member per checkpoint, each run with ``options``."""
        return cls([Predictor.from_checkpoint(path, options) for path in paths])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def device(self) -> Any:
        return self.members[0].device

    @property
    def reference_diameters(self) -> list[float | None] | None:
        """The first member's (:class:`Predictor`): the folds train on nearly the same images."""
        return self.members[0].reference_diameters

    @property
    def samples_uncertainty(self) -> bool:
        """Always: the members' disagreement (a deep ensemble) shows in the predictive entropy."""
        return True

    def predict_proba(self, image: np.ndarray, *, progress: TileProgress | None = None) -> np.ndarray:
        """The members' mean softmax ``(C, H, W)``; ``progress`` counts the windows of all members."""
        total: np.ndarray | None = None
        for index, member in enumerate(self.members):
            proba = member.predict_proba(image, progress=self._member_progress(progress, index))
            total = proba if total is None else total + proba
        return total / np.float32(len(self.members))

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Class index per pixel: ``H x W`` (the argmax of :meth:`predict_proba`; uint8, uint16 beyond 256 classes)."""
        return class_mask(self.predict_proba(image))

    def _member_progress(self, progress: TileProgress | None, index: int) -> TileProgress | None:
        """Member ``index``'s window progress as a share of all members' windows."""
        if progress is None:
            return None
        members = len(self.members)
        return lambda done, windows: progress(index * windows + done, members * windows)
