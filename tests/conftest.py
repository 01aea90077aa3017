"""Shared test fixtures: the contract's data, the reference-weights model, shared data."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from stmae.checkpoint import save_checkpoint
from stmae.config import preset
from stmae.network import STMAE
from stmae.reference_weights import reference_weights_for

# The command lines' CPU default (--backend auto) exports a checkpoint to ONNX the first time
# it sees it (runtime.fast_path), about 20-45 s each. Most tests check what is the same for
# every backend (inputs, outputs, refusals) on checkpoints they make, so the suite runs them
# with PyTorch; the tests of the default itself (tests/runtime/test_fast_path.py, the README
# examples) unset STMAE_BACKEND. Exports go to a cache of this test session, never the user's.
os.environ["STMAE_BACKEND"] = "torch"
os.environ["STMAE_CACHE_DIR"] = tempfile.mkdtemp(prefix="stmae-test-cache-")
atexit.register(shutil.rmtree, os.environ["STMAE_CACHE_DIR"], True)

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
