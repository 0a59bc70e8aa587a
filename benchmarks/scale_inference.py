"""Per-image scale at inference (segnet.predict.scale): what segmenting each image at the model's
reference red-cell size buys, with the model unchanged.

Usage::

    python benchmarks/scale_inference.py --checkpoint RUN/best.pt --data DATA [--split val|all] [--no-tta] [--shrink 2.5] [--ways auto ...]

Five ways of segmenting the same images with the same checkpoint, scored the same way (pixel IoU
per class, object recall/precision/F1 and image-level presence per class, as ``segnet evaluate``):

- ``as given``: the baseline, each image at its own size (``segnet predict`` without ``--diameter``);
- ``one estimate``: :class:`~segnet.predict.scale.Rescaled` with ``refine=False``: a first pass
  measures the red cells, the image is resized so they come to the reference, and segmented again;
- ``auto``: ``--diameter auto``: the same, with the estimate checked on the rescaled pass and
  corrected once where it was off;
- ``auto, median``: ``auto`` estimating from the median of the predicted cells' diameters, as it
  did before the 75th percentile (fragments pull the median down);
- ``mask scale``: the diameter measured on the drawn mask (``--diameter PX``): an upper bound of
  what a perfect size estimate would give.

The reference diameter is the one the checkpoint records (``class_diameter`` of its fingerprint);
for a checkpoint from before it was recorded, the median over its training images
(``RUN/split.json``; every image of ``--train-data`` otherwise) of each image's drawn red-cell
diameter, measured as training records it (:func:`segnet.data.object_diameter`). ``--shrink F``
first shrinks every image (area-averaged) and mask (nearest) by ``F``: the same images as a
microscope at 1/F of the magnification would show them, with a known true factor. The scores are
printed for all images and for the small-cell ones (drawn red cells under ``--small`` px across,
after shrinking) separately, with each way's ratio to the baseline.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from segnet.core.hardware import report_hardware
from segnet.data.classes import ClassRoles
from segnet.data.fingerprint import compute_fingerprint, object_diameter
from segnet.data.pairs import find_pairs, load_pair, select_pairs
from segnet.evaluate.detection import DetectionScores
from segnet.model.options import InferenceOptions
from segnet.model.predictor import Predictor
from segnet.model.scale import Rescaled
from segnet.train.metrics import ConfusionMatrix, PixelMetrics

SOLID_CLASS = 1  # erythrocytes measure the scale
WAYS = ("as given", "one estimate", "auto", "auto, median", "mask scale")


def reference_diameter(pairs, num_classes: int) -> float:
    """The training images' red-cell diameter as training records it (the fingerprint's ``class_diameter``)."""
    samples = (load_pair(pair, num_classes) for pair in tqdm(pairs, desc="reference", unit="mask"))
    return compute_fingerprint(samples, num_classes)["class_diameter"][SOLID_CLASS]


class SamePasses:
    """The predictor, answering a pass it has already run on the current image from memory: the
    ways share their first pass, and both estimates their second, so each is computed once."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.passes: dict[tuple, np.ndarray] = {}

    def __getattr__(self, name: str):  # class_names, roles, reference_diameters: the predictor's
        return getattr(self.predictor, name)

    def next_image(self) -> None:
        self.passes.clear()

    def predict_proba(self, image: np.ndarray, *, progress=None) -> np.ndarray:
        key = (image.shape, hashlib.blake2b(image.tobytes(), digest_size=16).digest())
        if key not in self.passes:
            self.passes[key] = self.predictor.predict_proba(image, progress=progress)
        return self.passes[key]

    def predict(self, image: np.ndarray) -> np.ndarray:
        return self.predict_proba(image).argmax(axis=0).astype(np.uint8)


class MedianRescaled(Rescaled):
    """``auto`` with the median of the predicted cells' diameters, as before the 75th percentile."""

    def _cell_diameter(self, proba: np.ndarray) -> float | None:
        return object_diameter(proba.argmax(axis=0) == self.class_id)


def shrunk(image: np.ndarray, mask: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """The image area-averaged and the mask sampled nearest at 1/``factor`` of their size."""
    if factor == 1.0:
        return image, mask
    size = (max(1, round(image.shape[1] / factor)), max(1, round(image.shape[0] / factor)))
    small_image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
    return small_image, np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))


