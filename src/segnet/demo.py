"""`segnet demo`: the whole workflow on built-in synthetic data, in about ten minutes on a laptop CPU.

It writes a synthetic darkfield dataset, trains segnet-basic with the project's defaults (a
fixed epoch budget sized for a 2-core CPU), evaluates the held-out images at full size, and
segments and counts a few images, then prints the validation metrics and where everything is.
"""

from __future__ import annotations

from pathlib import Path

from segnet.config import load_config
from segnet.data import select_pairs
from segnet.evaluate import evaluate_run
from segnet.predict import InferenceOptions, Predictor, predict_paths
from segnet.report import write_report
from segnet.runfiles import BEST_CHECKPOINT, CURVES_FILE, EVALUATION_FOLDER, HISTORY_FILE, REPORT_FILE
from segnet.score import METRICS_FILE, PER_IMAGE_FILE
from segnet.score_tables import format_metrics_table
from segnet.synthetic import write_dataset
from segnet.train import train

DEMO_IMAGES = 160
DEMO_IMAGE_SIZE = 128
DEMO_EPOCHS = 24


def run_demo(
    out: str | Path, device: str = "auto", images: int = DEMO_IMAGES, size: int = DEMO_IMAGE_SIZE, epochs: int = DEMO_EPOCHS
) -> dict:
    """Run synth -> train -> evaluate -> predict under ``out``; returns the validation metrics."""
    out = Path(out)
    data_dir = out / "data"
    print(f"1/4 writing {images} synthetic {size}x{size} darkfield images to {data_dir}")
    write_dataset(data_dir, count=images, size=size, seed=0)
    print("2/4 training segnet-basic")
    config = load_config(
        overrides={"data": str(data_dir), "out": str(out / "run"), "model": "segnet-basic", "epochs": epochs, "device": device}
    )
    run_dir = train(config, overwrite=True)
    print("3/4 evaluating the validation images at full size")
    options = InferenceOptions(device=device)
    metrics = evaluate_run(run_dir / BEST_CHECKPOINT, data_dir, split="val", options=options)
    write_report(run_dir)
    print("4/4 segmenting and counting the validation images")
    predictor = Predictor.from_checkpoint(run_dir / BEST_CHECKPOINT, options)
    prediction_dir = out / "predictions"
    validation_images = [str(pair.image) for pair in select_pairs(data_dir, "val", run_dir)]
    predict_paths(predictor, validation_images, prediction_dir)
    print()
    print(format_metrics_table(metrics))
    print()
    print(f"run folder:   {run_dir} ({BEST_CHECKPOINT}, {HISTORY_FILE}, {CURVES_FILE})")
    print(f"evaluation:   {run_dir / EVALUATION_FOLDER} ({METRICS_FILE}, {PER_IMAGE_FILE})")
    print(f"report:       {run_dir / REPORT_FILE}")
    print(f"predictions:  {prediction_dir} (masks, overlays, counts.csv)")
    return metrics
