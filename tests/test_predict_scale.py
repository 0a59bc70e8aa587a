"""Prediction at scale: two gloo processes under torchrun equal one process; --skip-existing continues a run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segnet.data.synthetic import generate_sample
from segnet.model.checkpoint import Checkpoint
from segnet.model.networks import build_model
from segnet.model.options import InferenceOptions
from segnet.model.predictor import Predictor
from segnet.plan.spec import ModelSpec
from segnet.predict.files import predict_paths

PLAIN = InferenceOptions(device="cpu", tta=False, diameter=None)  # the network's own pass

CLASSES = ["background", "erythrocyte", "spirochete"]


def write_images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        size = int(rng.integers(40, 64))
        Image.fromarray(generate_sample(size, size + 8, np.random.default_rng(index))[0]).save(
            folder / f"img{index:02d}.png"
        )


def output_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.pt"
    model = build_model(ModelSpec("segnet-basic", len(CLASSES)))
    Checkpoint.of_model(model, CLASSES, [0.2, 0.25, 0.3], [0.2, 0.2, 0.2], config={}, epoch=0).save(path)
    return path


def predict_command(checkpoint: Path, images: Path, out: Path, processes: int) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return launcher + [
        "-m",
        "segnet",
        "predict",
        "--checkpoint",
        str(checkpoint),
        str(images),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-tta",
    ]


@pytest.mark.slow
def test_two_processes_write_what_one_process_writes(checkpoint: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_images(images, 5)
    (images / "junk.png").write_bytes(b"not an image")  # a failure on one rank still merges the rest
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for processes in (1, 2):
        out = tmp_path / f"out{processes}"
        result = subprocess.run(
            predict_command(checkpoint, images, out, processes), capture_output=True, text=True, timeout=300, env=env
        )
        assert result.returncode != 0, "a failed input must fail the run"
        assert "1 of 6 input(s) failed" in result.stderr, result.stderr[-3000:]
        assert result.stdout.count("image(s) in") == 1, result.stdout  # rank 0 reports once
        assert result.stdout.count("junk.png") == 1, result.stdout  # one process took it and reported it
        runs[processes] = output_bytes(out)
    assert sorted(runs[2]) == sorted(runs[1])  # no share files left behind
    assert runs[2] == runs[1]
    assert runs[1]["counts.csv"].count(b"\n") == 6  # header and the 5 readable images, in input order


class CountingPredictor(Predictor):
    calls = 0

    def predict_proba(self, image, *, progress=None):
        type(self).calls += 1
        return super().predict_proba(image, progress=progress)


def test_skip_existing_continues_an_interrupted_run(checkpoint: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_images(images, 4)
    loaded = CountingPredictor.from_checkpoint(checkpoint, PLAIN)
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    predict_paths(loaded, [str(images)], full, progress=False)
    predict_paths(loaded, [str(images)], resumed, progress=False)
    # An interruption during image 2: its label image (written last) is missing, the tables are cut short.
    (resumed / "img02_objects.tif").unlink()
    (resumed / "counts.csv").write_text("file\n")
    CountingPredictor.calls = 0
    summary = predict_paths(loaded, [str(images)], resumed, skip_existing=True, progress=False)
    assert CountingPredictor.calls == 1 and summary.skipped == 3 and summary.images == 4
    assert output_bytes(resumed) == output_bytes(full)
