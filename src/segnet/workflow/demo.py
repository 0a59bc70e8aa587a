"""`segnet demo`: the whole workflow on built-in synthetic data, in about five minutes on any 2-core CPU.

It writes a synthetic darkfield dataset, trains the default model with the project's defaults for a
time budget (the epoch count is only a ceiling: a CPU without native bf16 trains several times
slower, and the demo should end when promised there too; what differs is the accuracy reached),
evaluates the held-out images at full size, and segments and counts them, then reports the
validation metrics and where everything is. It starts with the hardware line (CPU, cores, SIMD
level, and the compute dtype with the reason), so a slow run says why.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from segnet.core.runfiles import BEST_CHECKPOINT, CURVES_FILE, EVALUATION_FOLDER, HISTORY_FILE, REPORT_FILE
from segnet.plan.spec import DEFAULT_MODEL

if TYPE_CHECKING:
    from segnet.evaluate.metrics import EvaluationMetrics

DEMO_IMAGES = 160
DEMO_IMAGE_SIZE = 128
DEMO_EPOCHS = 24
"""The ceiling: the most epochs the budget may fit (the U-Net fitted 20 on one core with native bf16, 9 in float32: README)."""
DEMO_TIME_BUDGET = 3.5
"""Minutes of training: with data, evaluation, report and prediction the demo ends within 5 minutes on 2 cores."""


def run_demo(
    out: str | Path,
    device: str = "auto",
    images: int = DEMO_IMAGES,
    size: int = DEMO_IMAGE_SIZE,
    epochs: int = DEMO_EPOCHS,
    time_budget: float = DEMO_TIME_BUDGET,
    log: Callable[[str], None] = print,
) -> EvaluationMetrics:
    """Run synth -> train (``time_budget`` minutes, at most ``epochs``) -> evaluate -> predict under ``out``; returns the validation metrics."""
    # Imported here: `segnet --help` reads the defaults above without loading torch.
    from segnet.core.hardware import describe_hardware
    from segnet.data.pairs import select_pairs
    from segnet.data.synthetic import write_dataset
    from segnet.evaluate.run import evaluate_run
    from segnet.evaluate.score import METRICS_FILE, PER_IMAGE_FILE
    from segnet.evaluate.tables import format_metrics_table
    from segnet.model.options import DEFAULT_INFERENCE
    from segnet.model.predictor import Predictor
    from segnet.plan.config import load_config
    from segnet.predict.files import predict_paths
    from segnet.report.page import write_report
    from segnet.train.loop import train

    out = Path(out)
    data_dir = out / "data"
    hardware = describe_hardware(device).line()
    log(hardware)
    log(f"1/4 writing {images} synthetic {size}x{size} darkfield images to {data_dir}")
    write_dataset(data_dir, count=images, size=size, seed=0)
    log(f"2/4 training {DEFAULT_MODEL} for {time_budget:g} minutes (at most {epochs} epochs)")
    config = load_config(
        overrides={
            "data": str(data_dir),
            "out": str(out / "run"),
            "epochs": epochs,
            "time_budget": time_budget,
            "device": device,
        }
    )
    # The run names its hardware too: the same line twice in a row says nothing new.
    run_dir = train(config, overwrite=True, progress_log=lambda line: None if line == hardware else log(line))
    log("3/4 evaluating the validation images at full size")
    options = DEFAULT_INFERENCE.replace(device=device)
    metrics = evaluate_run(run_dir / BEST_CHECKPOINT, data_dir, split="val", options=options)
    write_report(run_dir)
    log("4/4 segmenting and counting the validation images")
    predictor = Predictor.from_checkpoint(run_dir / BEST_CHECKPOINT, options)
    prediction_dir = out / "predictions"
    validation_images = [str(pair.image) for pair in select_pairs(data_dir, "val", run_dir)]
    predict_paths(predictor, validation_images, prediction_dir, log=log)
    log("")
    log(format_metrics_table(metrics))
    log("")
    log(f"run folder:   {run_dir} ({BEST_CHECKPOINT}, {HISTORY_FILE}, {CURVES_FILE})")
    log(f"evaluation:   {run_dir / EVALUATION_FOLDER} ({METRICS_FILE}, {PER_IMAGE_FILE})")
    log(f"report:       {run_dir / REPORT_FILE}")
    log(f"predictions:  {prediction_dir} (masks, overlays with outlines, ids and counts, counts.csv, objects.csv)")
    return metrics
