"""Shared fixtures: small synthetic datasets made on the fly (the tests never need real data)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from segnet.core.runfiles import BEST_CHECKPOINT, HISTORY_FILE, SPLIT_FILE
from segnet.data.classes import DEFAULT_CLASSES
from segnet.data.pairs import find_pairs, write_split
from segnet.data.synthetic import write_dataset
from segnet.model.checkpoint import Checkpoint
from segnet.model.networks import build_model
from segnet.plan.spec import ModelSpec

# Two cores run the whole suite: keep torch from oversubscribing them.
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve 48x48 synthetic darkfield images with masks, in the public dataset's layout."""
    return write_dataset(tmp_path_factory.mktemp("synthetic"), count=12, size=48, seed=3)


@pytest.fixture(scope="session")
def make_run() -> Callable[[Path], tuple[Path, Path]]:
    """Makes, under a folder, a hand-built run (an untrained segnet-basic ``best.pt``, split.json,
    history.csv) and its 4-image 48x48 dataset split 2 train / 2 val; returns (run, data)."""

    def make(root: Path) -> tuple[Path, Path]:
        data = write_dataset(root / "data", count=4, size=48)
        run = root / "run"
        run.mkdir()
        torch.manual_seed(0)
        model = build_model(ModelSpec("segnet-basic", len(DEFAULT_CLASSES)))
        config = {"model": "segnet-basic", "classes": list(DEFAULT_CLASSES), "mask_palette": None}
        Checkpoint.of_model(
            model, list(DEFAULT_CLASSES), [0.1, 0.12, 0.15], [0.1, 0.1, 0.12], config=config, epoch=3, best_score=0.4
        ).save(run / BEST_CHECKPOINT)
        pairs = find_pairs(data)
        write_split(run / SPLIT_FILE, pairs[:2], pairs[2:])
        (run / HISTORY_FILE).write_text(
            "epoch,train_loss,val_loss,val_global_accuracy,val_mean_iou,lr,epoch_seconds\n"
            "1,1.10,1.05,0.60,0.30,1.000e-03,2.0\n"
            "2,0.90,,,,9.000e-04,2.1\n"
            "3,0.70,0.80,0.75,0.42,5.000e-04,2.0\n"
        )
        return run, data

    return make
