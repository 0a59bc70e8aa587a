"""Decision calibration: per-class logit offsets that maximise mean IoU on the training images.

Class weights, the Dice term and crops centred on the rare class buy recall of that class during
training, and pay for it in false positives: on the real darkfield images a model trained with the
defaults finds spirochetes at recall 0.64 but precision 0.18. That bias is, to first order, a
constant shift of each class's logit, so it can be undone after training: predict some of the
run's *training* images at full size, find offsets ``b`` (background fixed at 0) for which
``argmax(log p + b)`` gives the highest mean IoU there, and store them in the model
(``SegNet.logit_offsets``), where prediction, evaluation and export pick them up. As with
nnU-Net's choice of post-processing, only training data decides; the validation images stay
held out, so the validation score remains honest.

The search is coordinate ascent over a grid of offsets, on a random sample of pixels per image
(the IoU of a uniform pixel sample estimates the IoU of all pixels). Zero offsets are on the grid,
so calibration never lowers the score on the images it is fitted to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from segnet.core.errors import SegnetError
from segnet.core.outputs import write_text_atomically
from segnet.core.runfiles import CALIBRATION_FILE
from segnet.data.pairs import Pair, load_pair, select_pairs
from segnet.model.checkpoint import Checkpoint
from segnet.model.options import InferenceOptions
from segnet.model.predictor import Predictor
from segnet.train.metrics import PixelMetrics

OFFSET_GRID = np.round(np.arange(-4.0, 4.0 + 1e-9, 0.25), 2)
"""Candidate offsets per class, in nats (a factor of e^4 either way on the odds)."""
CALIBRATION_INFERENCE = InferenceOptions(tta=False, diameter=None)
"""One plain pass per image at its own size (the scale the network learnt): what training's time
budget reserves for calibration (segnet.train.budget), and what ``segnet calibrate`` repeats, so it
refits exactly what training fitted."""
SEARCH_ROUNDS = 2
PIXELS_PER_IMAGE = 65_536


def mean_iou_with_offsets(
    log_proba: np.ndarray, truth: np.ndarray, offsets: np.ndarray, class_names: Sequence[str]
) -> float:
    """Mean IoU of ``argmax(log_proba + offsets)`` against ``truth`` (pixels as rows, classes as columns)."""
    num_classes = len(class_names)
    predicted = np.argmax(log_proba + offsets.astype(np.float32), axis=1)
    confusion = np.bincount(truth * num_classes + predicted, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )
    return PixelMetrics.from_confusion(confusion, class_names).mean_iou or 0.0


def fit_logit_offsets(
    log_proba: np.ndarray, truth: np.ndarray, class_names: Sequence[str]
) -> tuple[np.ndarray, float, float]:
    """Offsets (class 0 fixed at 0) that maximise the mean IoU of ``argmax(log_proba + offsets)``.

    Args:
        log_proba: ``(pixels, classes)`` log-probabilities.
        truth: ``(pixels,)`` true class ids.
        class_names: one per class.

    Returns:
        ``(offsets, mean IoU with zero offsets, mean IoU with the offsets found)``. Among equally
        good offsets the one nearest zero is kept, so a calibrated model stays at zero.
    """
    offsets = np.zeros(len(class_names), dtype=np.float64)
    before = mean_iou_with_offsets(log_proba, truth, offsets, class_names)
    best = before
    for _ in range(SEARCH_ROUNDS):
        for c in range(1, len(class_names)):
            for candidate in sorted(OFFSET_GRID, key=abs):
                trial = offsets.copy()
                trial[c] = candidate
                score = mean_iou_with_offsets(log_proba, truth, trial, class_names)
                if score > best:
                    offsets, best = trial, score
    return offsets, before, best


def _sample_pixels(
    proba: np.ndarray, truth: np.ndarray, rng: np.random.Generator, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``limit`` random pixels of one image: ``(pixels, classes)`` log-probabilities and their truth."""
    flat_truth = truth.reshape(-1)
    chosen = rng.choice(flat_truth.size, size=min(limit, flat_truth.size), replace=False)
    log_proba = np.log(np.maximum(proba.reshape(proba.shape[0], -1)[:, chosen].T, 1e-12)).astype(np.float32)
    return log_proba, flat_truth[chosen].astype(np.int64)


