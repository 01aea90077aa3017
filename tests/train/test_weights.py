"""The committed trained weights load as the small preset and match their record."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from stmae import load_checkpoint, preset

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
NAME = "stmae_small_davis240"


def test_trained_small_checkpoint_matches_its_card():
    path = WEIGHTS / f"{NAME}.pth"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    card = json.loads((WEIGHTS / f"{NAME}.json").read_text())
    assert path.stat().st_size <= 20 * 1024 * 1024
    assert hashlib.sha256(path.read_bytes()).hexdigest() == card["sha256"]
    loaded = load_checkpoint(path)
    assert loaded.has_config and loaded.config == preset("small")
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    held_out = card["held_out"]
    assert len(held_out) == 5
    assert not set(held_out) & set(card["train_config_stage2"]["data"].get("sequences", []))
    assert set(held_out) <= set(card["train_config_stage2"]["data"]["exclude_sequences"])
    assert set(held_out) <= set(card["train_config_stage1"]["data"]["exclude_sequences"])
    assert sorted(card["held_out_scores"]["per_sequence"]) == sorted(held_out)
    # Trained on 240p frames and scored at 240p: --size auto runs it there.
    assert loaded.processing_size == 240 == card["processing_size"]
    raw = torch.load(path, weights_only=True)
    assert {v.dtype for v in raw["network"].values() if v.is_floating_point()} == {torch.float16}
