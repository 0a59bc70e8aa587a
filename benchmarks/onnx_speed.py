"""CPU speed of onnxruntime against PyTorch: the same model on the same images, images per second.

Usage::

    python benchmarks/onnx_speed.py                  # segnet-basic on 4 x 512x512, segnet on 2 x 256x256
    python benchmarks/onnx_speed.py --threads 4 --repeats 3

Each model is built untrained (speed does not depend on the weights) and exported with
``segnet.export.model_to_onnx`` into a temporary folder. Both runtimes get the same number of
threads. Images are synthetic darkfield samples, normalised, and each runs as a batch of one, as
``segnet predict`` runs a whole image. One image is run first as a warm-up (memory allocation,
kernel selection for the shape), then all images ``--repeats`` times, PyTorch and onnxruntime
taking turns pass by pass; the fastest pass counts, as the one least disturbed by other processes. The defaults take about two minutes on two cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from segnet.core.hardware import report_hardware
from segnet.data.dataset import normalize_array
from segnet.data.synthetic import generate_sample
from segnet.export.formats import ONNX_INPUT, model_to_onnx
from segnet.model.backends import OnnxModelInfo
from segnet.model.networks import build_model
from segnet.plan.spec import ModelSpec

CLASSES = ("background", "erythrocyte", "spirochete")
MEAN, STD = (0.1, 0.1, 0.1), (0.15, 0.15, 0.15)


def images(count: int, size: int) -> list[np.ndarray]:
    """``count`` normalised synthetic images as ``(1, 3, size, size)`` float32 batches."""
    mean_255, std_255 = np.asarray(MEAN, np.float32) * 255.0, np.asarray(STD, np.float32) * 255.0
    return [
        normalize_array(generate_sample(size, size, np.random.default_rng(seed))[0], mean_255, std_255)[None]
        for seed in range(count)
    ]


def best_pass_seconds(
    runners: dict[str, Callable[[np.ndarray], object]], batches: list[np.ndarray], repeats: int
) -> dict[str, float]:
    """Per runner, seconds of its fastest pass over ``batches``, after one warm-up image.

    The runners take turns pass by pass, so a burst of load from other processes hits both alike.
    """
    for run in runners.values():
        run(batches[0])
    fastest = dict.fromkeys(runners, float("inf"))
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            for batch in batches:
                run(batch)
            fastest[name] = min(fastest[name], time.perf_counter() - start)
    return fastest


def compare(model_name: str, count: int, size: int, threads: int, repeats: int, folder: Path) -> None:
    model = build_model(ModelSpec(model_name, len(CLASSES))).eval()
    onnx_path = folder / f"{model_name}.onnx"
    model_to_onnx(model, OnnxModelInfo(model_name, CLASSES, MEAN, STD, model.total_stride), onnx_path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    batches = images(count, size)

    def run_torch(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    def run_onnx(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {ONNX_INPUT: batch})[0]

    seconds = best_pass_seconds({"torch": run_torch, "onnx": run_onnx}, batches, repeats)
    torch_seconds, onnx_seconds = seconds["torch"], seconds["onnx"]
    print(
        f"{model_name:>13}  {count} x {size}x{size}  PyTorch {count / torch_seconds:6.2f} images/s   "
        f"onnxruntime {count / onnx_seconds:6.2f} images/s   onnxruntime/PyTorch {torch_seconds / onnx_seconds:.2f}x",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="threads for both runtimes (default: all cores)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed passes over the images (default: %(default)s)")
    args = parser.parse_args()
    report_hardware(print)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} threads, "
        f"best of {args.repeats} passes, batch of one image",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as folder:
        compare("segnet-basic", 4, 512, args.threads, args.repeats, Path(folder))
        compare("segnet", 2, 256, args.threads, args.repeats, Path(folder))


if __name__ == "__main__":
    main()
