"""Distributed training: a real two-process gloo run under torchrun on the CPU."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from helpers import train_args

from segnet.core import distributed as dist
from segnet.core.runfiles import BEST_CHECKPOINT, BEST_METRICS_FILE, HISTORY_FILE, LAST_CHECKPOINT
from segnet.evaluate.run import evaluate_run
from segnet.model.checkpoint import Checkpoint
from segnet.model.options import InferenceOptions

PLAIN = InferenceOptions(device="cpu", tta=False, diameter=None)  # the network's own pass


def test_state_digest_sees_every_bit():
    state = {"weight": torch.ones(3, 2), "count": torch.tensor(7)}
    same = {"weight": torch.ones(3, 2), "count": torch.tensor(7)}
    assert dist.state_digest(state) == dist.state_digest(same)
    nudged = {"weight": torch.ones(3, 2), "count": torch.tensor(7)}
    nudged["weight"][1, 1] = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))
    assert dist.state_digest(state) != dist.state_digest(nudged)
    assert dist.state_digest(state) != dist.state_digest({"weight": torch.ones(2, 3), "count": torch.tensor(7)})


def test_single_process_helpers_are_no_ops():
    module = torch.nn.BatchNorm2d(2)
    dist.broadcast_buffers(module)
    assert dist.check_replicas_in_sync(module) == dist.state_digest(module.state_dict())
    assert dist.world_size() == 1 and dist.is_main_process()


@pytest.fixture(scope="module")
def two_process_run(synthetic_dataset, tmp_path_factory):
    """Two gloo processes, 2 epochs of 2 steps each on 32 px crops; returns (run folder, stdout)."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "segnet",
        *train_args(
            synthetic_dataset,
            out,
            "--epochs",
            "2",
            "--amp",  # training steps in bfloat16; validation runs evaluate's float32 predictor all the same
            "--calibration-images",
            "0",  # best.pt keeps the raw logits that validation scored
        ),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, cwd=out.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


@pytest.mark.slow
def test_both_processes_end_with_the_checkpointed_weights(two_process_run):
    out, stdout = two_process_run
    assert "2 process(es) x batch 2" in stdout
    match = re.search(r"model weights identical on all 2 processes \(sha256 ([0-9a-f]{64})\)", stdout)
    assert match, stdout
    # The digest was checked equal on both ranks; it must also be the digest of what rank 0 saved.
    assert match.group(1) == dist.state_digest(Checkpoint.load(out / LAST_CHECKPOINT).model_state)
    assert stdout.count("run folder:") == 1  # only rank 0 reports


@pytest.mark.slow
def test_validation_over_two_processes_equals_a_single_process_evaluation(two_process_run, synthetic_dataset, tmp_path):
    out, _ = two_process_run
    trained = json.loads((out / BEST_METRICS_FILE).read_text())  # reduced over both ranks' shares
    single = evaluate_run(
        out / BEST_CHECKPOINT,
        synthetic_dataset,
        split="val",
        out=tmp_path / "evaluation",
        options=PLAIN,
        progress=False,
    )
    assert single.num_images == 3
    assert trained["confusion_matrix"] == single.confusion.tolist()  # every validation pixel counted once
    assert trained["mean_iou"] == pytest.approx(single.mean_iou, abs=1e-12)
    with (out / HISTORY_FILE).open() as handle:
        history = list(csv.DictReader(handle))
    assert [row["epoch"] for row in history] == ["1", "2"]
    best_row = next(row for row in history if int(row["epoch"]) == trained["epoch"])
    assert abs(float(best_row["val_mean_iou"]) - single.mean_iou) <= 1e-6


@pytest.mark.slow
def test_history_over_two_processes_is_what_evaluate_without_tta_gives(
    two_process_run, synthetic_dataset, tmp_path, capsys
):
    from segnet.cli import main

    out, _ = two_process_run
    evaluation = tmp_path / "evaluation"
    command = [
        "evaluate",
        "--checkpoint",
        str(out / LAST_CHECKPOINT),
        "--data",
        str(synthetic_dataset),
        "--no-tta",
        "--diameter",
        "none",
        "--device",
        "cpu",
        "--out",
        str(evaluation),
    ]
    assert main(command) == 0
    capsys.readouterr()
    single = json.loads((evaluation / "metrics.json").read_text())
    with (out / HISTORY_FILE).open() as handle:
        last_row = list(csv.DictReader(handle))[-1]
    assert abs(float(last_row["val_mean_iou"]) - single["mean_iou"]) <= 1e-6
    assert abs(float(last_row["val_global_accuracy"]) - single["global_accuracy"]) <= 1e-6
