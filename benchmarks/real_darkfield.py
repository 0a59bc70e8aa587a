"""Train with the project's defaults on the real darkfield images and score the held-out 10%.

    python benchmarks/real_darkfield.py --data ../shared/darkfield            # the seed-0 split
    python benchmarks/real_darkfield.py --data ../shared/darkfield --seed 1   # another split (and seed)

In the same run it trains the original notebook's recipe as a baseline, on the same split and
scored the same way (every validation pixel at full resolution, one confusion matrix):
its 3-stage SegNet with BatchNorm+ReLU on the logits, images and masks resized to 256x256 (the
mask bilinearly, as the notebook did), Adam at lr 0.01, class weights 1 - frequency, no
augmentation. Its predictions are made at 256x256 and resized back (nearest) for scoring.

Both are also scored on objects and image-level presence (segnet.detection: object recall,
precision and F1, sensitivity and specificity per class). Prints both metric tables and a
comparison, and writes OUT/summary.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from segnet.config import ClassRoles, load_config
from segnet.data import find_pairs, load_pair, read_split
from segnet.detection import DetectionScores
from segnet.distributed import autocast_dtype, resolve_device
from segnet.evaluate import evaluate_run
from segnet.hardware import report_hardware
from segnet.inference import InferenceOptions, parse_diameter
from segnet.metrics import ConfusionMatrix, metrics_from_confusion
from segnet.report import write_report
from segnet.score_tables import format_metrics_table
from segnet.model import build_model
from segnet.spec import ModelSpec
from segnet.train import train

NOTEBOOK_SIZE = 256


def resize_tensor(array: np.ndarray, mode: str) -> torch.Tensor:
    """HxW[xC] array -> (C, 256, 256) float tensor, resized with ``mode``."""
    tensor = torch.from_numpy(array).float()
    tensor = tensor.permute(2, 0, 1) if tensor.ndim == 3 else tensor[None]
    return F.interpolate(tensor[None], size=(NOTEBOOK_SIZE, NOTEBOOK_SIZE), mode=mode, align_corners=False)[0]


def notebook_baseline(data: Path, split_file: Path, epochs: int, device: torch.device, class_names: list[str]) -> dict:
    """Train and score the notebook's recipe; returns metrics plus training minutes."""
    pairs = find_pairs(data)
    train_pairs, val_pairs = read_split(split_file, pairs, "train"), read_split(split_file, pairs, "val")
    num_classes = len(class_names)
    images, masks = [], []
    for pair in tqdm(train_pairs, desc="baseline: resizing", leave=False):
        image, mask = load_pair(pair, num_classes)
        images.append(resize_tensor(image, "bilinear") / 255.0)
        # The notebook resized masks bilinearly and truncated to integers, inventing labels at edges.
        masks.append(resize_tensor(mask, "bilinear")[0].long())
    images, masks = torch.stack(images), torch.stack(masks)
    frequencies = torch.bincount(masks.flatten(), minlength=num_classes).float() / masks.numel()
    torch.manual_seed(0)
    # The recipe is the notebook's; the speed switches are the project's, so both get the same hardware.
    model = build_model(ModelSpec("notebook-segnet", num_classes)).to(device, memory_format=torch.channels_last)
    amp_dtype = autocast_dtype(device, None)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss(weight=(1 - frequencies).to(device))
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(images))
        losses = []
        for start in tqdm(range(0, len(order), 8), desc=f"baseline epoch {epoch}/{epochs}", leave=False):
            batch = order[start : start + 8]
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(images[batch].to(device, memory_format=torch.channels_last))
            loss = loss_fn(logits.float(), masks[batch].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        print(f"baseline epoch {epoch}/{epochs}: train loss {np.mean(losses):.4f}", flush=True)
    minutes = (time.perf_counter() - started) / 60
    model.eval()
    confusion = ConfusionMatrix(num_classes)
    detection = DetectionScores(ClassRoles.of(class_names))
    with torch.inference_mode():
        for pair in tqdm(val_pairs, desc="baseline: scoring", leave=False):
            image, mask = load_pair(pair, num_classes)
            logits = model((resize_tensor(image, "bilinear") / 255.0)[None].to(device))
            prediction = F.interpolate(logits.argmax(1, keepdim=True).float(), size=mask.shape, mode="nearest")[0, 0].long()
            confusion.update(torch.from_numpy(mask).long(), prediction.cpu())
            detection.add(pair.stem, mask, prediction.cpu().numpy().astype(np.uint8))
    metrics = metrics_from_confusion(confusion.mat, class_names)
    metrics.update(detection.sections(class_names))
    metrics["num_images"] = len(val_pairs)
    metrics["train_minutes"] = minutes
    return metrics


def print_detection_comparison(ours: dict, theirs: dict) -> None:
    """Object F1 and image-level sensitivity/specificity per class, project against baseline."""
    print(f"\n{'objects and presence':<26} project  notebook")
    for name in ours["objects"]:
        for label, section, key in (("object F1", "objects", "f1"), ("sensitivity", "presence", "sensitivity"), ("specificity", "presence", "specificity")):
            values = [scores[section][name][key] for scores in (ours, theirs)]
            cells = ["-" if value is None else f"{value:.3f}" for value in values]
            print(f"{name + ' ' + label:<26} {cells[0]:>7}  {cells[1]:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/darkfield"), help="real darkfield folder")
    parser.add_argument("--out", type=Path, help="output folder (default: runs/real_darkfield, runs/real_darkfield_seed1 for --seed 1, ...)")
    parser.add_argument("--seed", type=int, help="seed of the train/validation split and of training (default: the config default, 0)")
    parser.add_argument("--model", default="segnet-basic", help="model trained with the project's defaults")
    parser.add_argument("--epochs", type=int, default=None, help="epochs for the project's model (default: the config default)")
    parser.add_argument("--val-every", type=int, default=None, help="validate every N epochs (default: the config default)")
    parser.add_argument("--baseline-epochs", type=int, default=8, help="epochs for the notebook baseline (0 skips it)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--config", type=Path, help="YAML config for the project's model (flags win)")
    parser.add_argument("--diameter", type=parse_diameter, help="score with each image rescaled to the model's red-cell size: PX or auto (default: as given)")
    args = parser.parse_args()
    hardware = report_hardware(print, args.device)
    if args.out is None:
        args.out = Path("runs/real_darkfield" + (f"_seed{args.seed}" if args.seed else ""))

    run_dir = args.out / args.model
    config = load_config(
        args.config,
        {"data": str(args.data), "out": str(run_dir), "model": args.model, "epochs": args.epochs, "val_every": args.val_every, "device": args.device,
         "seed": args.seed},
    )
    started = time.perf_counter()
    train(config, overwrite=True)
    train_minutes = (time.perf_counter() - started) / 60
    # The headline is best.pt with TTA, as `segnet evaluate` scores by default; the same weights
    # without TTA show what TTA adds.
    options = InferenceOptions(device=args.device, diameter=args.diameter)
    metrics = evaluate_run(run_dir / "best.pt", args.data, split="val", options=options)
    write_report(run_dir)
    plain = evaluate_run(run_dir / "best.pt", args.data, split="val", out=args.out / "best_no_tta", options=options.replace(tta=False))
    history = list(csv.DictReader((run_dir / "history.csv").read_text().splitlines()))
    validated = [row for row in history if row["val_mean_iou"]]
    best = max(validated, key=lambda row: float(row["val_mean_iou"]))
    project = {"config": config.to_dict(), "train_minutes": train_minutes, "metrics": metrics, "metrics_without_tta": plain}
    summary = {"hardware": hardware, "project": project}
    print(f"\n== {args.model}, project defaults, seed {config.seed}: trained {train_minutes:.1f} min, scored on {metrics['num_images']} held-out images ==")
    print(format_metrics_table(metrics))
    ious = ", ".join(f"{name} {plain['per_class'][name]['iou']:.3f}" for name in config.classes)
    print(f"without TTA: mean IoU {plain['mean_iou']:.3f} ({ious})")
    # best.pt is chosen on these same images; the last epoch's score shows how much that choice flatters.
    print(
        f"validation mean IoU during training (no TTA, no calibration): best {float(best['val_mean_iou']):.3f} "
        f"at epoch {best['epoch']}, last {float(validated[-1]['val_mean_iou']):.3f} at epoch {validated[-1]['epoch']}"
    )

    if args.baseline_epochs > 0:
        baseline = notebook_baseline(args.data, run_dir / "split.json", args.baseline_epochs, resolve_device(args.device), config.classes)
        summary["notebook_baseline"] = baseline
        print(f"\n== notebook recipe baseline: trained {baseline['train_minutes']:.1f} min ==")
        print(format_metrics_table(baseline))
        print("\nclass IoU        project  notebook")
        for name in config.classes:
            ours, theirs = metrics["per_class"][name]["iou"], baseline["per_class"][name]["iou"]
            print(f"{name:<15} {ours if ours is None else f'{ours:.3f}':>7}  {theirs if theirs is None else f'{theirs:.3f}':>8}")
        print(f"{'mean IoU':<15} {metrics['mean_iou']:>7.3f}  {baseline['mean_iou']:>8.3f}")
        print_detection_comparison(metrics, baseline)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nsummary: {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
