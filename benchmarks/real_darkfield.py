"""Train with the project's defaults on the real darkfield images and score the held-out 10%.

    python benchmarks/real_darkfield.py --data ../shared/darkfield            # the seed-0 split
    python benchmarks/real_darkfield.py --data ../shared/darkfield --seed 1   # another split (and seed)

In the same run it trains the original notebook's recipe as a baseline, on the same split and
scored the same way (every validation pixel at full resolution, one confusion matrix): its
3-stage SegNet with BatchNorm+ReLU on the logits (benchmarks/notebook_segnet.py), images and masks
resized to 256x256 (the mask bilinearly, as the notebook did), Adam at lr 0.01, class weights
1 - frequency, no augmentation. Its predictions are made at 256x256 and resized back (nearest) for scoring.

Both are scored by the same code (segnet.evaluate.score, as ``segnet score`` scores any tool's masks): pixels,
boundaries, counts, objects and image-level presence (segnet.evaluate.detection: object recall, precision
and F1, sensitivity and specificity per class). Prints both metric tables and a comparison, and
writes OUT/summary.json (the notebook's scores also to OUT/notebook_recipe/). benchmarks/peers.py
trains the same recipe (:func:`train_notebook`, :func:`predict_notebook`) for a time budget.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from notebook_segnet import NOTEBOOK_MODEL, register_notebook_segnet
from tqdm import tqdm

from segnet.core.distributed import autocast_dtype, resolve_device
from segnet.core.hardware import report_hardware
from segnet.data.classes import ClassRoles
from segnet.data.pairs import Pair, find_pairs, load_pair, read_image, read_split
from segnet.evaluate.metrics import EvaluationMetrics
from segnet.evaluate.run import evaluate_run
from segnet.evaluate.score import (
    PREDICTIONS_FOLDER,
    ScoredPair,
    ScoreSettings,
    make_folder,
    save_prediction,
    score_pairs,
)
from segnet.evaluate.tables import format_metrics_table, format_score
from segnet.model.networks import build_model
from segnet.model.options import DEFAULT_INFERENCE, InferenceOptions, parse_diameter
from segnet.plan.config import TrainConfig, load_config
from segnet.plan.spec import ModelSpec
from segnet.report.page import write_report
from segnet.train.loop import train

NOTEBOOK_SIZE = 256


def resize_tensor(array: np.ndarray, mode: str) -> torch.Tensor:
    """HxW[xC] array -> (C, 256, 256) float tensor, resized with ``mode``."""
    tensor = torch.from_numpy(array).float()
    tensor = tensor.permute(2, 0, 1) if tensor.ndim == 3 else tensor[None]
    return F.interpolate(tensor[None], size=(NOTEBOOK_SIZE, NOTEBOOK_SIZE), mode=mode, align_corners=False)[0]


def train_notebook(
    train_pairs: Sequence[Pair],
    class_names: Sequence[str],
    device: torch.device,
    *,
    epochs: int | None = None,
    budget_minutes: float | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Train the notebook's recipe for ``epochs``, or until ``budget_minutes`` of wall-clock time have
    passed (checked after every step; at least one step); returns the model and its training numbers
    (``train_minutes``, ``epochs``, ``images_per_second``)."""
    num_classes = len(class_names)
    images, masks = [], []
    for pair in tqdm(train_pairs, desc="notebook: resizing", leave=False):
        image, mask = load_pair(pair, num_classes)
        images.append(resize_tensor(image, "bilinear") / 255.0)
        # The notebook resized masks bilinearly and truncated to integers, inventing labels at edges.
        masks.append(resize_tensor(mask, "bilinear")[0].long())
    images, masks = torch.stack(images), torch.stack(masks)
    frequencies = torch.bincount(masks.flatten(), minlength=num_classes).float() / masks.numel()
    torch.manual_seed(0)
    # The recipe is the notebook's; the speed switches are the project's, so both get the same hardware.
    register_notebook_segnet()
    model = build_model(ModelSpec(NOTEBOOK_MODEL, num_classes)).to(device, memory_format=torch.channels_last)
    amp_dtype = autocast_dtype(device, None)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss(weight=(1 - frequencies).to(device))
    started, seen, epoch = time.perf_counter(), 0, 0
    out_of_time = False
    while not out_of_time and (epochs is None or epoch < epochs):
        epoch += 1
        model.train()
        order = torch.randperm(len(images))
        losses = []
        for start in tqdm(range(0, len(order), 8), desc=f"notebook epoch {epoch}", leave=False):
            batch = order[start : start + 8]
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(images[batch].to(device, memory_format=torch.channels_last))
            loss = loss_fn(logits.float(), masks[batch].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            seen += len(batch)
            out_of_time = budget_minutes is not None and time.perf_counter() - started > 60 * budget_minutes
            if out_of_time:
                break
        print(f"notebook epoch {epoch}: train loss {np.mean(losses):.4f}", flush=True)
    seconds = time.perf_counter() - started
    return model.eval(), {"train_minutes": seconds / 60, "epochs": epoch, "images_per_second": seen / seconds}


def predict_notebook(model: torch.nn.Module, image: np.ndarray, device: torch.device) -> np.ndarray:
    """The notebook's prediction: the image resized to 256x256, its class map resized back (nearest)."""
    with torch.inference_mode():
        logits = model((resize_tensor(image, "bilinear") / 255.0)[None].to(device))
        prediction = F.interpolate(logits.argmax(1, keepdim=True).float(), size=image.shape[:2], mode="nearest")[0, 0]
    return prediction.to(torch.uint8).cpu().numpy()


def notebook_baseline(
    data: Path, split_file: Path, epochs: int, device: torch.device, class_names: list[str], out: Path
) -> tuple[EvaluationMetrics, float]:
    """Train the notebook's recipe on the split's training images and score it on its held-out
    images as ``segnet score`` does (into ``out``); returns the metrics and the training minutes."""
    pairs = find_pairs(data)
    train_pairs, val_pairs = read_split(split_file, pairs, "train"), read_split(split_file, pairs, "val")
    model, trained = train_notebook(train_pairs, class_names, device, epochs=epochs)
    prediction_dir = make_folder(out / PREDICTIONS_FOLDER)
    scored = []
    for pair in tqdm(val_pairs, desc="notebook: predicting", leave=False):
        save_prediction(predict_notebook(model, read_image(pair.image), device), prediction_dir / f"{pair.stem}.png")
        scored.append(ScoredPair(pair.stem, pair.mask, prediction_dir / f"{pair.stem}.png", pair.image))
    settings = ScoreSettings(tuple(class_names), ClassRoles.of(class_names))
    metrics = score_pairs(
        scored, settings, out, {"data": str(data), "split": "val", "model": "notebook recipe"}, progress=False
    )
    return metrics, trained["train_minutes"]


def print_detection_comparison(ours: EvaluationMetrics, theirs: EvaluationMetrics) -> None:
    """Object F1 and image-level sensitivity/specificity per class, project against baseline."""
    print(f"\n{'objects and presence':<26} project  notebook")
    both = (ours, theirs)
    for name in ours.objects or {}:
        for label, values in (
            ("object F1", [scores.objects[name].f1 for scores in both]),
            ("sensitivity", [scores.presence[name].sensitivity for scores in both]),
            ("specificity", [scores.presence[name].specificity for scores in both]),
        ):
            cells = [format_score(value) for value in values]
            print(f"{name + ' ' + label:<26} {cells[0]:>7}  {cells[1]:>8}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/darkfield"), help="real darkfield folder")
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder (default: runs/real_darkfield, runs/real_darkfield_seed1 for --seed 1, ...)",
    )
    parser.add_argument(
        "--seed", type=int, help="seed of the train/validation split and of training (default: the config default, 0)"
    )
    parser.add_argument(
        "--model", help="model trained with the project's defaults (default: the config's, else segnet's)"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs for the project's model (default: the config default)"
    )
    parser.add_argument(
        "--val-every", type=int, default=None, help="validate every N epochs (default: the config default)"
    )
    parser.add_argument("--baseline-epochs", type=int, default=8, help="epochs for the notebook baseline (0 skips it)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--config", type=Path, help="YAML config for the project's model (flags win)")
    parser.add_argument(
        "--diameter",
        type=parse_diameter,
        default=DEFAULT_INFERENCE.diameter,
        help="score with each image rescaled to the model's red-cell size: PX, auto or none (default: as segnet evaluate)",
    )
    args = parser.parse_args()
    if args.out is None:
        args.out = Path("runs/real_darkfield" + (f"_seed{args.seed}" if args.seed else ""))
    return args


