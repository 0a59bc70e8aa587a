"""Does a held-out image's brightness, or its spirochetes' contrast, predict how well they are found?

    python benchmarks/intensity_difficulty.py runs/real_darkfield_seed1/segnet-basic/evaluation/per_image.csv
    python benchmarks/intensity_difficulty.py RUN_A/.../per_image.csv RUN_B/.../per_image.csv --class spirochete

Per-image intensity normalisation (dividing out each image's brightness and spread) is a lever
only if the images the model fails on are the dim or the bright ones. This reads the
``per_image.csv`` files that ``segnet evaluate`` writes (their image and mask paths, the class's
IoU and found/true object counts) and, for every image that holds the class, measures on the
grey-level image: the global mean and 99.5th percentile (what per-image normalisation divides
out), the median background and class level, and the class's contrast (median class level minus
median background, over the background's standard deviation, which an affine per-image
normalisation leaves unchanged). It prints each measure's Spearman rank correlation with the
class IoU and object recall over all listed images, and the worst images.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from segnet.core.hardware import report_hardware
from segnet.data.classes import DEFAULT_CLASSES
from segnet.data.pairs import read_image, read_mask

MEASURES = ("mean", "p99.5", "background", "class level", "contrast")


def intensity_measures(image: np.ndarray, mask: np.ndarray, class_id: int) -> dict[str, float]:
    """The :data:`MEASURES` of one uint8 RGB image, its class ``class_id`` taken from ``mask``."""
    grey = image.astype(np.float32).mean(axis=2)
    background, target = grey[mask == 0], grey[mask == class_id]
    return {
        "mean": float(grey.mean()),
        "p99.5": float(np.percentile(grey, 99.5)),
        "background": float(np.median(background)),
        "class level": float(np.median(target)),
        "contrast": float((np.median(target) - np.median(background)) / (background.std() + 1e-6)),
    }


def read_rows(paths: list[Path], class_name: str, num_classes: int) -> list[dict]:
    """One row per evaluated image holding ``class_name``: its name, IoU, object recall and measures."""
    class_id = DEFAULT_CLASSES.index(class_name)
    rows = []
    for path in paths:
        with path.open() as handle:
            for record in csv.DictReader(handle):
                true_count = int(record[f"true_count_{class_name}"])
                if true_count == 0:
                    continue
                image, mask = read_image(record["image_path"]), read_mask(record["mask_path"], num_classes)
                rows.append(
                    {
                        "image": f"{path.parents[2].name}/{record['image']}",
                        "iou": float(record[f"iou_{class_name}"]),
                        "recall": int(record[f"found_{class_name}"]) / true_count,
                        **intensity_measures(image, mask, class_id),
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("per_image", type=Path, nargs="+", help="per_image.csv files written by segnet evaluate")
    parser.add_argument(
        "--class", dest="class_name", default=DEFAULT_CLASSES[-1], choices=DEFAULT_CLASSES[1:], help="class to study"
    )
    parser.add_argument("--worst", type=int, default=10, help="how many of the worst images to list")
    args = parser.parse_args()
    report_hardware(print)

    rows = read_rows(args.per_image, args.class_name, len(DEFAULT_CLASSES))
    print(f"{len(rows)} images holding {args.class_name}; Spearman rank correlation over them:")
    print(f"| measure | range | with {args.class_name} IoU | with object recall |")
    print("|---|---|---|---|")
    for measure in MEASURES:
        values = [row[measure] for row in rows]
        with_iou = spearmanr(values, [row["iou"] for row in rows]).statistic
        with_recall = spearmanr(values, [row["recall"] for row in rows]).statistic
        print(f"| {measure} | {min(values):.1f}-{max(values):.1f} | {with_iou:+.2f} | {with_recall:+.2f} |")
    print(f"\nworst {args.worst} by {args.class_name} IoU:")
    for row in sorted(rows, key=lambda row: row["iou"])[: args.worst]:
        measures = ", ".join(f"{measure} {row[measure]:.1f}" for measure in MEASURES)
        print(f"  {row['image']}: IoU {row['iou']:.2f}, recall {row['recall']:.2f}; {measures}")


if __name__ == "__main__":
    main()
