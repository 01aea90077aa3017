"""stmae-export: clear one-line errors, the gate refusing to write, --no-verify recorded."""

from __future__ import annotations

import json

import pytest

from export.cli import EXIT_INPUT, main
from export.config import ExportConfig, GateThresholds
from export.exporter import ExportGateError, run_export


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_missing_checkpoint(tmp_path, capsys):
    assert main([str(tmp_path / "nope.pth"), "--out", str(tmp_path / "out")]) == EXIT_INPUT
    assert "does not exist" in _err(capsys)


def test_existing_out_needs_overwrite(tmp_path, small_checkpoint, capsys):
    (tmp_path / "out").mkdir()
    assert main([str(small_checkpoint), "--out", str(tmp_path / "out")]) == EXIT_INPUT
    assert "--overwrite" in _err(capsys)


def test_bad_opset(tmp_path, small_checkpoint, capsys):
    assert main([str(small_checkpoint), "--out", str(tmp_path / "out"), "--opset", "13"]) == EXIT_INPUT
    assert "opset must be between" in _err(capsys)


def test_empty_calibration_folder(tmp_path, small_checkpoint, capsys):
    (tmp_path / "frames").mkdir()
    args = [str(small_checkpoint), "--out", str(tmp_path / "out"), "--precision", "int8",
            "--calibration", str(tmp_path / "frames")]
    assert main(args) == EXIT_INPUT
    assert "has no frames" in _err(capsys)
    assert not (tmp_path / "out").exists()


def test_a_failed_gate_writes_nothing(tmp_path, small_checkpoint):
    config = ExportConfig(checkpoint=small_checkpoint, out_dir=tmp_path / "out",
                          thresholds=GateThresholds(fp32_max_rel_error=0.0))
    with pytest.raises(ExportGateError, match="key_encoder.f16 .*e-0"):
        run_export(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_no_verify_is_recorded(tmp_path, small_checkpoint, capsys):
    out = tmp_path / "out"
    assert main([str(small_checkpoint), "--out", str(out), "--no-verify", "-q"]) == 0
    assert "NOT verified" in capsys.readouterr().out
    data = json.loads((out / "manifest.json").read_text())
    assert data["verification"]["verified"] is False
    assert "--no-verify" in data["verification"]["skipped"]
    assert data["model_config"]["key_backbone"] == "resnet18"
