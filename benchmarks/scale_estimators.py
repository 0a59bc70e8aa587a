"""How well a first pass reads each image's scale: quantiles of the predicted red cells' widths
against the drawn ones, with the model unchanged.

Usage::

    python benchmarks/scale_estimators.py --checkpoint RUN/best.pt --data DATA [--shrink 2.5] [--quantiles 0.5 0.75 0.9]

Each held-out image (shrunk by ``--shrink`` as in ``scale_inference.py``) is segmented once, as
given, without TTA. Each quantile of the predicted cells' widths (:func:`segnet.data.object_diameter`)
gives the factor ``--diameter auto`` would segment at (:func:`segnet.predict.scale.scale_factor`),
and the drawn mask gives the true one. Printed per quantile: the mean of |log2(estimated / true
factor)|, its ratio to the median's, and the images read more than 1.5x off, by name.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from scale_inference import SOLID_CLASS, shrunk
from tqdm import tqdm

from segnet.core.hardware import report_hardware
from segnet.data.fingerprint import object_diameter
from segnet.data.pairs import load_pair, select_pairs
from segnet.model.options import InferenceOptions
from segnet.model.predictor import Predictor
from segnet.model.scale import scale_factor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument(
        "--shrink", type=float, default=1.0, help="shrink every image by this factor first (default: %(default)s)"
    )
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.5, 0.75, 0.9])
    args = parser.parse_args()
    report_hardware(print)

    predictor = Predictor.from_checkpoint(args.checkpoint, InferenceOptions(tta=False, diameter=None))
    reference = predictor.reference_diameters[SOLID_CLASS]
    errors: dict[float, list[tuple[str, float]]] = {q: [] for q in args.quantiles}
    for pair in tqdm(select_pairs(args.data, "val", args.checkpoint.parent), desc="first passes", unit="image"):
        image, truth = shrunk(*load_pair(pair, len(predictor.class_names)), args.shrink)
        drawn = object_diameter(truth == SOLID_CLASS)
        if drawn is None:
            continue
        cells = predictor.predict(image) == SOLID_CLASS
        for q in args.quantiles:
            estimate = scale_factor(object_diameter(cells, quantile=q), reference)
            errors[q].append((pair.stem, abs(math.log2(estimate / scale_factor(drawn, reference)))))
    print(
        f"reference {reference:.1f} px, images shrunk {args.shrink:g}x, {len(errors[args.quantiles[0]])} images with red cells"
    )
    baseline = float(np.mean([e for _, e in errors[args.quantiles[0]]]))
    for q, rows in errors.items():
        mean = float(np.mean([e for _, e in rows]))
        off = [stem for stem, e in rows if e > math.log2(1.5)]
        print(
            f"quantile {q:.2f}: mean |log2 error| {mean:.3f} ({mean / baseline:.2f}x), {len(off)} off by over 1.5x: {' '.join(off)}"
        )


if __name__ == "__main__":
    main()
