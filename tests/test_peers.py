"""Smoke test of benchmarks/peers.py: every peer end to end on tiny synthetic data, installing nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segnet.data.synthetic import write_dataset
from segnet.evaluate.score import METRICS_FILE

PEERS_SCRIPT = Path(__file__).parents[1] / "benchmarks" / "peers.py"


@pytest.mark.slow
def test_peers_train_predict_and_are_scored_by_segnet_score(tmp_path: Path) -> None:
    train, test = (
        write_dataset(tmp_path / "train", count=6, size=32, seed=1),
        write_dataset(tmp_path / "test", count=2, size=32, seed=2),
    )
    out = tmp_path / "peers"
    config = tmp_path / "model.yaml"
    config.write_text("model: bayesian-segnet-basic\n")  # the segnet peer trains what --config names
    # A venv path that does not exist: nnU-Net is never installed by the test, whatever the machine holds.
    command = [sys.executable, str(PEERS_SCRIPT), "--train", str(train), "--test", str(test), "--budget", "0.01", "--out", str(out),
               "--nnunet-venv", str(tmp_path / "no_venv"), "--config", str(config)]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipping nnunet: nnU-Net v2 is not installed" in done.stdout
    summary = json.loads((out / "peers.json").read_text())
    ran = {result["peer"]: result for result in summary["results"]}
    assert {"segnet", "segnet-basic", "notebook"} <= set(ran) and set(ran) | set(summary["skipped"]) == {
        "segnet",
        "segnet-basic",
        "notebook",
        "monai-unet",
        "nnunet",
    }
    table = done.stdout[done.stdout.index("peer ") :]
    for name, result in ran.items():
        # the scores are segnet score's, written where segnet report can draw them
        assert result["scores"] == json.loads((out / name / "scores" / METRICS_FILE).read_text())
        assert result["scores"]["num_images"] == 2
        assert (
            result["training_images_per_second"] > 0
            and result["prediction_images_per_second"] > 0
            and result["peak_prediction_mb"] > 0
        )
        row = next(line for line in table.splitlines() if line.startswith(name + " "))
        assert row.split()[1] == (
            "-" if result["scores"]["mean_iou"] is None else f"{result['scores']['mean_iou']:.3f}"
        )
    assert (
        ran["segnet"]["prediction_images_per_second_no_tta"] > 0
    )  # segnet predicts with TTA by default, and is timed without
    assert ran["notebook"]["prediction_images_per_second_no_tta"] is None  # the notebook has no TTA
    assert "model: bayesian-segnet-basic" in (out / "segnet" / "run" / "config.yaml").read_text().splitlines()
    assert "model: segnet-basic" in (out / "segnet-basic" / "run" / "config.yaml").read_text().splitlines()

    # A later run of one peer (a session each) tables the earlier runs' peers beside it, for the same
    # folders, budget and device only; each result keeps the hardware line of the run that measured it.
    def rerun(*options: str) -> list[str]:
        again = subprocess.run([*command, "--peers", "notebook", *options], capture_output=True, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)  # fmt: skip
        assert again.returncode == 0, again.stderr[-2000:]
        results = json.loads((out / "peers.json").read_text())["results"]
        assert all(result["hardware"]["line"].startswith("hardware: ") for result in results)
        return [result["peer"] for result in results]

    assert rerun() == [name for name in ("segnet", "segnet-basic", "notebook", "monai-unet") if name in ran]
    markdown = (out / "peers.md").read_text().splitlines()
    assert markdown[0].startswith("| peer | mean IoU |") and [row.split(" | ")[0] for row in markdown[2:]] == [
        f"| {name}" for name in ran
    ]
    assert rerun("--budget", "0.02") == ["notebook"]


STAND_IN = {
    # What the benchmark asks of nnU-Net's environment, answered without nnU-Net: where the package lies,
    # a plan that checks the raw dataset, a training that reports its samples, a prediction of zeros.
    "python": """import json, sys; from pathlib import Path
print(Path(sys.argv[0]).parent.parent / "site" / "nnunetv2")""",
    "nnUNetv2_plan_and_preprocess": """import json, os, sys; from pathlib import Path
dataset = next(Path(os.environ["nnUNet_raw"]).glob("Dataset*"))
description = json.loads((dataset / "dataset.json").read_text())
assert description["labels"] == {"background": 0, "erythrocyte": 1, "spirochete": 2}, description
assert len(list((dataset / "imagesTr").glob("*_0000.png"))) == len(list((dataset / "labelsTr").glob("*.png"))) == description["numTraining"]""",
    "nnUNetv2_train": """import json, os, sys; from pathlib import Path
assert sys.argv[1:5] == ["932", "2d", "all", "-tr"] and float(os.environ["SEGNET_PEER_BUDGET_SECONDS"]) > 0, sys.argv
folder = Path(os.environ["nnUNet_results"]) / "Dataset932_SegnetPeers" / "nnUNetTrainerBudget__nnUNetPlans__2d" / "fold_all"
folder.mkdir(parents=True)
(folder / "segnet_peer_training.json").write_text(json.dumps({"samples": 24, "seconds": 2.0}))""",
    "nnUNetv2_predict": """import sys; from pathlib import Path; import numpy as np; from PIL import Image
args = sys.argv[1:]
source, target = Path(args[args.index("-i") + 1]), Path(args[args.index("-o") + 1])
target.mkdir(parents=True, exist_ok=True)
for image in source.glob("*_0000.png"):
    Image.fromarray(np.zeros(Image.open(image).size[::-1], np.uint8)).save(target / image.name.replace("_0000", ""))
(target / "plans.json").write_text("{}")""",
}


@pytest.mark.slow
def test_the_nnunet_path_against_a_stand_in_for_nnunet(tmp_path: Path) -> None:
    """nnU-Net itself is not installed by the tests: this checks the benchmark's side of it (raw format,
    commands, environment, the training report, the predictions scored), not nnU-Net."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "site" / "nnunetv2" / "training" / "nnUNetTrainer").mkdir(parents=True)
    for name, body in STAND_IN.items():
        (venv / "bin" / name).write_text(f"#!{sys.executable}\n{body}\n")
        (venv / "bin" / name).chmod(0o755)
    train, test = (
        write_dataset(tmp_path / "train", count=3, size=32, seed=1),
        write_dataset(tmp_path / "test", count=2, size=32, seed=2),
    )
    command = [sys.executable, str(PEERS_SCRIPT), "--train", str(train), "--test", str(test), "--budget", "0.01", "--out", str(tmp_path / "out"),
               "--nnunet-venv", str(venv), "--peers", "nnunet"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (result,) = json.loads((tmp_path / "out" / "peers.json").read_text())["results"]
    assert result["training_images_per_second"] == 12.0
    assert (
        result["scores"]["num_images"] == 2 and result["scores"]["per_class"]["background"]["precision"] > 0
    )  # all background
    assert (venv / "site" / "nnunetv2" / "training" / "nnUNetTrainer" / "nnunet_budget_trainer.py").is_file()
    predicted = sorted(path.name for path in (tmp_path / "out" / "nnunet" / "predictions").iterdir())
    assert predicted == sorted(
        path.name for path in (test / "masks").iterdir()
    )  # masks only: nnU-Net's json files removed
