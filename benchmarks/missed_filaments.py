"""Which drawn spirochetes does a model miss, and why: contrast, width and magnification of each filament.

    segnet evaluate --checkpoint RUN/best.pt --data ../shared/darkfield --out EVAL
    python benchmarks/missed_filaments.py --data ../shared/darkfield --predictions EVAL/predictions

Reads the class masks an evaluation wrote (``EVAL/predictions/STEM.png``, or any tool's masks named by
stem) beside the drawn masks, labels the objects of the thin class as ``segnet evaluate`` counts them,
and decides for each drawn filament whether it was found by the same rule (``segnet.evaluate.detection``).
For each it measures:

* contrast: the filament's mean grey level minus the median of a 6-pixel ring around it (other drawn
  objects left out of the ring), in units of the ring's spread (median absolute deviation);
* width: its mean width along the centreline, in pixels (``segnet.evaluate.measure``);
* magnification: the image's red-cell diameter from its drawn mask (``segnet.data.object_diameter``).

Prints object recall by tercile of each, and writes every filament to ``--out`` (CSV), so the
misses can be looked at beside the images.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from scipy import ndimage

from segnet.core.hardware import report_hardware
from segnet.data.classes import DARKFIELD_ROLES
from segnet.data.cleaning import clean_prediction
from segnet.data.fingerprint import object_diameter
from segnet.data.pairs import find_pairs, load_pair, read_mask
from segnet.evaluate.counting import label_classes
from segnet.evaluate.detection import found_objects
from segnet.evaluate.measure import centreline_length_and_width

RING = 6
"""Pixels of background around a filament that its contrast is measured against."""
FIELDS = ("image", "filament", "found", "contrast", "width_px", "length_px", "red_cell_diameter_px")


def filament_rows(stem: str, image: np.ndarray, truth: np.ndarray, prediction: np.ndarray) -> list[dict]:
    """One row per drawn filament of one image (module docstring)."""
    roles, thin = DARKFIELD_ROLES, DARKFIELD_ROLES.thin[0]
    true_labels, _ = label_classes(truth, [thin], split_touching=roles.solid)[thin]
    pred_labels, _ = label_classes(clean_prediction(prediction, roles), [thin], split_touching=roles.solid)[thin]
    found = found_objects(true_labels, pred_labels)
    grey = image.astype(np.float32).mean(axis=2)
    drawn = truth != roles.background
    diameter = object_diameter(truth == roles.solid[0])
    rows = []
    for index, box in enumerate(ndimage.find_objects(true_labels), start=1):
        if box is None:
            continue
        shape = true_labels == index
        ring = ndimage.binary_dilation(shape, iterations=RING) & ~drawn
        around = grey[ring] if ring.any() else grey[~drawn]
        spread = max(float(np.median(np.abs(around - np.median(around)))), 1.0)
        length, width = centreline_length_and_width(shape[box])
        rows.append(
            {
                "image": stem,
                "filament": index,
                "found": bool(found[index - 1]),
                "contrast": round((float(grey[shape].mean()) - float(np.median(around))) / spread, 2),
                "width_px": round(width, 2),
                "length_px": round(length, 1),
                "red_cell_diameter_px": diameter,
            }
        )
    return rows


def recall_by_tercile(rows: list[dict], key: str) -> list[tuple[str, int, float]]:
    """(range, filaments, recall) for each third of the filaments ordered by ``key`` (rows without it left out)."""
    known = sorted((row for row in rows if row[key] is not None), key=lambda row: row[key])
    result = []
    for part in np.array_split(np.arange(len(known)), 3):
        if len(part) == 0:
            continue
        chosen = [known[i] for i in part]
        span = f"{chosen[0][key]:g}-{chosen[-1][key]:g}"
        result.append((span, len(chosen), sum(row["found"] for row in chosen) / len(chosen)))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="labelled folder (images/, masks/)")
    parser.add_argument("--predictions", type=Path, required=True, help="folder of predicted class masks, STEM.png")
    parser.add_argument("--out", type=Path, help="CSV of every drawn filament (default: PREDICTIONS/../filaments.csv)")
    args = parser.parse_args()
    report_hardware(print)
    out = args.out or args.predictions.parent / "filaments.csv"
    rows: list[dict] = []
    pairs = [pair for pair in find_pairs(args.data) if (args.predictions / f"{pair.stem}.png").is_file()]
    for pair in pairs:
        image, truth = load_pair(pair, 3)
        prediction = read_mask(args.predictions / f"{pair.stem}.png", 3)
        rows.extend(filament_rows(pair.stem, image, truth, prediction))
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    found = sum(row["found"] for row in rows)
    print(f"{len(pairs)} images, {len(rows)} drawn filaments, {found} found (recall {found / max(len(rows), 1):.3f})")
    for key in ("contrast", "width_px", "red_cell_diameter_px"):
        print(f"\nrecall by {key}:")
        for span, count, recall in recall_by_tercile(rows, key):
            print(f"  {span:>16}  {count:4d} filaments  recall {recall:.3f}")
    missed = [row for row in rows if not row["found"]]
    if missed:
        print(
            f"\nmissed: median contrast {np.median([r['contrast'] for r in missed]):.2f}, width {np.median([r['width_px'] for r in missed]):.1f} px; "
            f"found: median contrast {np.median([r['contrast'] for r in rows if r['found']] or [np.nan]):.2f}, "
            f"width {np.median([r['width_px'] for r in rows if r['found']] or [np.nan]):.1f} px"
        )
    print(f"every filament: {out}")


if __name__ == "__main__":
    main()
