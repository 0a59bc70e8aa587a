"""How much of the score a one- or two-pixel disagreement in the drawn masks costs: a label-noise ceiling.

    python benchmarks/label_noise.py --data ../shared/darkfield
    python benchmarks/label_noise.py --data ../shared/darkfield --split runs/real_darkfield/segnet-basic/split.json

Every drawn mask is compared, with the same ConfusionMatrix and object matching that
``segnet evaluate`` uses, against itself with every non-background class eroded (pixels given to
background) or dilated (into background only) by a disk of radius 1 or 2 pixels: what two
annotators who trace the same objects one or two pixels apart would score against each other.
The unchanged mask (IoU 1, object F1 1) is the baseline, so each figure is also its ratio to it. A model's per-class
IoU near a row's figure is as close to the drawn masks as a redrawing would be.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from skimage.morphology import disk
from tqdm import tqdm

from segnet.core.hardware import report_hardware
from segnet.data.classes import DEFAULT_CLASSES, ClassRoles
from segnet.data.pairs import find_pairs, read_mask, read_split
from segnet.evaluate.detection import DetectionScores
from segnet.train.metrics import ConfusionMatrix, PixelMetrics

RADII = (1, 2)


def perturbed(mask: np.ndarray, operation: str, radius: int) -> np.ndarray:
    """``mask`` with every non-background class eroded or dilated by a disk of ``radius``."""
    footprint = disk(radius).astype(bool)
    out = mask.copy()
    for label in np.unique(mask):
        if label == 0:
            continue
        region = mask == label
        if operation == "erode":
            out[region & ~ndimage.binary_erosion(region, footprint)] = 0
        else:
            out[ndimage.binary_dilation(region, footprint) & (out == 0)] = label  # into background not yet taken
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, default=Path("../shared/darkfield"), help="labelled folder (images/, masks/)"
    )
    parser.add_argument(
        "--split", type=Path, help="a run's split.json: score its validation images only (default: every image)"
    )
    args = parser.parse_args()
    report_hardware(print)
    classes = list(DEFAULT_CLASSES)
    pairs = find_pairs(args.data)
    if args.split:
        pairs = read_split(args.split, pairs, "val")
    variants = [(operation, radius) for operation in ("erode", "dilate") for radius in RADII]
    confusions = {variant: ConfusionMatrix(len(classes)) for variant in variants}
    detections = {variant: DetectionScores(ClassRoles.of(classes)) for variant in variants}
    for pair in tqdm(pairs, desc="masks", unit="mask"):
        mask = read_mask(pair.mask, len(classes))
        for variant in variants:
            redrawn = perturbed(mask, *variant)
            confusions[variant].update(torch.from_numpy(mask), torch.from_numpy(redrawn))
            detections[variant].add(pair.stem, mask, redrawn)

    print(f"\n{len(pairs)} drawn masks against themselves redrawn (baseline: the unchanged mask, IoU 1.000)")
    header = f"{'redrawn':<10} {'mean IoU':>9}" + "".join(f" {name + ' IoU':>16}" for name in classes)
    header += "".join(f" {name + ' obj F1':>19}" for name in classes[1:])
    print(header)
    for variant in variants:
        metrics = PixelMetrics.from_confusion(confusions[variant].mat, classes)
        objects = detections[variant].sections(classes).objects
        row = f"{variant[0] + ' ' + str(variant[1]) + 'px':<10} {metrics.mean_iou:>9.3f}"
        row += "".join(f" {metrics.per_class[name].iou:>16.3f}" for name in classes)
        row += "".join(f" {_f1(objects[name].f1):>19}" for name in classes[1:])
        print(row)


def _f1(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