class Scores:
    """Pixel confusion and object/presence tallies of one way over a set of images."""

    def __init__(self, class_names: list[str]) -> None:
        self.class_names = class_names
        self.confusion = ConfusionMatrix(len(class_names))
        self.detection = DetectionScores(ClassRoles.of(class_names))
        self.images = 0

    def add(self, stem: str, truth: np.ndarray, pred: np.ndarray) -> None:
        self.confusion.update(torch.from_numpy(truth), torch.from_numpy(pred))
        self.detection.add(stem, truth, pred)
        self.images += 1

    def summary(self) -> dict[str, float | None]:
        metrics = PixelMetrics.from_confusion(self.confusion.mat, self.class_names)
        detection = self.detection.sections(self.class_names)
        row = {"mean IoU": metrics.mean_iou}
        row.update({f"{name} IoU": metrics.per_class[name].iou for name in self.class_names[1:]})
        for name in self.class_names[1:]:
            row[f"{name} obj F1"] = detection.objects[name].f1
        spirochete = self.class_names[-1]
        row[f"{spirochete} sens"] = detection.presence[spirochete].sensitivity
        row[f"{spirochete} spec"] = detection.presence[spirochete].specificity
        return row


def print_table(title: str, scores: dict[str, Scores]) -> None:
    print(f"\n{title} ({scores[WAYS[0]].images} images)")
    rows = {way: s.summary() for way, s in scores.items()}
    columns = list(rows[WAYS[0]])
    widths = [len(c) + 2 for c in columns]
    print(f"{'':16}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths)) + f"{'mIoU ratio':>12}")
    base = rows[WAYS[0]]["mean IoU"]
    for way, row in rows.items():
        cells = "".join(f"{'-' if v is None else f'{v:.3f}':>{w}}" for v, w in zip(row.values(), widths))
        print(f"{way:16}{cells}{row['mean IoU'] / base if base else float('nan'):>12.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="labelled images to score")
    parser.add_argument(
        "--split", choices=("val", "all"), default="val", help="the run's held-out images, or every image in --data"
    )
    parser.add_argument(
        "--train-data",
        type=Path,
        help="the training images, for the reference diameter of an older checkpoint (default: RUN/split.json's training images)",
    )
    parser.add_argument("--no-tta", dest="tta", action="store_false", help="one plain pass per image")
    parser.add_argument(
        "--shrink",
        type=float,
        default=1.0,
        help="shrink every image by this factor first (default: %(default)s, as drawn)",
    )
    parser.add_argument(
        "--ways",
        nargs="+",
        choices=WAYS,
        default=list(WAYS),
        help="the ways to score (default: all; 'as given' always)",
    )
    parser.add_argument(
        "--small",
        type=float,
        default=45.0,
        help="small-cell images: drawn red cells under this many px across (default: %(default)s)",
    )
    args = parser.parse_args()
    report_hardware(print)

    predictor = SamePasses(Predictor.from_checkpoint(args.checkpoint, InferenceOptions(tta=args.tta, diameter=None)))
    class_names = list(predictor.class_names)
    recorded = (predictor.reference_diameters or [None] * len(class_names))[SOLID_CLASS]
    if recorded is None:
        train_pairs = (
            find_pairs(args.train_data) if args.train_data else select_pairs(args.data, "train", args.checkpoint.parent)
        )
        recorded = reference_diameter(train_pairs, len(class_names))
    print(f"reference red-cell diameter {recorded:.1f} px; images shrunk {args.shrink:g}x")
    one_estimate = Rescaled(predictor, reference=recorded, refine=False)
    auto = Rescaled(predictor, reference=recorded)
    auto_median = MedianRescaled(predictor, reference=recorded)
    ways = [way for way in WAYS if way == WAYS[0] or way in args.ways]
    everything = {way: Scores(class_names) for way in ways}
    small = {way: Scores(class_names) for way in ways}
    for pair in tqdm(select_pairs(args.data, args.split, args.checkpoint.parent), desc="scoring", unit="image"):
        image, truth = shrunk(*load_pair(pair, len(class_names)), args.shrink)
        predictor.next_image()
        drawn = object_diameter(truth == SOLID_CLASS)
        segmenters = {
            "as given": predictor,
            "one estimate": one_estimate,
            "auto": auto,
            "auto, median": auto_median,
            "mask scale": Rescaled(predictor, drawn, reference=recorded) if drawn else predictor,
        }
        preds = {way: segmenters[way].predict(image) for way in ways}
        for way, pred in preds.items():
            everything[way].add(pair.stem, truth, pred)
            if drawn is not None and drawn < args.small:
                small[way].add(pair.stem, truth, pred)
        true_factor = f"{recorded / drawn:.2f}" if drawn else "-"
        factors = ", ".join(
            f"{way} {[round(f, 2) for f in segmenters[way].factors]}"
            for way in ways
            if isinstance(segmenters[way], Rescaled)
        )
        tqdm.write(f"{pair.stem}: drawn diameter {drawn or 0:.0f} px (factor {true_factor}); factors: {factors}")
    print_table("all images", everything)
    if small[WAYS[0]].images:
        print_table(f"small-cell images (drawn red cells under {args.small:g} px)", small)


if __name__ == "__main__":
    main()
