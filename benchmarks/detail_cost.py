"""What a full-resolution detail branch (``--detail-width``) costs a training step.

    python benchmarks/detail_cost.py                         # segnet-basic at 1/3, 480 px crops, batch 4
    python benchmarks/detail_cost.py --widths 0 8 16 32 --threads 2

Times one forward + backward step (bfloat16 autocast and channels-last on the CPU, as ``segnet
train`` runs; float32 on a GPU) of the model built with each detail width, in turn for
``--rounds`` rounds so a burst of load hits every width alike, and prints each width's fastest
step and its ratio to width 0 (no branch), measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch

from segnet.core.hardware import report_hardware
from segnet.model.networks import build_model
from segnet.plan.spec import ModelSpec


def step_seconds(model: torch.nn.Module, batch: torch.Tensor, device: torch.device) -> float:
    """Seconds of one forward + backward pass of ``model`` on ``batch``."""
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cpu"):
        logits = model(batch)
    logits.float().sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="segnet-basic", help="architecture (default: %(default)s)")
    parser.add_argument("--downsample", type=int, default=3, help="model resolution 1/K (default: %(default)s)")
    parser.add_argument(
        "--widths", type=int, nargs="+", default=[0, 8, 16, 32], help="detail widths (0, the baseline, is added)"
    )
    parser.add_argument("--crop", type=int, default=480, help="crop side (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4, help="crops per step (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; the fastest counts (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    args = parser.parse_args()
    report_hardware(print, args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    widths = sorted({0, *args.widths})
    models = {
        width: build_model(ModelSpec(args.model, 3, downsample=args.downsample, detail_width=width))
        .train()
        .to(device, memory_format=torch.channels_last)
        for width in widths
    }
    batch = torch.randn(args.batch_size, 3, args.crop, args.crop, device=device).to(memory_format=torch.channels_last)
    for model in models.values():
        step_seconds(model, batch, device)  # warm-up
    best = dict.fromkeys(widths, float("inf"))
    for _ in range(args.rounds):
        for width in widths:
            best[width] = min(best[width], step_seconds(models[width], batch, device))
    print(f"{args.model} at 1/{args.downsample}, batch {args.batch_size} of {args.crop} px on {device}:")
    print("| detail width | parameters | s per step | ratio to none |")
    print("|---|---|---|---|")
    for width in widths:
        parameters = sum(p.numel() for p in models[width].parameters())
        print(f"| {width} | {parameters:,} | {best[width]:.3f} | {best[width] / best[0]:.2f}x |")


if __name__ == "__main__":
    main()
