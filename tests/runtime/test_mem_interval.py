"""--mem-every auto: the memory interval a checkpoint or export records (chosen on held-out
video when the model shipped), else the published 5; the same rule for every entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import runtime.segment_video
from runtime.cli import segment_main
from runtime.errors import InputError
from runtime.mem_interval import AUTO, parse_mem_every, resolve_mem_every
from stmae import STMAE, load_checkpoint, preset, save_checkpoint
from stmae.checkpoint import CheckpointError, checkpoint_mem_every
from stmae.checkpoint_peek import UNKNOWN, peek_mem_every, peek_processing_size

from .conftest import subprocess_env
from .fake_export import fake_export_manifest


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return STMAE(preset("small"))


@pytest.fixture(scope="module")
def recorded(small_model, tmp_path_factory):
    """A checkpoint that records mem_every 2 (and processing size 48)."""
    path = tmp_path_factory.mktemp("mem_every") / "every2.pth"
    save_checkpoint(path, small_model, processing_size=48, mem_every=2)
    return path


def test_checkpoints_record_and_return_their_interval(small_model, recorded, tmp_path):
    loaded = load_checkpoint(recorded)
    assert loaded.mem_every == 2 == checkpoint_mem_every(recorded) and loaded.processing_size == 48
    assert "mem_every" not in loaded.extra
    plain = tmp_path / "plain.pth"
    save_checkpoint(plain, small_model)
    assert load_checkpoint(plain).mem_every is None and checkpoint_mem_every(plain) is None
    assert resolve_mem_every(AUTO, checkpoint=recorded).text() == "mem every 2 (auto: the checkpoint's own)"
    assert resolve_mem_every(AUTO, checkpoint=plain).text() == (
        "mem every 5 (auto: the checkpoint records none, published 5)")
    assert resolve_mem_every(3, checkpoint=recorded).text() == "mem every 3 (--mem-every)"
    for bad in (0, -1, True, "3"):
        with pytest.raises(ValueError, match="mem_every"):
            save_checkpoint(tmp_path / "bad.pth", small_model, mem_every=bad)
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "bad.pth", small_model, extra={"mem_every": 3})


def test_an_invalid_recorded_interval_is_refused_with_its_name(small_model, tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"network": small_model.state_dict(), "config": small_model.config.to_dict(), "mem_every": 0}, bad)
    assert peek_mem_every(bad) is UNKNOWN  # the torch path decides, and explains
    with pytest.raises(CheckpointError, match="invalid 'mem_every' 0"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="invalid 'mem_every' 0"):
        resolve_mem_every(AUTO, checkpoint=bad)


def test_the_peek_reads_the_interval_without_torch(recorded):
    code = ("import sys; from stmae.checkpoint_peek import peek_mem_every, peek_processing_size; "
            f"print(peek_mem_every({str(recorded)!r}), peek_processing_size({str(recorded)!r})); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                         check=True).stdout.split()
    assert out == ["2", "48", "False"]
    assert peek_processing_size(recorded) == 48


def test_exports_record_the_interval_in_their_manifest(tmp_path):
    from runtime.export_manifest import ExportManifestError, parse_manifest

    folder = tmp_path / "export"
    folder.mkdir()
    data = {**fake_export_manifest(folder).to_dict(), "mem_every": 3}
    (folder / "manifest.json").write_text(json.dumps(data))
    assert parse_manifest(data).mem_every == 3 and parse_manifest(data).to_dict()["mem_every"] == 3
    assert resolve_mem_every(AUTO, export_dir=folder).text() == "mem every 3 (auto: the export's manifest)"
    del data["mem_every"]  # an export made before the field: the published schedule
    (folder / "manifest.json").write_text(json.dumps(data))
    assert resolve_mem_every(AUTO, export_dir=folder).every == 5
    for bad in (0, "3", True):
        with pytest.raises(ExportManifestError, match="mem_every"):
            parse_manifest({**data, "mem_every": bad})


def test_parse_and_refuse():
    assert parse_mem_every("auto") == AUTO and parse_mem_every(" AUTO ") == AUTO and parse_mem_every("3") == 3
    for bad in ("0", "-2", "x", "1.5"):
        with pytest.raises(InputError, match=f"--mem-every {bad}: expected 'auto' or a whole number of frames >= 1"):
            resolve_mem_every(parse_mem_every(bad))


def test_segment_runs_at_the_recorded_interval_and_says_so(recorded, tiny_video, tmp_path, capsys, monkeypatch):
    """The schedule the session gets, not only the summary line: an explicit flag wins."""
    seen = []
    real = runtime.segment_video.segment_video

    def spy(*args, **kwargs):
        seen.append(kwargs["config"].mem_every)
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime.segment_video, "segment_video", spy)
    frames_dir, mask, _ = tiny_video
    base = ["--checkpoint", str(recorded), "--input", str(frames_dir), "--mask", str(mask), "--device", "cpu",
            "--backend", "torch", "--quiet"]
    assert segment_main([*base, "--out", str(tmp_path / "a")]) == 0
    assert "mem every 2 (auto: the checkpoint's own)" in capsys.readouterr().out
    assert segment_main([*base, "--out", str(tmp_path / "b"), "--mem-every", "4"]) == 0
    assert "mem every 4 (--mem-every)" in capsys.readouterr().out
    assert seen == [2, 4]
