"""``stmae-train export-weights``: a run's checkpoint -> the file users run."""

from __future__ import annotations

import hashlib

import pytest
import torch

from stmae.checkpoint import load_checkpoint
from train.cli import main
from train.loop import checkpoint_path, train

from .conftest import tiny_config, tiny_data


@pytest.fixture(scope="module")
def run_checkpoint(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("run") / "run", tiny_data(), steps=1)
    train(cfg, progress_bar=False)
    return checkpoint_path(cfg)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_weights_writes_a_small_float16_model_file(run_checkpoint, tmp_path, capsys):
    out = tmp_path / "model.pth"
    assert main(["export-weights", str(run_checkpoint), "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("stmae-train export-weights: wrote") and "float16" in line and "step 1" in line
    raw = torch.load(out, weights_only=True)
    assert "optimizer" not in raw and "rng" not in raw
    assert raw["trained_steps"] == 1 and raw["train_config"]["schedule"]["steps"] == 1
    assert all(v.dtype == torch.float16 for v in raw["network"].values() if v.is_floating_point())
    source = torch.load(run_checkpoint, weights_only=True)
    assert raw["processing_size"] == source["processing_size"]
    assert out.stat().st_size < run_checkpoint.stat().st_size / 4
    # The runtime reads it back as a float32 network equal to the run's up to float16 rounding.
    back = load_checkpoint(out).model.state_dict()
    for key, value in source["network"].items():
        if value.is_floating_point():
            assert back[key].dtype == torch.float32
            assert torch.equal(back[key], value.half().float()), key
    # An explicit processing size wins over the checkpoint's own.
    other = tmp_path / "other.pth"
    assert main(["export-weights", str(run_checkpoint), "--out", str(other), "--dtype", "float32",
                 "--processing-size", "320"]) == 0
    assert load_checkpoint(other).processing_size == 320


def test_export_weights_refuses_aliasing_and_foreign_files(run_checkpoint, tmp_path, capsys):
    before = _sha(run_checkpoint)
    assert main(["export-weights", str(run_checkpoint), "--out", str(run_checkpoint), "--overwrite"]) == 2
    assert "same path" in capsys.readouterr().err and _sha(run_checkpoint) == before

    foreign = tmp_path / "notes.pth"
    foreign.write_bytes(b"my own file")
    for extra in ([], ["--overwrite"]):
        assert main(["export-weights", str(run_checkpoint), "--out", str(foreign), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ("exists" in err[0] or "not a checkpoint this toolkit wrote" in err[0])
    assert foreign.read_bytes() == b"my own file"

    ours = tmp_path / "ours.pth"
    assert main(["export-weights", str(run_checkpoint), "--out", str(ours)]) == 0
    assert main(["export-weights", str(run_checkpoint), "--out", str(ours)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export-weights", str(run_checkpoint), "--out", str(ours), "--overwrite"]) == 0

    assert main(["export-weights", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
    assert not (tmp_path / "x.pth").exists()
    assert main(["export-weights", str(run_checkpoint), "--out", str(tmp_path / "no" / "x.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_export_weights_records_the_memory_interval(run_checkpoint, tmp_path, capsys):
    """--mem-every is recorded for the runtime's --mem-every auto and kept by a re-export;
    the weights themselves do not change (float16 to float16 is exact)."""
    first, again = tmp_path / "every3.pth", tmp_path / "again.pth"
    assert main(["export-weights", str(run_checkpoint), "--out", str(first), "--mem-every", "3"]) == 0
    assert "mem every 3" in capsys.readouterr().out
    assert load_checkpoint(first).mem_every == 3 and load_checkpoint(run_checkpoint).mem_every is None
    assert main(["export-weights", str(first), "--out", str(again)]) == 0
    assert "mem every 3" in capsys.readouterr().out
    a, b = torch.load(first, weights_only=True), torch.load(again, weights_only=True)
    assert b["mem_every"] == 3 and all(torch.equal(a["network"][k], b["network"][k]) for k in a["network"])
    assert main(["export-weights", str(run_checkpoint), "--out", str(tmp_path / "x.pth"), "--mem-every", "0"]) == 2
    assert "--mem-every 0" in capsys.readouterr().err and not (tmp_path / "x.pth").exists()
    # Averaging keeps a common interval and refuses a mix.
    assert main(["average-weights", str(first), str(again), "--out", str(tmp_path / "mean.pth")]) == 0
    assert load_checkpoint(tmp_path / "mean.pth").mem_every == 3
    capsys.readouterr()
    assert main(["average-weights", str(first), str(run_checkpoint), "--out", str(tmp_path / "mix.pth")]) == 2
    assert "different memory intervals" in capsys.readouterr().err and not (tmp_path / "mix.pth").exists()
