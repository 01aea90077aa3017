"""``stmae-train average-weights``: the mean of several checkpoints, and its refusals."""

from __future__ import annotations

import pytest
import torch

from stmae.checkpoint import load_checkpoint
from train.average_weights import average_states
from train.cli import main
from train.loop import checkpoint_path, train

from .conftest import tiny_config, tiny_data


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two 1-step runs of the tiny model with different seeds (different weights)."""
    paths = []
    for seed in (0, 1):
        cfg = tiny_config(tmp_path_factory.mktemp(f"run{seed}") / "run", tiny_data(), steps=1, seed=seed)
        train(cfg, progress_bar=False)
        paths.append(checkpoint_path(cfg))
    return paths


def test_average_is_the_elementwise_mean_and_records_its_sources(two_runs, tmp_path, capsys):
    out = tmp_path / "mean.pth"
    assert main(["average-weights", *map(str, two_runs), "--out", str(out), "--dtype", "float32"]) == 0
    assert "mean of 2 checkpoints" in capsys.readouterr().out
    a, b = (load_checkpoint(p).model.state_dict() for p in two_runs)
    mean = load_checkpoint(out)
    state = mean.model.state_dict()
    differing = 0
    for key, value in state.items():
        if value.is_floating_point():
            assert torch.allclose(value, (a[key].double() + b[key].double()).div(2).float(), atol=1e-6), key
            differing += not torch.equal(a[key], b[key])
        else:
            assert torch.equal(value, torch.maximum(a[key], b[key])), key
    assert differing > 0, "the two runs should differ, or the test proves nothing"
    record = mean.extra["averaged_from"]
    assert [r["file"] for r in record] == [p.name for p in two_runs]
    assert all(len(r["sha256"]) == 64 and r["step"] == 1 for r in record)


def test_average_states_keeps_dtypes_and_counts():
    s1 = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    s2 = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    out = average_states([s1, s2])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and out["n"].item() == 5
    assert out["w"].dtype == torch.float32 and out["n"].dtype == s1["n"].dtype


@pytest.mark.parametrize("case", ["one", "twice", "alias", "foreign"])
def test_average_weights_refuses_bad_input(case, two_runs, tmp_path, capsys):
    foreign = tmp_path / "notes.pth"
    foreign.write_text("not mine")
    args = {
        "one": [str(two_runs[0]), "--out", str(tmp_path / "x.pth")],
        "twice": [str(two_runs[0]), str(two_runs[0]), "--out", str(tmp_path / "x.pth")],
        "alias": [*map(str, two_runs), "--out", str(two_runs[1])],
        "foreign": [*map(str, two_runs), "--out", str(foreign), "--overwrite"],
    }[case]
    assert main(["average-weights", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("stmae-train average-weights: error:")
    assert foreign.read_text() == "not mine"
