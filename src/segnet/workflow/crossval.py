"""K-fold cross-validation: K models, each scored on the images that the other K-1 trained on.

With few labelled images, one held-out split gives a noisy score; K folds give K scores, their
mean and spread, and a pooled score in which every image is predicted exactly once by a model
that never trained on it. ``segnet train --folds K`` writes::

    RUN/folds.json       K, the seed, and the validation stems of each fold
    RUN/fold_k/          an ordinary run folder (k = 1..K): split.json, best.pt, history.csv, ...
    RUN/cv_summary.json  each metric per fold, its mean and sample standard deviation (ddof=1),
                         and "pooled": the metrics of the fold confusion matrices summed (and,
                         from an evaluation, of the folds' object and presence tallies summed)

``segnet evaluate --checkpoint RUN --data DIR`` scores every fold's ``best.pt`` on its own fold
(``RUN/evaluation/fold_k/``, the usual evaluation files) and summarises them the same way in
``RUN/evaluation/cv_summary.json``. ``segnet predict --checkpoint RUN`` averages the softmax of the K
folds' ``best.pt`` models (:func:`fold_checkpoints`, ``segnet.predict.Ensemble``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segnet.core import distributed as dist
from segnet.core.errors import DataError, SegnetError
from segnet.core.outputs import write_text_atomically
from segnet.core.readback import read_json
from segnet.core.runfiles import BEST_CHECKPOINT, BEST_METRICS_FILE, EVALUATION_FOLDER, LAST_CHECKPOINT, RUN_FILES
from segnet.data.pairs import Pair
from segnet.evaluate.detection import Detection, pooled_detection
from segnet.evaluate.metrics import EvaluationMetrics
from segnet.evaluate.run import evaluate_run
from segnet.evaluate.tables import format_score, text_table
from segnet.plan.config import TrainConfig
from segnet.report.page import write_report
from segnet.train.folds import FOLDS_FILE, FoldsRecord, fold_checkpoints, fold_dir
from segnet.train.loop import train
from segnet.train.metrics import SCORE_LABELS, PixelMetrics, ValidationMetrics
from segnet.train.runfolder import check_training_data

SUMMARY_FILE = "cv_summary.json"


def k_fold_split(pairs: Sequence[Pair], folds: int, seed: int) -> list[list[Pair]]:
    """Deal the pairs, shuffled by ``seed``, into ``folds`` validation folds of near-equal size.

    Reproducible: the order is taken from the sorted stems, as in ``segnet.data.split_pairs``.
    """
    if folds < 2:
        raise SegnetError(f"cross-validation needs at least 2 folds, got {folds}")
    ordered = sorted(pairs, key=lambda p: p.stem)
    if len(ordered) < folds:
        where = ordered[0].image.parent if ordered else Path(".")
        raise DataError(where, f"{len(ordered)} images are too few for {folds} folds")
    order = np.random.default_rng(seed).permutation(len(ordered))
    return [sorted((ordered[i] for i in order[k::folds]), key=lambda p: p.stem) for k in range(folds)]


def read_folds(run_dir: Path, pairs: Sequence[Pair]) -> list[list[Pair]]:
    """The folds recorded in ``RUN/folds.json``, as pairs of the data folder."""
    path = run_dir / FOLDS_FILE
    stems = read_json(path, "folds file", FoldsRecord)["stems"]
    by_stem = {p.stem: p for p in pairs}
    missing = [s for fold in stems for s in fold if s not in by_stem]
    if missing:
        raise DataError(path, f"the folds name images that are not in the data folder: {missing[:5]}")
    return [[by_stem[s] for s in fold] for fold in stems]


def train_cross_validation(
    config: TrainConfig,
    folds: int,
    resume: bool = False,
    overwrite: bool = False,
    progress_log: Callable[..., None] = print,
) -> dict[str, Any]:
    """Train one model per fold into ``config.out``/fold_k and summarise their validation scores.

    Each fold's score is its best epoch's validation metrics (``fold_k/best_metrics.json``).
    ``config.val_fraction`` is not used: fold k validates on the k-th fold. With ``resume``,
    finished folds are kept, an interrupted fold continues from its ``last.pt`` and folds not
    begun are trained. Returns the summary written to ``RUN/cv_summary.json``.
    """
    with dist.determinism(config.deterministic):
        owns_process_group = not dist.is_distributed()
        dist.init_distributed(config.device)  # one process group for all folds
        summary = _train_folds(config, folds, resume, overwrite, progress_log)
    if owns_process_group:
        dist.cleanup()
    return summary


def _train_folds(
    config: TrainConfig, folds: int, resume: bool, overwrite: bool, progress_log: Callable[..., None]
) -> dict[str, Any]:
    """:func:`train_cross_validation` within its process group: the folds, then their summary."""
    run_dir = Path(config.out)
    log = progress_log if dist.is_main_process() else (lambda *a, **k: None)
    pairs, decoded = check_training_data(config, log)
    if resume:
        if not (run_dir / FOLDS_FILE).is_file():
            raise SegnetError(f"{run_dir}: nothing to resume (no {FOLDS_FILE})")
        validation_folds = read_folds(run_dir, pairs)
        if len(validation_folds) != folds:
            raise SegnetError(
                f"{run_dir / FOLDS_FILE}: the run has {len(validation_folds)} folds, but --folds {folds} was given"
            )
    else:
        outputs = (
            run_dir / FOLDS_FILE,
            run_dir / SUMMARY_FILE,
            *sorted(run_dir.glob("fold_*")),
            *(run_dir / name for name in RUN_FILES),
        )
        held = [path.name for path in outputs if path.exists()]
        if held and not overwrite:
            raise SegnetError(
                f"{run_dir}: already holds a run ({', '.join(held)}); pass --resume to continue it or --overwrite to replace it"
            )
        validation_folds = k_fold_split(pairs, folds, config.seed)
        if dist.is_main_process():
            for old_fold in run_dir.glob("fold_*"):
                shutil.rmtree(old_fold)
            (run_dir / SUMMARY_FILE).unlink(missing_ok=True)
            run_dir.mkdir(parents=True, exist_ok=True)
            record = {
                "folds": folds,
                "seed": config.seed,
                "stems": [[p.stem for p in fold] for fold in validation_folds],
            }
            write_text_atomically(run_dir / FOLDS_FILE, json.dumps(record, indent=1), "cross-validation folds")
        dist.barrier()

    for k, val_pairs in enumerate(validation_folds, start=1):
        train_pairs = [p for other, fold in enumerate(validation_folds, start=1) if other != k for p in fold]
        out = fold_dir(run_dir, k)
        log(f"cross-validation fold {k}/{folds}: {len(train_pairs)} training and {len(val_pairs)} validation images")
        fold_resume = resume and (out / LAST_CHECKPOINT).is_file()
        # A fold folder without last.pt holds nothing to keep (it stopped before its first epoch
        # ended), unless its last.pt was pruned from a finished fold: that fold's model is kept.
        if resume and not fold_resume and (out / BEST_CHECKPOINT).is_file():
            raise SegnetError(
                f"{out}: holds a trained model (best.pt) but no last.pt to resume from; "
                "train the cross-validation again with --overwrite instead of --resume"
            )
        train(
            dataclasses.replace(config, out=str(out), folds=None),
            resume=fold_resume,
            overwrite=not fold_resume,
            progress_log=progress_log,
            split=(train_pairs, val_pairs),
            decoded=decoded,
        )

    summary = summarize_folds([read_best_metrics(fold_dir(run_dir, k)) for k in range(1, folds + 1)])
    if dist.is_main_process():
        write_text_atomically(run_dir / SUMMARY_FILE, json.dumps(summary, indent=1), "cross-validation summary")
    dist.barrier()
    return summary


def read_best_metrics(run_dir: Path) -> ValidationMetrics:
    """A fold's validation metrics at its best epoch."""
    path = run_dir / BEST_METRICS_FILE
    if not path.is_file():
        raise DataError(path, "not found: the fold never produced a validation score")
    return ValidationMetrics.read(path)