def train_and_score(args: argparse.Namespace, config: TrainConfig) -> tuple[EvaluationMetrics, dict]:
    """Train the project's model as ``config`` says, score best.pt on the held-out images with TTA
    (as `segnet evaluate` scores by default) and without (what TTA adds); print both."""
    run_dir = Path(config.out)
    started = time.perf_counter()
    train(config, overwrite=True)
    train_minutes = (time.perf_counter() - started) / 60
    options = InferenceOptions(device=args.device, diameter=args.diameter)
    metrics = evaluate_run(run_dir / "best.pt", args.data, split="val", options=options)
    write_report(run_dir)
    plain = evaluate_run(
        run_dir / "best.pt", args.data, split="val", out=args.out / "best_no_tta", options=options.replace(tta=False)
    )
    history = list(csv.DictReader((run_dir / "history.csv").read_text().splitlines()))
    validated = [row for row in history if row["val_mean_iou"]]
    best = max(validated, key=lambda row: float(row["val_mean_iou"]))
    print(
        f"\n== {config.model}, project defaults, seed {config.seed}: trained {train_minutes:.1f} min, scored on {metrics.num_images} held-out images =="
    )
    print(format_metrics_table(metrics))
    ious = ", ".join(f"{name} {format_score(plain.per_class[name].iou)}" for name in config.classes)
    print(f"without TTA: mean IoU {format_score(plain.mean_iou)} ({ious})")
    # best.pt is chosen on these same images; the last epoch's score shows how much that choice flatters.
    print(
        f"validation mean IoU during training (no TTA, no calibration): best {float(best['val_mean_iou']):.3f} "
        f"at epoch {best['epoch']}, last {float(validated[-1]['val_mean_iou']):.3f} at epoch {validated[-1]['epoch']}"
    )
    project = {
        "config": config.to_dict(),
        "train_minutes": train_minutes,
        "metrics": metrics.to_dict(),
        "metrics_without_tta": plain.to_dict(),
    }
    return metrics, project


