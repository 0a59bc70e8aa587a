"""One model argument to a predictor: a built-in model's name, a checkpoint, an ONNX file or a cross-validation run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segnet.builtin import resolve_checkpoint
from segnet.predict.predictor import Ensemble, Predictor

ONNX_SUFFIX = ".onnx"


def load_predictor(model: str | Path, device: str = "auto", **options: Any) -> Predictor | Ensemble:
    """The predictor ``model`` names, as a viewer's single model field takes it.

    ``model`` is a built-in model's name (:func:`segnet.builtin.resolve_checkpoint`), a file ending
    in ``.onnx`` (run on onnxruntime, torch not imported), a cross-validation run folder (its
    folds' ensemble) or a checkpoint file; ``options`` as for :meth:`Predictor.from_checkpoint`.

    Raises:
        SegnetError: the model cannot be read (the message names the file) or an option is invalid.
    """
    path = resolve_checkpoint(model)
    if path.suffix.lower() == ONNX_SUFFIX:
        return Predictor.from_onnx(path, device=device, **options)
    if path.is_dir():
        from segnet.crossval import fold_checkpoints  # imports torch

        return Ensemble.from_checkpoints(fold_checkpoints(path), device=device, **options)
    return Predictor.from_checkpoint(path, device=device, **options)
