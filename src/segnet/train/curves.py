"""The training curves (curves.png) drawn from a run's history.csv."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from segnet.core.errors import DataError
from segnet.core.outputs import atomic_write
from segnet.core.readback import read_csv
from segnet.core.runfiles import HISTORY_FIELDS


def read_history(history_csv: Path) -> dict[str, np.ndarray]:
    """Columns of history.csv as float arrays; empty cells (epochs without validation) are NaN."""
    columns = HISTORY_FIELDS
    rows = read_csv(history_csv, "training history", columns)
    try:
        return {
            column: np.array([float(row[column]) if row[column] else math.nan for row in rows]) for column in columns
        }
    except (TypeError, ValueError) as error:
        raise DataError(history_csv, f"a value is not a number ({error})") from error


def curves_figure(history: dict[str, np.ndarray]) -> Figure:
    figure = Figure(figsize=(16, 3.8), layout="constrained")
    loss, accuracy, iou, lr = figure.subplots(1, 4)
    epochs = history["epoch"]

    def plot(axes, column: str, label: str, colour: str) -> None:
        # Validation may run only every few epochs: join the epochs that have a value.
        known = ~np.isnan(history[column])
        if known.any():
            axes.plot(epochs[known], history[column][known], marker="o", markersize=3, label=label, color=colour)

    plot(loss, "train_loss", "train", "tab:blue")
    plot(loss, "val_loss", "validation", "tab:orange")
    loss.set_title("Loss")
    if loss.lines:
        loss.legend()
    plot(accuracy, "val_global_accuracy", "validation", "tab:orange")
    accuracy.set_title("Validation pixel accuracy")
    plot(iou, "val_mean_iou", "validation", "tab:orange")
    iou.set_title("Validation mean IoU")
    if not np.isnan(history["val_mean_iou"]).all():
        best = int(np.nanargmax(history["val_mean_iou"]))
        iou.plot(
            epochs[best],
            history["val_mean_iou"][best],
            marker="*",
            markersize=14,
            color="tab:red",
            linestyle="none",
            label=f"best {history['val_mean_iou'][best]:.3f} (epoch {int(epochs[best])})",
        )
        iou.legend(loc="lower right")
    plot(lr, "lr", "learning rate", "tab:green")
    lr.set_title("Learning rate")
    rates = history["lr"][~np.isnan(history["lr"])]
    if rates.size and (rates > 0).all():
        lr.set_yscale("log")
    # One epoch range on every panel, wide enough that a single epoch sits mid-axis.
    first, last = (epochs.min(), epochs.max()) if epochs.size else (1, 1)
    margin = max(0.5, 0.03 * (last - first))
    for axes in (loss, accuracy, iou, lr):
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        axes.set_xlim(first - margin, last + margin)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if not axes.lines:
            axes.set_yticks([])
            axes.text(0.5, 0.5, "no values yet", transform=axes.transAxes, ha="center", va="center", color="gray")
    return figure


def plot_training_curves(history_csv: str | Path, out_png: str | Path) -> None:
    """Plot loss, validation pixel accuracy, validation mean IoU and learning rate per epoch.

    The PNG is written to a temporary file and renamed over ``out_png``, so an image viewer
    watching it during training never sees a half-written file.
    """
    history_csv, out_png = Path(history_csv), Path(out_png)
    figure = curves_figure(read_history(history_csv))
    with atomic_write(out_png, "training curves") as temporary:
        figure.savefig(temporary, format="png", dpi=100)
