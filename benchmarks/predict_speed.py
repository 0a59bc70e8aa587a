"""Images per second of ``segnet predict``'s predictor on this CPU: PyTorch and onnxruntime, TTA off and on.

Usage::

    python benchmarks/predict_speed.py                 # 694x528, segnet-basic at K=3, 2 timed passes of 3 images
    python benchmarks/predict_speed.py --threads 2 --images 3 --repeats 2

What is timed is :meth:`segnet.predict.Predictor.predict_proba` on a whole image (normalisation,
the network, the 8 flips and rotations with TTA, softmax), in one process, as ``segnet predict``
runs it; reading and writing files are left out (they run in background threads there). The
model is segnet-basic at the default K=3 downsample with randomly initialised weights (speed does
not depend on the weights), exported to ONNX with ``segnet.export.model_to_onnx`` for the
onnxruntime rows. Images are synthetic darkfield samples of the typical real size, 694x528. The
baseline, measured in the same run, is PyTorch without TTA; each row prints its ratio to it. The
configurations take turns pass by pass and the fastest pass counts (``onnx_speed.py``), as the one
least disturbed by other processes on a shared machine. Each row also says how close it runs to the
hardware: its FLOPs per image (convolutions, counted by FlopCounterMode on the PyTorch predictor, 2 per
multiply-add) x images/s, against the best float32 2048x2048 matmul of this run (``train_speed.py``'s
practical peak).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from onnx_speed import best_pass_seconds
from torch.utils.flop_counter import FlopCounterMode
from train_speed import matmul_peak

from segnet.core.hardware import report_hardware
from segnet.data.synthetic import generate_sample
from segnet.export.formats import model_to_onnx
from segnet.model.backends import OnnxModelInfo
from segnet.model.networks import build_model
from segnet.model.options import InferenceOptions
from segnet.model.predictor import Predictor
from segnet.plan.spec import ModelSpec

CLASSES = ("background", "erythrocyte", "spirochete")
MEAN, STD = (0.1, 0.1, 0.1), (0.15, 0.15, 0.15)
WIDTH, HEIGHT = 694, 528


def predictors(onnx_path: Path) -> dict[str, Predictor]:
    """PyTorch and onnxruntime predictors of one random segnet-basic (K=3), without and with TTA."""
    model = build_model(ModelSpec("segnet-basic", len(CLASSES), downsample=3)).eval()
    model_to_onnx(model, OnnxModelInfo("segnet-basic", CLASSES, MEAN, STD, model.total_stride), onnx_path)
    built = {}
    for tta in (False, True):
        suffix = "TTA on " if tta else "TTA off"
        options = InferenceOptions(device="cpu", tta=tta, diameter=None)
        built[f"PyTorch      {suffix}"] = Predictor(model, CLASSES, MEAN, STD, options)
        built[f"onnxruntime  {suffix}"] = Predictor.from_onnx(onnx_path, options)
    return built


def prediction_flops(predictor: Predictor, image: np.ndarray) -> int:
    """FLOPs of predicting one image (every TTA view included)."""
    with FlopCounterMode(display=False) as counter:
        predictor.predict_proba(image)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="PyTorch threads; onnxruntime uses all cores (default: all cores)",
    )
    parser.add_argument("--images", type=int, default=3, help="images per timed pass (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes (default: %(default)s)")
    args = parser.parse_args()
    report_hardware(print)
    torch.set_num_threads(args.threads)
    images = [generate_sample(HEIGHT, WIDTH, np.random.default_rng(seed))[0] for seed in range(args.images)]
    load = os.getloadavg()[0]
    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} PyTorch threads, {os.cpu_count()} cores, "
        f"load average {load:.1f} at the start; {args.images} images of {WIDTH}x{HEIGHT}, best of {args.repeats} passes",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as folder:
        built = predictors(Path(folder) / "model.onnx")
        # FLOPs per image with and without TTA, counted on PyTorch's predictors; onnxruntime's rows do the same work
        flops = {
            "TTA on" in name: prediction_flops(predictor, images[0])
            for name, predictor in built.items()
            if name.startswith("PyTorch")
        }
        runners = {name: predictor.predict_proba for name, predictor in built.items()}
        seconds = best_pass_seconds(runners, images, args.repeats)
    peak = matmul_peak(torch.device("cpu"), torch.float32)
    baseline = seconds["PyTorch      TTA off"]
    for name, taken in seconds.items():
        achieved = flops["TTA on" in name] * args.images / taken
        print(
            f"{name}  {args.images / taken:6.2f} images/s   {baseline / taken:5.2f}x the baseline (PyTorch, TTA off)   "
            f"{achieved / 1e9:6.1f} GFLOP/s, {achieved / peak:4.0%} of the float32 matmul peak",
            flush=True,
        )
    print(f"float32 matmul peak (best 2048x2048 matmul, this run): {peak / 1e9:.1f} GFLOP/s; "
          f"{flops[False] / 1e9:.1f} GFLOP per image without TTA", flush=True)  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.1f} at the end", flush=True)


if __name__ == "__main__":
    main()
