"""The names of the files in a run folder, and the columns of its training history: defined here once.

A run folder (``segnet train --out RUN``) holds::

    last.pt            the checkpoint of the last finished epoch (what --resume continues)
    best.pt            the checkpoint of the best validated epoch (calibrated after training)
    best_metrics.json  that epoch's validation metrics
    history.csv        one row per epoch, in the columns of HISTORY_FIELDS
    curves.png         the history as curves
    config.yaml        the resolved config
    fingerprint.json   what the training images are (segnet.data.compute_fingerprint)
    plan.json          what the data decided for the run (segnet.plan.TrainPlan)
    split.json         which images trained and which validated
    calibration.json   the logit offsets calibration chose (segnet.train.calibration)
    tensorboard/       event files (--tensorboard)
    evaluation/        segnet evaluate's folder (segnet.evaluate)
    report.html        segnet report's page (segnet.report)

It imports nothing of segnet, so every stage (and the tests) can take the names from here.
"""

from pathlib import Path

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
BEST_METRICS_FILE = "best_metrics.json"
HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
CONFIG_FILE = "config.yaml"
FINGERPRINT_FILE = "fingerprint.json"
PLAN_FILE = "plan.json"
SPLIT_FILE = "split.json"
CALIBRATION_FILE = "calibration.json"
TENSORBOARD_FOLDER = "tensorboard"
EVALUATION_FOLDER = "evaluation"
REPORT_FILE = "report.html"

RUN_FILES = (
    LAST_CHECKPOINT,
    BEST_CHECKPOINT,
    HISTORY_FILE,
    CURVES_FILE,
    BEST_METRICS_FILE,
    CALIBRATION_FILE,
    CONFIG_FILE,
    FINGERPRINT_FILE,
    PLAN_FILE,
    SPLIT_FILE,
    TENSORBOARD_FOLDER,
)
"""What training writes into a run folder. A folder holding any of them holds a run (a kept best.pt
whose last.pt was pruned is one), which only ``--overwrite`` replaces; it then deletes them all."""

HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_global_accuracy", "val_mean_iou", "lr", "epoch_seconds")
"""The columns of history.csv, in order; validation columns are empty in epochs not validated."""

PICTURES = ("mask", "overlay", "uncertainty", "uncertainty_overlay")
"""The pictures `segnet predict` writes per image, as ``STEM_<picture>.png``; the mask first (segnet score reads it)."""
OBJECTS_SUFFIX = "_objects.tif"
"""The object label image `segnet predict` writes per image: ``STEM_objects.tif``."""

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
"""The built-in models' files, installed with the package (segnet.model.builtin names them)."""
