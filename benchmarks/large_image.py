"""Peak memory and time of tiled vs whole-image inference on one large synthetic image.

Usage::

    python benchmarks/large_image.py                 # 4096 x 4096, tiles of 512
    python benchmarks/large_image.py --size 2048 --tile 512 --threads 2
    python benchmarks/large_image.py --checkpoint demo_output/run/best.pt --piece 128 --threads 2

The image is a mosaic of ``--piece`` x ``--piece`` synthetic darkfield samples (one sample
generated at the full size would have cells hundreds of pixels wide; a trained checkpoint should
see pieces of the size it was trained on: 128 for ``make demo``'s model). The model is an untrained ``segnet-basic``, or a
trained one with ``--checkpoint``. Each mode runs in a fresh subprocess, so its peak resident
memory (``ru_maxrss``, which sees torch's allocations; ``tracemalloc`` does not) is its own; the
process's peak before inference (Python, torch, the model and the image) is reported separately.

Expect whole-image inference of ``segnet-basic`` to need several GB at 2048 x 2048 and about four
times that at 4096 x 4096: each 64-channel float32 feature map at full size is 4 GB there.

Agreement is the fraction of pixels given the same class by both modes. An untrained network
is a worst case for it: its outputs are near-uniform, depend on the whole receptive field
(about 180 pixels for segnet-basic) and flip class on tiny changes, so expect the agreement
to be much higher for a trained checkpoint.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_mosaic(size: int, piece: int, seed: int = 0) -> np.ndarray:
    """A ``size x size`` RGB image tiled from ``piece``-sided synthetic samples (the last row/column cropped)."""
    from segnet.data.synthetic import generate_sample

    pieces = -(-size // piece)
    rows = []
    for child_row in np.random.SeedSequence(seed).spawn(pieces):
        row = [generate_sample(piece, piece, np.random.default_rng(child))[0] for child in child_row.spawn(pieces)]
        rows.append(np.concatenate(row, axis=1))
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:size, :size])


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_mode(args: argparse.Namespace) -> None:
    """Worker: predict the saved image in one mode, save the mask, print a JSON result line."""
    import torch

    from segnet.model.networks import build_model
    from segnet.model.options import InferenceOptions
    from segnet.model.predictor import Predictor
    from segnet.plan.spec import ModelSpec

    torch.set_num_threads(args.threads)
    tile = args.tile if args.mode == "tiled" else None
    options = InferenceOptions(
        device="cpu", tile=tile, overlap=args.overlap, batch_size=args.batch_size, tta=False, diameter=None
    )
    if args.checkpoint:
        predictor = Predictor.from_checkpoint(args.checkpoint, options)
    else:
        torch.manual_seed(0)  # both modes build the same untrained weights
        model = build_model(ModelSpec("segnet-basic", 3))
        class_names = ["background", "erythrocyte", "spirochete"]
        predictor = Predictor(model, class_names, [0.1] * 3, [0.15] * 3, options)
    image = np.load(args.workdir / "image.npy")
    before = peak_rss_mib()
    start = time.perf_counter()
    mask = predictor.predict(image)
    seconds = time.perf_counter() - start
    np.save(args.workdir / f"mask_{args.mode}.npy", mask)
    print(json.dumps({"mode": args.mode, "seconds": seconds, "peak_rss_mib": peak_rss_mib(), "rss_before_mib": before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--tile", type=int, default=512, help="tile side in pixels (default: %(default)s)")
    parser.add_argument("--overlap", type=float, default=0.25, help="tile overlap fraction (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--checkpoint", help="a trained checkpoint instead of an untrained segnet-basic")
    parser.add_argument(
        "--piece",
        type=int,
        default=512,
        help="side of the synthetic samples the mosaic is made of (default: %(default)s)",
    )
    parser.add_argument("--mode", choices=("tiled", "whole"), help=argparse.SUPPRESS)  # worker subprocess
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        run_mode(args)
        return
    import torch  # here, not at the top: each worker's memory is measured from its own start

    from segnet.core.hardware import report_hardware

    torch.set_num_threads(args.threads)  # as the workers run, so the hardware line says so
    report_hardware(print)

    with tempfile.TemporaryDirectory(prefix="segnet-bench-") as workdir:
        np.save(Path(workdir) / "image.npy", make_mosaic(args.size, args.piece))
        worker = [sys.executable, __file__, *sys.argv[1:], "--workdir", workdir]
        results = {}
        for mode in ("tiled", "whole"):
            print(f"running {mode} inference on {args.size}x{args.size} ...", flush=True)
            done = subprocess.run([*worker, "--mode", mode], check=True, capture_output=True, text=True)
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        agreement = float(
            (np.load(Path(workdir) / "mask_tiled.npy") == np.load(Path(workdir) / "mask_whole.npy")).mean()
        )

    print(f"{'mode':<8}{'seconds':>10}{'peak RSS MiB':>15}{'before MiB':>13}{'inference MiB':>16}")
    for mode, result in results.items():
        print(
            f"{mode:<8}{result['seconds']:>10.1f}{result['peak_rss_mib']:>15.0f}{result['rss_before_mib']:>13.0f}"
            f"{result['peak_rss_mib'] - result['rss_before_mib']:>16.0f}"
        )
    tiled, whole = results["tiled"], results["whole"]
    print(f"time tiled / whole:           {tiled['seconds'] / whole['seconds']:.2f}")
    print(f"peak memory tiled / whole:    {tiled['peak_rss_mib'] / whole['peak_rss_mib']:.2f}")
    print(f"pixels with the same class:   {agreement:.4%}")


if __name__ == "__main__":
    main()
