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

How the model is run (device, tiles, TTA, Monte Carlo samples, batch) is one
:class:`InferenceOptions` that every caller takes, its defaults defined once in
:mod:`segnet.inference` (outside this package, which imports numpy and matplotlib: the CLI builds
its flags from it without them).

The package is split by concern: ``windows`` (window placement, Gaussian weights, TTA views),
``backends`` (PyTorch and onnxruntime), ``predictor`` (:class:`Predictor`, :class:`Ensemble`),
``pictures`` (colours, overlays, entropy), ``files`` (:func:`predict_paths`), ``loading`` (:func:`load_predictor`: one model argument to a predictor) and ``tables`` (counts.csv and
objects.csv, merged over processes under torchrun).

:class:`Ensemble` averages several predictors' softmax (the folds of a cross-validation run).
:func:`predict_paths` runs a :class:`Predictor` (or an ensemble) over files, folders and glob patterns and writes,
per image, the class mask, a colour overlay, (with Monte Carlo dropout) an uncertainty map, an
object label image, one row of cell counts in ``counts.csv`` and one row per object in
``objects.csv`` (:mod:`segnet.measure`).
"""

from segnet.inference import DEFAULT_INFERENCE, InferenceOptions
from segnet.predict.backends import InferenceBackend, OnnxBackend, OnnxModelInfo, TorchBackend
from segnet.predict.files import PredictionSummary, expand_inputs, is_own_output, iter_inputs, predict_paths
from segnet.predict.loading import load_predictor
from segnet.predict.pictures import class_palette, colorize, overlay, predictive_entropy
from segnet.predict.predictor import Ensemble, Predictor
from segnet.predict.tables import SINGLE_PROCESS, ResultTables, Shard
from segnet.predict.windows import TileProgress, gaussian_importance_map, gaussian_importance_weights, sliding_window_starts

__all__ = [
    "DEFAULT_INFERENCE",
    "InferenceOptions",
    "SINGLE_PROCESS",
    "ResultTables",
    "Shard",
    "Ensemble",
    "InferenceBackend",
    "OnnxBackend",
    "OnnxModelInfo",
    "PredictionSummary",
    "Predictor",
    "TileProgress",
    "TorchBackend",
    "class_palette",
    "colorize",
    "expand_inputs",
    "gaussian_importance_map",
    "is_own_output",
    "iter_inputs",
    "load_predictor",
    "gaussian_importance_weights",
    "overlay",
    "predict_paths",
    "predictive_entropy",
    "sliding_window_starts",
]