def calibrate_checkpoint(
    checkpoint: str | Path,
    pairs: Sequence[Pair],
    *,
    max_images: int = 32,
    options: InferenceOptions = CALIBRATION_INFERENCE,
    seed: int = 0,
    progress: bool = True,
    decoded: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Fit the logit offsets of ``checkpoint`` on ``pairs`` (training images) and store them in it.

    Fitting starts from the model's raw logits (offsets already in the checkpoint are replaced),
    so calibrating twice gives the same result. The checkpoint is rewritten atomically, with the
    summary under its ``calibration`` key, and the summary also goes to ``calibration.json``
    beside it.

    Args:
        checkpoint: ``RUN/best.pt``.
        pairs: labelled images the model was trained on (never the validation images).
        max_images: use at most this many of ``pairs``, chosen at random with ``seed`` (which also
            picks the pixels sampled from each image).
        options: how the model is run (:class:`~segnet.predict.InferenceOptions`).
        progress: show a progress bar over the images.
        decoded: pairs already decoded, by stem (training passes what its data check read);
            the others are read from their files.

    Returns:
        The summary: ``offsets`` (class name -> offset), ``images``, ``pixels``, and the mean IoU
        on the sampled pixels ``mean_iou_before`` and ``mean_iou_after``.
    """
    decoded = decoded or {}
    if not pairs:
        raise SegnetError(f"{checkpoint}: no training images to calibrate the decisions on")
    checkpoint = Path(checkpoint)
    loaded = Checkpoint.load(checkpoint)
    class_names = list(loaded.class_names)
    model = loaded.load_model(checkpoint)
    model.logit_offsets.zero_()
    predictor = Predictor(model, class_names, loaded.mean, loaded.std, options)
    palette = loaded.palette

    rng = np.random.default_rng(seed)
    pairs = sorted(pairs, key=lambda pair: pair.stem)  # the same images whatever order the caller lists them in
    chosen = [pairs[i] for i in sorted(rng.choice(len(pairs), size=min(max_images, len(pairs)), replace=False))]
    samples, truths = [], []
    for pair in tqdm(chosen, desc="calibrating", unit="image", leave=False, disable=not progress):
        image, truth = decoded[pair.stem] if pair.stem in decoded else load_pair(pair, len(class_names), palette)
        try:
            proba = predictor.predict_proba(image)
        except SegnetError as error:
            raise SegnetError(f"{pair.image}: {error}") from error
        log_proba, sampled_truth = _sample_pixels(proba, truth, rng, PIXELS_PER_IMAGE)
        samples.append(log_proba)
        truths.append(sampled_truth)
    offsets, before, after = fit_logit_offsets(np.concatenate(samples), np.concatenate(truths), class_names)

    summary = {
        "offsets": {name: float(offset) for name, offset in zip(class_names, offsets)},
        "images": [pair.stem for pair in chosen],
        "pixels": int(sum(t.size for t in truths)),
        "mean_iou_before": before,
        "mean_iou_after": after,
    }
    weights = {**loaded.model_state, "logit_offsets": torch.tensor(offsets, dtype=torch.float32)}
    loaded.replace(model_state=weights, calibration=summary).save(checkpoint)
    write_text_atomically(checkpoint.parent / CALIBRATION_FILE, json.dumps(summary, indent=1), "calibration summary")
    return summary


def calibrate_run(checkpoint: str | Path, data: str | Path, **calibrate_options: Any) -> dict[str, Any]:
    """:func:`calibrate_checkpoint` on the training images of the checkpoint's run (``RUN/split.json``) in ``data``.

    ``calibrate_options`` are the keyword arguments of :func:`calibrate_checkpoint`
    (``max_images``, ``options``, ``seed``, ``progress``).
    """
    checkpoint = Path(checkpoint)
    return calibrate_checkpoint(checkpoint, select_pairs(data, "train", checkpoint.parent), **calibrate_options)


def format_calibration(summary: dict[str, Any]) -> str:
    """One line: the offsets and what they did to the mean IoU on the calibration pixels."""
    offsets = ", ".join(f"{name} {offset:+.2f}" for name, offset in summary["offsets"].items())
    return (
        f"decision calibration on {len(summary['images'])} training images: logit offsets {offsets}; "
        f"mean IoU there {summary['mean_iou_before']:.4f} -> {summary['mean_iou_after']:.4f}"
    )