def fold_scores(metrics: PixelMetrics, detection: Detection | None = None) -> dict[str, float | None]:
    """The scores summarised across folds, by row label: whole-image scores, per-class IoU, and
    (from an evaluation) mean boundary F1, count errors, object F1 and image-level presence.
    ``detection`` stands in for the object and presence tallies of metrics that have none
    (the pooled ones)."""
    scores: dict[str, float | None] = {SCORE_LABELS[key]: value for key, value in metrics.whole_image_scores().items()}
    for name, class_scores in metrics.per_class.items():
        scores[f"IoU {name}"] = class_scores.iou
    if isinstance(metrics, EvaluationMetrics):
        scores["mean boundary F1"] = metrics.boundary_f1.mean
        for name, agreement in metrics.counts.items():
            scores[f"count MAE {name}"] = agreement.mean_absolute_error
        detection = metrics.detection
    if detection is not None:
        for name, objects in detection.objects.items():
            scores[f"object F1 {name}"] = objects.f1
        for name, presence in detection.presence.items():
            scores[f"sensitivity {name}"] = presence.sensitivity
            scores[f"specificity {name}"] = presence.specificity
    return scores


def summarize_folds(per_fold: Sequence[PixelMetrics]) -> dict[str, Any]:
    """Each score per fold with its mean and sample standard deviation, and the pooled metrics.

    ``per_fold`` are the folds' best validation metrics (training) or their evaluations. A score
    undefined in a fold (a class absent from its images and predictions) is left out of that
    score's mean and deviation; the deviation needs two defined values.
    """
    class_names = list(per_fold[0].classes)
    per_fold_scores = [fold_scores(metrics) for metrics in per_fold]
    scores = {}
    for label in per_fold_scores[0]:
        values = [fold.get(label) for fold in per_fold_scores]
        defined = np.array([v for v in values if v is not None], dtype=np.float64)
        scores[label] = {
            "per_fold": values,
            "mean": float(defined.mean()) if defined.size else None,
            "std": float(defined.std(ddof=1)) if defined.size >= 2 else None,
        }
    pooled = PixelMetrics.from_confusion(np.sum([metrics.confusion for metrics in per_fold], axis=0), class_names)
    # Object and presence tallies add over folds like the confusion matrices (segnet.evaluate.detection).
    detection = pooled_detection(
        [metrics.detection if isinstance(metrics, EvaluationMetrics) else None for metrics in per_fold]
    )
    return {
        "folds": len(per_fold),
        "classes": class_names,
        "scores": scores,
        "pooled": fold_scores(pooled, detection),
        "pooled_metrics": {**pooled.to_dict(), **(detection.to_dict() if detection is not None else {})},
    }


