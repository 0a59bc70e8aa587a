"""Score a trained model on labelled images: predict every image, then score the masks as ``segnet score`` does.

``evaluate_run`` predicts every image of a dataset (or of the run's validation split) at its own
full size, never resized, into ``OUT/predictions/STEM.png`` (default ``OUT``: ``RUN/evaluation/``),
then scores those masks against the dataset's with :func:`segnet.evaluate.score.score_pairs`, which writes
``metrics.json`` and ``per_image.csv`` (their contents: :mod:`segnet.evaluate.metrics`, :mod:`segnet.evaluate.score`). ``metrics.json``'s
``evaluation`` section adds what was evaluated and how: the checkpoint, its model and epoch, the
data and split, and the inference options.

The report (``segnet.report``) is drawn from these files alone, without running the model again;
the tables of scores are laid out by ``segnet.evaluate.tables``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segnet.core.errors import DataError, SegnetError
from segnet.core.outputs import output_lock, refuse_package_folder
from segnet.core.runfiles import EVALUATION_FOLDER, SPLIT_FILE
from segnet.data.classes import MIN_AREA
from segnet.data.pairs import Pair, load_pair, select_pairs
from segnet.evaluate.metrics import EvaluationMetrics
from segnet.evaluate.score import (
    MASK_VALUES,
    PREDICTIONS_FOLDER,
    ScoredPair,
    ScoreSettings,
    check_truth_values,
    make_folder,
    save_prediction,
    score_pairs,
)
from segnet.model.builtin import is_builtin, resolve_checkpoint
from segnet.model.checkpoint import Checkpoint
from segnet.model.options import DEFAULT_INFERENCE, InferenceOptions
from segnet.model.predictor import Predictor


def evaluate_run(
    checkpoint: str | Path,
    data: str | Path,
    *,
    split: str | None = None,
    out: str | Path | None = None,
    options: InferenceOptions = DEFAULT_INFERENCE,
    ignore_index: int | None = None,
    min_area: int = MIN_AREA,
    progress: bool = True,
) -> EvaluationMetrics:
    """Evaluate ``checkpoint`` on the labelled images in ``data`` and write the evaluation folder.

    Args:
        checkpoint: a checkpoint inside its run folder (``RUN/best.pt``); ``RUN`` holds split.json.
            Or a built-in model's name, which has no run folder: it is scored on every image
            (``split`` None or ``"all"``), into the folder ``out`` names.
        data: a dataset folder (``images/`` and ``masks/``).
        split: ``"val"`` or ``"train"``: the images listed under that name in ``RUN/split.json``;
            ``"all"``: every image in ``data``; ``None``: ``"val"`` (``"all"`` for a built-in model).
        out: the evaluation folder; default ``RUN/evaluation`` (required for a built-in model).
        options: how the model is run (device, tiles, TTA, ...; :class:`~segnet.predict.InferenceOptions`).
        ignore_index: a mask value whose pixels are left out of every score (unlabelled pixels).
        min_area: objects smaller than this many pixels are not counted.
        progress: show a progress bar over the images.

    Returns:
        The metrics written to ``metrics.json``.
    """
    checkpoint = resolve_checkpoint(checkpoint)
    split = _split_of(checkpoint, split, out)
    run_dir = checkpoint.parent
    out_dir = Path(out) if out is not None else run_dir / EVALUATION_FOLDER
    refuse_package_folder(out_dir)  # a built-in model's "run folder" is the installed package
    with output_lock(out_dir):  # two evaluations into one folder would mix their predictions
        return _predict_and_score(checkpoint, data, split, out_dir, options, ignore_index, min_area, progress)


def _split_of(checkpoint: Path, split: str | None, out: str | Path | None) -> str:
    """The split to score: as given, else ``val``; a built-in model has no run folder, so every image, into ``out``."""
    if not is_builtin(checkpoint):
        return split or "val"
    if split not in (None, "all"):
        raise SegnetError(f"{checkpoint.stem}: a built-in model has no held-out split; use --split all")
    if out is None:
        raise SegnetError(f"{checkpoint.stem}: name a folder for the evaluation of a built-in model with --out DIR")
    return "all"


def _predict_and_score(
    checkpoint: Path,
    data: str | Path,
    split: str,
    out_dir: Path,
    options: InferenceOptions,
    ignore_index: int | None,
    min_area: int,
    progress: bool,
) -> EvaluationMetrics:
    """:func:`evaluate_run`'s work, in its locked output folder."""
    run_dir = checkpoint.parent
    pairs = select_pairs(data, split, run_dir)
    loaded = Checkpoint.load(checkpoint)
    if split == "val":
        _refuse_training_images(pairs, loaded, run_dir / SPLIT_FILE)
    predictor = Predictor.from_loaded(loaded, checkpoint, options)
    provenance, palette = _provenance(checkpoint, loaded), loaded.palette
    del loaded  # the model holds its weights now: the checkpoint's copy is freed
    settings = ScoreSettings(tuple(predictor.class_names), predictor.roles, ignore_index, min_area, palette)
    prediction_dir = make_folder(out_dir / PREDICTIONS_FOLDER)
    scored = []
    for pair in tqdm(pairs, desc="evaluating", unit="image", disable=not progress):
        image, _ = load_labelled_pair(pair, len(settings.class_names), ignore_index, settings.palette)
        try:
            pred = predictor.predict(image)
        except SegnetError as error:
            raise SegnetError(f"{pair.image}: {error}") from error
        save_prediction(pred, prediction_dir / f"{pair.stem}.png")
        scored.append(ScoredPair(pair.stem, pair.mask, prediction_dir / f"{pair.stem}.png", pair.image))
    evaluation = {
        **provenance,
        "data": str(data),
        "split": split,
        **options.to_dict(),
        "device": str(predictor.device),
    }
    return score_pairs(scored, settings, out_dir, evaluation, progress=progress)


def _refuse_training_images(pairs: Sequence[Pair], checkpoint: Checkpoint, split_file: Path) -> None:
    """A split that calls images held out which the checkpoint trained on was edited since: refused."""
    trained = set(checkpoint.training_images or ())
    seen = sorted(pair.stem for pair in pairs if pair.stem in trained)
    if seen:
        raise DataError(
            split_file,
            f"lists {len(seen)} image(s) the checkpoint was trained on as held out ({', '.join(seen[:5])}): it was changed after "
            "training; evaluate with --split all, or train again",
        )


def _provenance(path: Path, checkpoint: Checkpoint) -> dict:
    """What was evaluated: the checkpoint, its model, epoch, save time and logit offsets
    (:mod:`segnet.train.calibration`; ``None``: uncalibrated)."""
    return {
        "checkpoint": str(path),
        "model": checkpoint.spec.name,
        "epoch": checkpoint.epoch,
        "checkpoint_saved": _file_time(path),
        "logit_offsets": checkpoint.logit_offsets,
    }


def load_labelled_pair(
    pair: Pair,
    num_classes: int,
    ignore_index: int | None = None,
    palette: dict[int, list[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read an image and its mask, whose values must be class ids or ``ignore_index``."""
    if ignore_index is None:
        return load_pair(pair, num_classes, palette)
    image, mask = load_pair(pair, MASK_VALUES, palette)
    return image, check_truth_values(mask, pair.mask, num_classes, ignore_index)


def _file_time(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).astimezone().isoformat(timespec="seconds")
