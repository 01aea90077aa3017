"""Class 3, resource bombs: sizes are bounded before anything is decoded or allocated."""

from __future__ import annotations

import time

import pytest
import torch

import stmae.checkpoint as checkpoint_module
from export.cli import main as export_main
from demo.cli import main as demo_main
from runtime.bench.cli import main as bench_main
from runtime.cli import segment_main
from runtime.config import MAX_SIZE
from runtime.errors import InputError
from runtime.io.mask_io import read_mask
from stmae import CheckpointError, load_checkpoint
from train.cli import main as train_main

from .conftest import one_line_error, png_header, run_main, snapshot


@pytest.mark.parametrize("side", [20000, 9000])
def test_huge_image_header_is_refused_before_decoding(tmp_path, video, seg_args, capsys, side):
    """20000x20000 trips PIL's own bomb guard, 9000x9000 (81 Mpx) only ours (64 Mpx)."""
    frames, mask = video
    png_header(frames / "00006.png", side, side)
    before = snapshot(tmp_path)
    code, _, err = run_main(segment_main, capsys, *seg_args, "--input", frames, "--mask", mask, "--out", tmp_path / "o")
    assert code == 2
    one_line_error(err, "stmae-segment", "00006.png")
    assert "Mpx" in err or "too large to decode safely" in err
    with pytest.raises(InputError, match="above the limit|too large"):
        read_mask(png_header(tmp_path / "bomb_mask.png", side, side))
    assert snapshot(tmp_path) == {**before, **snapshot(tmp_path / "bomb_mask.png")}


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    path = png_header(tmp_path / "m.png", 100, 100)
    monkeypatch.setenv("STMAE_MAX_PIXELS", "5000")
    with pytest.raises(InputError, match="100x100.*STMAE_MAX_PIXELS"):
        read_mask(path)


def test_size_is_bounded_in_every_tool(tmp_path, video, seg_args, capsys, seeded_small_checkpoint):
    frames, mask = video
    args = [a if a != -1 else 100000 for a in seg_args]
    code, _, err = run_main(segment_main, capsys, *args, "--input", frames, "--mask", mask, "--out", tmp_path / "o")
    assert code == 2
    one_line_error(err, "stmae-segment", "--size", str(MAX_SIZE))
    code, _, err = run_main(bench_main, capsys, "--sizes", 100000, "--frames", 4, "--warmup", 1, "--out", tmp_path / "b")
    assert code == 2
    one_line_error(err, "stmae-bench", "--sizes", str(MAX_SIZE))
    code, _, err = run_main(demo_main, capsys, "--size", 100000, "--out", tmp_path / "d")
    assert code == 2
    one_line_error(err, "stmae-demo", "--size", str(MAX_SIZE))
    code, _, err = run_main(export_main, capsys, seeded_small_checkpoint, "--out", tmp_path / "e", "--work-size", 100000)
    assert code == 2
    one_line_error(err, "stmae-export", "work_size", str(MAX_SIZE))
    code, _, err = run_main(train_main, capsys, "--synthetic-clips", 2, "--crop", 100000, 100000,
                            "--output", tmp_path / "t")
    assert code == 2
    one_line_error(err, "stmae-train", "crop_size")
    assert not any((tmp_path / n).exists() for n in ("o", "b", "d", "e", "t"))


def test_tiny_checkpoint_asking_for_a_huge_network_is_refused_without_allocating(tmp_path, monkeypatch, capsys, video, seg_args):
    """1.5 kB on disk, a config for a network of about a thousand billion parameters: the
    config is checked against the tensors on the meta device; the network is never built."""
    path = tmp_path / "bomb.pth"
    torch.save({"network": {"decoder.pred.weight": torch.zeros(1, 4, 3, 3)},
                "config": {"value_dim": 100000, "decoder_dim": 100000, "cbam_reduction": 1}}, path)
    assert path.stat().st_size < 2000
    built_on = []
    real = checkpoint_module.STMAE

    def spy(config):
        built_on.append(str(torch.get_default_device()))
        return real(config)

    monkeypatch.setattr(checkpoint_module, "STMAE", spy)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="does not match the STMAE network"):
        load_checkpoint(path)
    assert time.perf_counter() - start < 30
    assert built_on == ["meta"]  # shapes only, never real memory
    frames, mask = video
    args = [*seg_args, "--input", frames, "--mask", mask, "--out", tmp_path / "o"]
    args[args.index("--checkpoint") + 1] = path
    code, _, err = run_main(segment_main, capsys, *args)
    assert code == 2
    one_line_error(err, "stmae-segment", "does not match the STMAE network")


@pytest.mark.parametrize("flags, needle", [
    (["--frames", "1000000000"], "--frames must be in 3..100000"),
    (["--repeats", "1000000"], "--repeats must be in 1..100"),
    (["--frames", "5000", "--sizes", "1080"], "GiB of synthetic frames in memory"),
    (["--streams", "4", "--frames", "3000", "--sizes", "1080"], "for 4 streams needs"),
    (["--streams", "1", "--repeats", "1000000"], "--repeats must be in 1..100"),
])
def test_bench_counts_are_checked_before_anything_is_drawn(tmp_path, capsys, flags, needle):
    """A count that would draw gigabytes of synthetic frames, or run for days, is one line and
    exit 2 before any clip is drawn (it was a numpy 'array is too big' error after trying to
    allocate, or a run of a million repeats)."""
    out = tmp_path / "bench"
    code, _, err = run_main(bench_main, capsys, *flags, "--out", out)
    assert code == 2
    one_line_error(err, "stmae-bench", needle)
    assert not out.exists()
