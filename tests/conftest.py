"""Shared fixtures: small synthetic datasets made on the fly (the tests never need real data)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segnet.synthetic import write_dataset

# Two cores run the whole suite: keep torch from oversubscribing them.
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve 48x48 synthetic darkfield images with masks, in the public dataset's layout."""
    return write_dataset(tmp_path_factory.mktemp("synthetic"), count=12, size=48, seed=3)
