"""Smoke test of benchmarks/peers.py: every peer end to end on tiny synthetic data, installing nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from segnet.score import METRICS_FILE
from segnet.synthetic import write_dataset

PEERS_SCRIPT = Path(__file__).parents[1] / "benchmarks" / "peers.py"


def test_peers_train_predict_and_are_scored_by_segnet_score(tmp_path: Path) -> None:
    train, test = write_dataset(tmp_path / "train", count=6, size=32, seed=1), write_dataset(tmp_path / "test", count=2, size=32, seed=2)
    out = tmp_path / "peers"
    # A venv path that does not exist: nnU-Net is never installed by the test, whatever the machine holds.
    command = [sys.executable, str(PEERS_SCRIPT), "--train", str(train), "--test", str(test), "--budget", "0.01", "--out", str(out),
               "--nnunet-venv", str(tmp_path / "no_venv")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipping nnunet: nnU-Net v2 is not installed" in done.stdout
    summary = json.loads((out / "peers.json").read_text())
    ran = {result["peer"]: result for result in summary["results"]}
    assert {"segnet", "notebook"} <= set(ran) and set(ran) | set(summary["skipped"]) == {"segnet", "notebook", "monai-unet", "nnunet"}
    table = done.stdout[done.stdout.index("peer "):]
    for name, result in ran.items():
        # the scores are segnet score's, written where segnet report can draw them
        assert result["scores"] == json.loads((out / name / "scores" / METRICS_FILE).read_text())
        assert result["scores"]["num_images"] == 2
        assert result["training_images_per_second"] > 0 and result["prediction_images_per_second"] > 0 and result["peak_prediction_mb"] > 0
        row = next(line for line in table.splitlines() if line.startswith(name + " "))
        assert row.split()[1] == ("-" if result["scores"]["mean_iou"] is None else f"{result['scores']['mean_iou']:.3f}")
    assert ran["segnet"]["prediction_images_per_second_no_tta"] > 0  # segnet predicts with TTA by default, and is timed without
    assert ran["notebook"]["prediction_images_per_second_no_tta"] is None  # the notebook has no TTA
