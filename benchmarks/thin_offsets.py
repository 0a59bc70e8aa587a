"""How far the thin class's decision threshold trades pixel IoU for found objects.

    python benchmarks/thin_offsets.py --checkpoint runs/real_darkfield_seed1/segnet-basic/best.pt --data ../shared/darkfield
    python benchmarks/thin_offsets.py --checkpoint RUN/best.pt --data DIR --shifts -1 0 1 2 --tta
    python benchmarks/thin_offsets.py --checkpoint RUN/best.pt --data SEED1/test --split all --tta

Training ends by calibrating per-class logit offsets for the best pixel mean IoU on training
images (segnet.train.calibration). A lab asks first whether each spirochete is found, so this scores the
run's held-out images, or every image of ``--data`` with ``--split all`` (``segnet evaluate``
with its defaults but TTA: the same ConfusionMatrix, object rule, presence call and per-image
scale) with the thin classes' offsets shifted by each ``--shifts`` value: a positive shift calls
more pixels spirochete. Shift 0 is the checkpoint as trained, the baseline every row's object F1
is divided by.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from segnet.core.hardware import report_hardware
from segnet.core.runfiles import SPLIT_FILE
from segnet.data.pairs import SELECTIONS
from segnet.evaluate.run import evaluate_run
from segnet.model.checkpoint import Checkpoint
from segnet.model.options import DEFAULT_INFERENCE


def shifted_checkpoint(checkpoint: Checkpoint, thin: tuple[int, ...], shift: float, path: Path) -> Path:
    """``checkpoint`` with the logit offsets of the ``thin`` classes raised by ``shift``, saved to ``path``."""
    offsets = checkpoint.model_state["logit_offsets"].clone()
    offsets[list(thin)] += shift
    checkpoint.replace(model_state={**checkpoint.model_state, "logit_offsets": offsets}).save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="a run's best.pt (scored on its split.json's held-out images)"
    )
    parser.add_argument(
        "--data", type=Path, default=Path("../shared/darkfield"), help="labelled folder (images/, masks/)"
    )
    parser.add_argument(
        "--shifts",
        type=float,
        nargs="+",
        default=[-0.5, 0.0, 0.5, 1.0, 1.5],
        help="offset shifts to score (0 is added)",
    )
    parser.add_argument(
        "--split", choices=SELECTIONS, default="val", help="which images of --data to score (as segnet evaluate)"
    )
    parser.add_argument(
        "--tta", action="store_true", help="test-time augmentation (8x slower; default: one plain pass)"
    )
    args = parser.parse_args()
    report_hardware(print)
    checkpoint = Checkpoint.load(args.checkpoint)
    classes = checkpoint.class_names
    thin = checkpoint.roles.thin
    if not thin:
        parser.error(f"{args.checkpoint}: its classes {classes} have no thin class")
    names = [classes[c] for c in thin]
    options = DEFAULT_INFERENCE.replace(tta=args.tta)
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        # The shifted checkpoints sit beside a copy of the run's split, so they score its held-out images.
        (Path(folder) / SPLIT_FILE).write_bytes((args.checkpoint.parent / SPLIT_FILE).read_bytes())
        for shift in sorted(set(args.shifts) | {0.0}):
            path = shifted_checkpoint(checkpoint, thin, shift, Path(folder) / f"shift_{shift:+g}.pt")
            rows[shift] = evaluate_run(
                path,
                args.data,
                split=args.split,
                out=Path(folder) / f"evaluation_{shift:+g}",
                options=options,
                progress=False,
            )
    print(
        f"\n{args.checkpoint}: {rows[0.0].num_images} held-out images, {'TTA' if args.tta else 'no TTA'}; baseline: shift 0 (as calibrated)"
    )
    for name in names:
        print(
            f"\n{name}: offset shift, pixel IoU, mean IoU, object recall / precision / F1 (x baseline), presence sensitivity / specificity"
        )
        base_f1 = rows[0.0].objects[name].f1 or 0.0
        for shift, metrics in rows.items():
            objects, presence = metrics.objects[name], metrics.presence[name]
            ratio = f"{objects.f1 / base_f1:.2f}x" if base_f1 and objects.f1 is not None else "-"
            print(
                f"{shift:+6.2f}  {_rate(metrics.per_class[name].iou)}  {_rate(metrics.mean_iou)}  "
                f"{_rate(objects.recall)} / {_rate(objects.precision)} / {_rate(objects.f1)} ({ratio})  "
                f"{_rate(presence.sensitivity)} / {_rate(presence.specificity)}"
            )


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
