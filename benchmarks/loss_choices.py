"""Compare class weightings and losses on the real darkfield images with short, equal budgets.

    python benchmarks/loss_choices.py --data ../shared/darkfield --epochs 4

Each choice trains segnet-basic from the same seed on the same split for the same number of
epochs, then the held-out images are scored at full size. The ranking, not the absolute numbers,
is what this measures: the winner becomes the default in ``segnet.plan.config``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from segnet.core.hardware import report_hardware
from segnet.evaluate.run import evaluate_run
from segnet.model.options import InferenceOptions
from segnet.plan.config import load_config
from segnet.train.loop import train

CHOICES = ("median:ce", "sqrt-median:ce", "sqrt-median:ce+dice", "none:ce+dice")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/darkfield"))
    parser.add_argument("--out", type=Path, default=Path("runs/loss_choices"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--choices", nargs="+", default=list(CHOICES), help="WEIGHTING:LOSS pairs (default: %(default)s)"
    )
    args = parser.parse_args()
    hardware = report_hardware(print, args.device)

    results = []
    for weighting, loss in (choice.split(":") for choice in args.choices):
        run_dir = args.out / f"{weighting}_{loss.replace('+', '_')}"
        config = load_config(
            None,
            {
                "data": str(args.data),
                "out": str(run_dir),
                "epochs": args.epochs,
                "val_every": args.epochs,
                "class_weights": weighting,
                "loss": loss,
                "device": args.device,
            },
        )
        started = time.perf_counter()
        train(config, overwrite=True)
        minutes = (time.perf_counter() - started) / 60
        metrics = evaluate_run(
            run_dir / "last.pt",
            args.data,
            split="val",
            options=InferenceOptions(device=args.device, tta=False, diameter=None),
            progress=False,
        )
        iou = {name: scores.iou for name, scores in metrics.per_class.items()}
        results.append(
            {"class_weights": weighting, "loss": loss, "minutes": minutes, "mean_iou": metrics.mean_iou, "iou": iou}
        )
        print(
            f"{weighting:>12} {loss:>8}: mean IoU {metrics.mean_iou:.3f}  "
            + "  ".join(f"{k} {v:.3f}" for k, v in iou.items()),
            flush=True,
        )
    print("\nweights       loss      mean IoU  " + "  ".join(f"{name:>11}" for name in results[0]["iou"]) + "  minutes")
    for row in results:
        print(
            f"{row['class_weights']:<12}  {row['loss']:<8}  {row['mean_iou']:8.3f}  "
            + "  ".join(f"{v:11.3f}" for v in row["iou"].values())
            + f"  {row['minutes']:7.1f}"
        )
    (args.out / "summary.json").write_text(json.dumps({"hardware": hardware, "results": results}, indent=1))


if __name__ == "__main__":
    main()
