"""Validation during training goes through the runtime (TorchBackend + evaluate_sequences),
is logged, and does not perturb training."""

from __future__ import annotations

import csv

import pytest
import torch

from runtime.backends.torch_backend import TorchBackend
from runtime.config import SessionConfig
from runtime.evaluation import evaluate_sequences
from train.config import ValidationConfig
from train.loop import train
from train.validation import make_validator, scores_of

from .conftest import tiny_config, tiny_data, write_video_folder


def test_validation_scores_through_runtime_and_leaves_training_alone(tmp_path):
    root = write_video_folder(tmp_path / "val", {"v1": 4, "v2": 4}, corrupt_later_masks=False)
    val = ValidationConfig(root=str(root), resolution="240p", sequences=("v1", "v2"),
                           every_steps=2, max_frames=3, size=-1)
    data = tiny_data()
    with_val = train(tiny_config(tmp_path / "a", data, steps=2, validation=val),
                     validate=make_validator(val), progress_bar=False)
    without = train(tiny_config(tmp_path / "b", data, steps=2), progress_bar=False)

    a, b = with_val.network.state_dict(), without.network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "validation changed the training run"

    with open(tmp_path / "a" / "validation.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [2]
    # The logged score is the runtime's own evaluation of the trained network.
    direct = evaluate_sequences(TorchBackend(with_val.network.eval(), "cpu"), root, ["v1", "v2"],
                                "240p", session_config=SessionConfig(size=-1), max_frames=3)
    expected = scores_of(direct)
    assert float(rows[0]["J&F"]) == pytest.approx(expected["J&F"], abs=1e-9)
    assert float(rows[0]["J&F/v2"]) == pytest.approx(expected["J&F/v2"], abs=1e-9)
    assert 0.0 <= expected["J&F"] <= 1.0


def test_validation_config_is_checked():
    with pytest.raises(ValueError, match="needs a root and sequences"):
        ValidationConfig(every_steps=5)
    with pytest.raises(ValueError, match="max_frames"):
        ValidationConfig(max_frames=2)
    with pytest.raises(ValueError, match="size"):
        ValidationConfig(size=8)
