"""Training throughput: a notebook-style baseline against each speed switch, measured in one run.

    python benchmarks/train_speed.py                                   # CPU, synthetic 512 px images
    python benchmarks/train_speed.py --data /path/to/darkfield          # real images
    python benchmarks/train_speed.py --device cuda --batch-size 16      # a GPU

Every variant trains with ``segnet.train``'s own loader and step (make_train_loader,
train_one_epoch) on its own fresh weights: one untimed warm-up step (which also compiles), then
``--rounds`` rounds of ``--steps`` timed steps. The rounds visit the variants in turn, so a burst
of load from other processes hits them all alike, and each variant keeps its fastest round. A
variant without the decoded-image cache gets a fresh dataset object every round, so it decodes
the PNGs as it goes, as a notebook does.

The table gives images/s, seconds per step, the seconds of each step spent waiting for the data
loader, and the achieved FLOP/s: FLOPs of one training step (forward + backward, counted by
torch.utils.flop_counter.FlopCounterMode: convolutions and matmuls, 2 per multiply-add) x steps/s,
as a fraction of the device's peak. Peak: on a GPU, the dense bf16 tensor-core peak of its datasheet
(table below; a bf16 matmul is measured for GPUs not in it). On the CPU, the "practical peak": the
best of a few 2048 x 2048 matmuls in the variant's dtype (float32, or bfloat16 under autocast),
measured just before each timed round, under the same load. The theoretical figure
(cores x clock x FLOPs per cycle) is printed for reference. The load average is printed before
and after: on a shared machine every number moves with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from segnet.core.distributed import autocast_dtype, compute_dtype, resolve_device
from segnet.core.hardware import report_hardware
from segnet.data.dataset import SegmentationDataset
from segnet.data.pairs import find_pairs
from segnet.data.synthetic import write_dataset
from segnet.data.transforms import train_transform
from segnet.model.losses import build_loss
from segnet.model.networks import build_model
from segnet.plan.config import TrainConfig
from segnet.plan.plan import TrainPlan
from segnet.plan.spec import ModelSpec
from segnet.train.loop import TrainingStep, compile_model, make_train_loader, resolve_memory_layout, train_one_epoch
from segnet.train.runfolder import EpochStats

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s.
GPU_BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,  # SXM (H100 80GB HBM3)
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
}
CPU_FLOPS_PER_CYCLE_FP32 = (32, 64)
"""Per core and cycle, float32, AVX-512 FMA: two FMA pipes x 2 FLOPs x 8 lanes (AMD Zen 4 runs
512-bit FMAs as two 256-bit halves) or x 16 lanes (Zen 5, Intel server cores with two 512-bit FMA
units); bfloat16 dot products (AVX512-BF16) double it."""


@dataclasses.dataclass
class Variant:
    name: str
    amp: bool | None = False  # None: what the defaults pick on this device (segnet.core.distributed.compute_dtype)
    channels_last: bool = False
    num_workers: int = 0
    cache: bool = False  # decode every image once, before training (SegmentationDataset preload)
    compile: bool = False


def variants(with_compile: bool, workers: int, device: torch.device) -> list[Variant]:
    """The baseline, each switch alone, then the defaults together (and with torch.compile).

    The defaults take the dtype and memory layout training picks here: bfloat16 only where it is native,
    channels-last only on GPUs and AVX-512 CPUs. Forced bf16
    is left out where it would be emulated (513 s for one step of a 2-core AVX2 CPU, issue 31).
    """
    default = TrainConfig()
    precision = compute_dtype(device, default.amp)
    channels_last = resolve_memory_layout(default, device).channels_last
    defaults = Variant(
        f"defaults: cache + workers + {precision.name} + {'channels-last' if channels_last else 'NCHW'}",
        amp=default.amp,
        channels_last=channels_last,
        num_workers=workers,
        cache=True,
    )
    chosen = [
        Variant("baseline: fp32, NCHW, no workers, no cache"),
        Variant("+ decoded-image cache", cache=True),
        Variant(f"+ {workers} loader workers (pinned memory on CUDA)", num_workers=workers),
        Variant("+ channels-last", channels_last=True),
        defaults,
    ]
    if not compute_dtype(device, True).emulated:
        chosen.insert(3, Variant("+ bf16 autocast", amp=True))
    if with_compile:
        chosen.append(dataclasses.replace(defaults, name="defaults + torch.compile", compile=True))
    return chosen


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of ``repeats`` square matmuls: the practical peak of dense compute."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first one warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def gpu_datasheet_peak(device: torch.device) -> tuple[float | None, str]:
    name = torch.cuda.get_device_name(device)
    for key, tflops in GPU_BF16_PEAK_TFLOPS.items():  # most specific names first
        if key in name:
            return tflops * 1e12, f"{name}: {tflops:g} TFLOP/s dense bf16 (datasheet)"
    return None, f"{name}: not in the datasheet table, using a measured bf16 matmul"


def cpu_clock_ghz() -> float | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000
    except OSError:
        pass
    return None


def training_step_flops(
    model: torch.nn.Module, loss_fn: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor
) -> int:
    """FLOPs of one forward + backward pass on ``images`` (convolutions and matmuls, 2 per MAC)."""
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(images), masks).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


class VariantRun:
    """One variant's model, optimiser and data, warmed up; ``timed_round`` measures ``steps`` steps."""

    def __init__(self, variant: Variant, args: argparse.Namespace, pairs: list, device: torch.device) -> None:
        self.variant, self.device, self.steps = variant, device, args.steps
        self.config = TrainConfig(
            model=args.model,
            batch_size=args.batch_size,
            image_size=args.crop,
            num_workers=variant.num_workers,
            amp=variant.amp,
            channels_last=variant.channels_last,
            compile=variant.compile,
            seed=0,
        )
        self.num_classes = len(self.config.classes)
        self.warm_pairs, self.timed_pairs = (
            pairs[: args.batch_size],
            pairs[args.batch_size : args.batch_size * (args.steps + 1)],
        )
        torch.manual_seed(0)
        memory_format = torch.channels_last if variant.channels_last else torch.contiguous_format
        model = build_model(ModelSpec(args.model, self.num_classes)).to(device, memory_format=memory_format)
        self.model = compile_model(model, device) if variant.compile else model
        self.loss_fn = build_loss().to(device)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)
        self.amp_dtype = autocast_dtype(device, variant.amp)
        self.dtype = str(self.amp_dtype or torch.float32).removeprefix("torch.")
        self.step = TrainingStep(
            self.model, self.loss_fn, self.optimizer, self.scheduler, device, self.amp_dtype, variant.channels_last
        )
        # The mean/std only shift the inputs; their values do not change the speed.
        self.plan = TrainPlan(
            image_size=args.crop,
            downsample=1,
            focus_class=2,
            mean=[0.2] * 3,
            std=[0.2] * 3,
            class_weights=None,
            batch_size=args.batch_size,
            per_process_batch=args.batch_size,
        )
        self.timed_dataset = self.dataset(self.timed_pairs)
        self.warmup_seconds = self.train(self.dataset(self.warm_pairs), epoch=1).seconds

    def dataset(self, pairs: list) -> SegmentationDataset:
        plan = self.plan
        dataset = SegmentationDataset(pairs, self.num_classes, plan.mean, plan.std, preload=self.variant.cache)
        dataset.transform = train_transform(
            plan.image_size,
            self.config.scale_range,
            self.num_classes,
            focus_class=plan.focus_class,
            focus_probability=self.config.focus_probability,
        )
        return dataset

    def train(self, dataset: SegmentationDataset, epoch: int) -> EpochStats:
        loader = make_train_loader(dataset, self.config, self.plan, epoch, pin_memory=self.device.type == "cuda")
        return train_one_epoch(self.step, loader, epoch, epoch)

    def timed_round(self, round_index: int) -> EpochStats:
        # Without the cache, a fresh dataset object decodes every image again, as each epoch would.
        dataset = self.timed_dataset if self.variant.cache else self.dataset(self.timed_pairs)
        return self.train(dataset, epoch=round_index + 2)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, help="dataset folder (default: synthetic 512 px images in a temporary folder)"
    )
    parser.add_argument("--model", default="segnet-basic", help="architecture (default: %(default)s)")
    parser.add_argument("--crop", type=int, default=256, help="training crop side (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per step (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round (default: %(default)s)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="timed rounds per variant; the fastest counts (default: %(default)s)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="loader workers of the worker variants (default: %(default)s)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        help="skip the torch.compile variant (it compiles for a minute or more)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args()


def time_variants(
    args: argparse.Namespace, pairs: list, device: torch.device, flops_per_step: float, peak_now: Callable[[str], float]
) -> list[dict]:
    """Every variant warmed up, then timed in alternating rounds; each variant's fastest round, its
    FLOP/s compared with ``peak_now(dtype)`` measured before the round."""
    runs = []
    for variant in variants(args.compile, args.workers, device):
        print(f"warming up: {variant.name}", flush=True)
        runs.append(VariantRun(variant, args, pairs, device))
    best: dict[str, dict] = {}
    for round_index in range(args.rounds):
        for run in runs:
            print(f"round {round_index + 1}/{args.rounds}: {run.variant.name}", flush=True)
            peak = peak_now(run.dtype)
            stats = run.timed_round(round_index)
            if run.variant.name in best and stats.images_per_second <= best[run.variant.name]["images_per_second"]:
                continue
            achieved = flops_per_step * stats.images_per_second / args.batch_size
            best[run.variant.name] = {
                "variant": run.variant.name,
                "dtype": run.dtype,
                "warmup_seconds": run.warmup_seconds,
                "images_per_second": stats.images_per_second,
                "seconds_per_step": stats.seconds / args.steps,
                "data_wait_per_step": stats.data_seconds / args.steps,
                "loss": stats.loss,
                "tflops": achieved / 1e12,
                "peak_tflops": peak / 1e12,
                "fraction_of_peak": achieved / peak,
            }
    return list(best.values())


def main() -> None:
    args = parse_args()
    hardware = report_hardware(print, args.device)
    device = resolve_device(args.device)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        needed = args.batch_size * (args.steps + 1)
        data = args.data or write_dataset(Path(scratch) / "synthetic", count=needed, size=512, seed=0)
        pairs = find_pairs(data)
        if len(pairs) < needed:
            raise SystemExit(
                f"{data} holds {len(pairs)} images; {needed} are needed for {args.steps} steps of {args.batch_size} (plus a warm-up step)"
            )
        model = build_model(ModelSpec(args.model, 3)).to(device)
        images = torch.randn(args.batch_size, 3, args.crop, args.crop, device=device)
        masks = torch.randint(0, 3, (args.batch_size, args.crop, args.crop), device=device)
        flops_per_step = training_step_flops(model, build_loss().to(device), images, masks)
        del model
        peak_now, peak_note = peak_reference(device)
        results = time_variants(args, pairs[:needed], device, flops_per_step, peak_now)
    load_after = os.getloadavg()
    print_results(args, device, results, flops_per_step, (load_before, load_after), peak_note)
    if args.json:
        summary = {"hardware": hardware, "args": {k: str(v) for k, v in vars(args).items()}, "flops_per_step": flops_per_step,
                   "peak": peak_note, "load_before": load_before, "load_after": load_after, "results": results}  # fmt: skip
        args.json.write_text(json.dumps(summary, indent=1))


def peak_reference(device: torch.device) -> tuple[Callable[[str], float], str]:
    """What each row's FLOP/s is compared with: a function of the row's dtype, and a note saying what it is."""
    if device.type == "cuda":
        datasheet, peak_note = gpu_datasheet_peak(device)
        bf16_peak = datasheet or matmul_peak(device, torch.bfloat16)
        return (
            lambda dtype: bf16_peak
        ), peak_note + "; every row is compared with the bf16 peak"  # a datasheet peak does not move with load
    cores, clock = os.cpu_count() or 1, cpu_clock_ghz()
    low, high = (cores * (clock or 0) * flops for flops in CPU_FLOPS_PER_CYCLE_FP32)
    peak_note = (
        f"peak = practical peak: the best 2048x2048 matmul in the row's dtype, measured before each round under the same load "
        f"(theoretical: {cores} cores x {clock or 0:.2f} GHz nominal x {'/'.join(map(str, CPU_FLOPS_PER_CYCLE_FP32))} "
        f"FLOP/cycle = {low:.0f}-{high:.0f} GFLOP/s float32, twice that in bfloat16)"
    )
    return (lambda dtype: matmul_peak(device, getattr(torch, dtype))), peak_note


def print_results(
    args: argparse.Namespace,
    device: torch.device,
    results: list[dict],
    flops_per_step: float,
    loads: tuple[tuple, tuple],
    peak_note: str,
) -> None:
    """The setting, then one table row per variant with its speed-up over the first (the baseline)."""
    baseline = results[0]["images_per_second"]
    print()
    print(
        f"segnet training speed: {args.model}, {args.crop}x{args.crop} crops, batch {args.batch_size}, best of {args.rounds} rounds of {args.steps} steps, "
        f"device {device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads), torch {torch.__version__}"
    )
    print(
        f"data: {args.data or 'synthetic 512x512 images'}; FLOPs per training step (fwd+bwd): {flops_per_step / 1e9:.1f} GFLOP"
    )
    print(
        f"load average (1/5/15 min) before: {' '.join(f'{x:.2f}' for x in loads[0])}, after: {' '.join(f'{x:.2f}' for x in loads[1])}"
    )
    print(peak_note)
    print()
    print(
        "| variant | dtype | images/s | speed-up | s/step | data wait s/step | achieved TFLOP/s | peak TFLOP/s | % of peak | warm-up s | loss |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in results:
        print(
            f"| {row['variant']} | {row['dtype']} | {row['images_per_second']:.2f} | {row['images_per_second'] / baseline:.2f}x | "
            f"{row['seconds_per_step']:.2f} | {row['data_wait_per_step']:.2f} ({100 * row['data_wait_per_step'] / row['seconds_per_step']:.0f}%) | "
            f"{row['tflops']:.4f} | {row['peak_tflops']:.4f} | {100 * row['fraction_of_peak']:.0f}% | {row['warmup_seconds']:.1f} | {row['loss']:.3f} |"
        )


if __name__ == "__main__":
    main()
