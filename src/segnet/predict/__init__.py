"""Stage 6, predict: a model over the user's files, and what it writes for each.

- ``loading``: one model argument (a built-in name, a checkpoint, a cross-validation run, an ONNX
  file) to a :class:`~segnet.model.predictor.Predictor` (:func:`load_predictor`);
- ``files``: :func:`predict_paths` runs it over files, folders and glob patterns and writes, per
  image, the class mask, an annotated overlay, (with Monte Carlo dropout) an uncertainty map, an
  object label image, one row of counts in ``counts.csv`` and one row per object in ``objects.csv``;
- ``pictures``: overlays, outlines, legends and entropy maps; ``tables``: counts.csv and objects.csv,
  merged over processes under torchrun.

The same two functions serve the CLI and the napari plugin.
May import: ``segnet.evaluate`` (counting, measuring), ``segnet.train`` (fold checkpoints) and below.
"""

from segnet.predict.files import predict_paths
from segnet.predict.loading import load_predictor

__all__ = ["load_predictor", "predict_paths"]