def format_cv_table(summary: dict[str, Any]) -> str:
    """The summary as a plain-text table: one row per score; folds, mean, std and pooled columns."""
    folds = summary["folds"]
    header = ["score", *(f"fold {k}" for k in range(1, folds + 1)), "mean", "std", "pooled"]
    rows = []
    for label, entry in summary["scores"].items():
        digits = 2 if label.startswith("count") else 3
        rows.append(
            [
                label,
                *(format_score(value, digits) for value in entry["per_fold"]),
                format_score(entry["mean"], digits),
                format_score(entry["std"], digits),
                format_score(summary["pooled"].get(label), digits),
            ]
        )
    note = (
        f"{folds}-fold cross-validation: std is the sample standard deviation over folds; pooled scores one "
        "confusion matrix (and object tally) summed over the folds (every image predicted once, by the model that did not train on it)"
    )
    return text_table(header, rows) + "\n" + note + "\n"


def evaluate_cross_validation(
    run_dir: str | Path,
    data: str | Path,
    *,
    out: str | Path | None = None,
    checkpoint_name: str = BEST_CHECKPOINT,
    report: bool = False,
    **evaluate_options: Any,
) -> dict[str, Any]:
    """Evaluate each fold's model on its own held-out fold and summarise across folds.

    ``run_dir`` is the cross-validation run folder (folds.json and fold_1 .. fold_K), ``data`` the
    dataset it was trained on; the per-fold evaluation folders and ``cv_summary.json`` go to
    ``out`` (default ``RUN/evaluation``). ``checkpoint_name`` picks each fold's checkpoint; with
    ``report``, each fold gets its ``report.html``: in ``OUT/fold_k`` where ``out`` is given, else in the fold's run folder. ``evaluate_options`` are the keyword
    arguments of :func:`segnet.evaluate.evaluate_run` (``options``, ``ignore_index``, ``min_area``,
    ``progress``), the same for every fold.
    Returns the summary (as :func:`summarize_folds`).
    """
    run_dir = Path(run_dir)
    out_dir = Path(out) if out is not None else run_dir / EVALUATION_FOLDER
    # Each fold's evaluate_run scores the held-out images of that fold's split.json.
    per_fold = []
    for k, checkpoint in enumerate(fold_checkpoints(run_dir, checkpoint_name), start=1):
        per_fold.append(evaluate_run(checkpoint, data, split="val", out=out_dir / f"fold_{k}", **evaluate_options))
        if report:
            write_report(
                checkpoint.parent, out_dir / f"fold_{k}", out_dir=out_dir / f"fold_{k}" if out is not None else None
            )
    summary = summarize_folds(per_fold)
    write_text_atomically(out_dir / SUMMARY_FILE, json.dumps(summary, indent=1), "cross-validation summary")
    return summary
