"""One model argument to a predictor: a built-in model's name, a checkpoint, an ONNX file or a cross-validation run."""

from __future__ import annotations

from pathlib import Path

from segnet.core.errors import SegnetError
from segnet.model.builtin import DEFAULT_BUILTIN_MODEL, resolve_checkpoint
from segnet.model.options import DEFAULT_INFERENCE, InferenceOptions
from segnet.model.predictor import Ensemble, Predictor
from segnet.train.folds import fold_checkpoints

ONNX_SUFFIX = ".onnx"


def load_predictor(model: str | Path, options: InferenceOptions = DEFAULT_INFERENCE) -> Predictor | Ensemble:
    """The predictor ``model`` names, as a viewer's single model field takes it.

    ``model`` is a built-in model's name (:func:`segnet.model.builtin.resolve_checkpoint`), a file ending
    in ``.onnx`` (run on onnxruntime, torch not imported), a cross-validation run folder (its
    folds' ensemble) or a checkpoint file, run with ``options``.

    Raises:
        SegnetError: the model cannot be read (the message names the file) or an option is invalid.
    """
    path = resolve_checkpoint(model)
    if path.suffix.lower() == ONNX_SUFFIX:
        return Predictor.from_onnx(path, options)
    if path.is_dir():
        return Ensemble.from_checkpoints(fold_checkpoints(path), options)
    return Predictor.from_checkpoint(path, options)


def chosen_model(checkpoint: Path | None, onnx: Path | None) -> Path:
    """The one model ``segnet predict`` runs: ``checkpoint`` or ``onnx``; neither: the default built-in model.

    Raises:
        SegnetError: both are given.
    """
    if checkpoint is not None and onnx is not None:
        raise SegnetError("predict takes one model: --checkpoint RUN/best.pt or --onnx model.onnx, not both")
    return Path(checkpoint or onnx or DEFAULT_BUILTIN_MODEL)
