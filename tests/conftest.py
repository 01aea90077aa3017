"""Shared test fixtures: the contract's data, the reference-weights model, shared data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from stmae.checkpoint import save_checkpoint
from stmae.config import preset
from stmae.network import STMAE
from stmae.reference_weights import reference_weights_for

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(__file__).resolve().parent / "data"
FIXTURE_NPZ = DATA_DIR / "stmae_reference_io.npz"
CONTRACT_TSV = DATA_DIR / "stmae_state_dict.tsv"


def shared_dir() -> Path:
    """``../shared`` beside the checkout (override with STMAE_SHARED_DIR)."""
    return Path(os.environ.get("STMAE_SHARED_DIR", REPO_ROOT.parent / "shared"))


def davis_root() -> Path:
    return shared_dir() / "data" / "DAVIS2016"


@pytest.fixture(scope="session")
def fixture_io() -> dict[str, np.ndarray]:
    with np.load(FIXTURE_NPZ) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="session")
def reference_model() -> STMAE:
    """The published architecture with the contract's deterministic weights, eval, CPU."""
    torch.manual_seed(0)
    model = STMAE()
    model.load_state_dict(reference_weights_for(model))
    return model.eval()


@pytest.fixture(scope="session")
def davis() -> Path:
    root = davis_root()
    if not (root / "JPEGImages").is_dir():
        pytest.skip(f"shared DAVIS data not found at {root} (set STMAE_SHARED_DIR)")
    return root


@pytest.fixture(scope="session")
def seeded_small_checkpoint(tmp_path_factory) -> Path:
    """A ``small``-preset checkpoint with torch's default init under seed 0 (fast to run)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("seeded_small") / "small.pth"
    save_checkpoint(path, STMAE(preset("small")))
    return path