def baseline_and_compare(args: argparse.Namespace, config: TrainConfig, metrics: EvaluationMetrics) -> dict:
    """Train and score the notebook recipe on the same split; print it beside the project's scores."""
    baseline, baseline_minutes = notebook_baseline(
        args.data,
        Path(config.out) / "split.json",
        args.baseline_epochs,
        resolve_device(args.device),
        config.classes,
        args.out / "notebook_recipe",
    )
    print(f"\n== notebook recipe baseline: trained {baseline_minutes:.1f} min ==")
    print(format_metrics_table(baseline))
    print("\nclass IoU        project  notebook")
    for name in config.classes:
        ours, theirs = metrics.per_class[name].iou, baseline.per_class[name].iou
        print(f"{name:<15} {format_score(ours):>7}  {format_score(theirs):>8}")
    print(f"{'mean IoU':<15} {format_score(metrics.mean_iou):>7}  {format_score(baseline.mean_iou):>8}")
    print_detection_comparison(metrics, baseline)
    return {**baseline.to_dict(), "train_minutes": baseline_minutes}


def main() -> None:
    args = parse_args()
    hardware = report_hardware(print, args.device)
    model = args.model or load_config(args.config).model
    overrides = {"data": str(args.data), "out": str(args.out / model), "model": model, "epochs": args.epochs,
                 "val_every": args.val_every, "device": args.device, "seed": args.seed}  # fmt: skip
    config = load_config(args.config, overrides)
    metrics, project = train_and_score(args, config)
    summary = {"hardware": hardware, "project": project}
    if args.baseline_epochs > 0:
        summary["notebook_baseline"] = baseline_and_compare(args, config, metrics)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nsummary: {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
