"""Class 1, data loss: an output never aliases an input, and --overwrite replaces only what
the tool itself wrote. Every test compares the sha256 of inputs and earlier outputs."""

from __future__ import annotations

import json
import os

import numpy as np

from export.cli import main as export_main
from demo.cli import main as demo_main
from export.exporter import _replace_into_place
from runtime.bench.cli import main as bench_main
from runtime.cli import eval_main, segment_main
from runtime.io.mask_io import write_mask
from stmae.outputs import write_record
from train.cli import main as train_main

from .conftest import one_line_error, run_main, snapshot, write_frames, write_video


def test_export_overwrite_refuses_a_folder_it_did_not_write(tmp_path, seeded_small_checkpoint, capsys):
    weights = tmp_path / "weights"
    weights.mkdir()
    ckpt = weights / "mine.pth"
    ckpt.write_bytes(seeded_small_checkpoint.read_bytes())
    (weights / "notes.txt").write_text("keep me")
    before = snapshot(weights)
    # the checkpoint's own folder: refused as holding the input
    code, _, err = run_main(export_main, capsys, ckpt, "--out", weights, "--overwrite")
    assert code == 2
    one_line_error(err, "stmae-export", "holds the checkpoint")
    # a folder without an export manifest: refused even with --overwrite
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.bin").write_bytes(b"user data")
    code, _, err = run_main(export_main, capsys, seeded_small_checkpoint, "--out", other, "--overwrite")
    assert code == 2
    one_line_error(err, "stmae-export", "only a folder written by stmae-export", "left untouched")
    assert snapshot(weights) == before and (other / "data.bin").read_bytes() == b"user data"


def test_export_out_equal_to_the_checkpoint_or_inside_calibration(tmp_path, seeded_small_checkpoint, capsys):
    ckpt = tmp_path / "c.pth"
    ckpt.write_bytes(seeded_small_checkpoint.read_bytes())
    before = snapshot(ckpt)
    code, _, err = run_main(export_main, capsys, ckpt, "--out", ckpt, "--overwrite")
    assert code == 2
    one_line_error(err, "stmae-export", "same path as the checkpoint")
    calib = tmp_path / "calib"
    calib.mkdir()
    code, _, err = run_main(export_main, capsys, ckpt, "--out", calib / "exp", "--precision", "int8",
                            "--calibration", calib)
    assert code == 2
    one_line_error(err, "stmae-export", "inside --calibration")
    assert snapshot(ckpt) == before and list(calib.iterdir()) == []


def test_export_overwrite_replaces_only_an_export_folder(tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"format": "stmae-onnx-export"}))
    new = tmp_path / "new"
    new.mkdir()
    (new / "manifest.json").write_text(json.dumps({"format": "stmae-onnx-export", "new": True}))
    _replace_into_place(new, out)
    assert json.loads((out / "manifest.json").read_text())["new"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # no backup or temp left


def test_segment_overlay_over_the_input_video(tmp_path, clip, seg_args, capsys):
    source = write_video(tmp_path / "v.avi", clip.frames)
    mask = tmp_path / "first.png"
    write_mask(mask, clip.masks[0])
    before = snapshot(tmp_path)
    code, _, err = run_main(segment_main, capsys, *seg_args, "--input", source, "--mask", mask,
                            "--out", tmp_path / "masks", "--overlay", source, "--overwrite")
    assert code == 2
    one_line_error(err, "stmae-segment", "--overlay", "same path as --input")
    assert snapshot(tmp_path) == before and not (tmp_path / "masks").exists()


def test_segment_outputs_inside_or_holding_inputs(tmp_path, video, seg_args, capsys):
    frames, mask = video
    masks_dir = tmp_path / "given"
    masks_dir.mkdir()
    (masks_dir / "00000.png").write_bytes(mask.read_bytes())
    before = snapshot(tmp_path)
    cases = [
        (["--out", frames / "sub"], "inside --input"),
        (["--out", tmp_path], "holds --input"),
        (["--out", masks_dir, "--masks-dir", masks_dir], "same path as --masks-dir"),
        (["--out", tmp_path / "o", "--overlay", frames / "x.mp4"], "inside --input"),
    ]
    for extra, needle in cases:
        args = [*seg_args, "--input", frames, *extra] + ([] if "--masks-dir" in extra else ["--mask", mask])
        code, _, err = run_main(segment_main, capsys, *args, "--overwrite")
        assert code == 2, extra
        one_line_error(err, "stmae-segment", needle)
    assert snapshot(tmp_path) == before


def test_segment_symlinked_out_to_the_input_is_refused(tmp_path, video, seg_args, capsys):
    frames, mask = video
    link = tmp_path / "link"
    os.symlink(frames, link)
    before = snapshot(frames)
    code, _, err = run_main(segment_main, capsys, *seg_args, "--input", frames, "--mask", mask,
                            "--out", link, "--overwrite")
    assert code == 2
    one_line_error(err, "stmae-segment", "same path as --input")
    assert snapshot(frames) == before


def test_segment_overwrite_leaves_foreign_masks_and_overlays(tmp_path, video, seg_args, capsys):
    frames, mask = video
    foreign = tmp_path / "annotations"
    foreign.mkdir()
    write_mask(foreign / "00000.png", np.ones((48, 64), np.uint8))
    (tmp_path / "holiday.mp4").write_bytes(b"a video the user cares about")
    before = snapshot(foreign, tmp_path / "holiday.mp4")
    code, _, err = run_main(segment_main, capsys, *seg_args, "--input", frames, "--mask", mask,
                            "--out", foreign, "--overwrite")
    assert code == 2
    one_line_error(err, "stmae-segment", "no stmae-segment record", "left untouched")
    code, _, err = run_main(segment_main, capsys, *seg_args, "--input", frames, "--mask", mask,
                            "--out", tmp_path / "new", "--overlay", tmp_path / "holiday.mp4", "--overwrite")
    assert code == 2
    one_line_error(err, "stmae-segment", "holiday.mp4 is not recorded", "left untouched")
    assert snapshot(foreign, tmp_path / "holiday.mp4") == before
    # the tool's own earlier output is replaced: masks and the recorded overlay
    own = tmp_path / "own"
    args = [*seg_args, "--input", frames, "--mask", mask, "--out", own, "--overlay", tmp_path / "own.mp4"]
    assert run_main(segment_main, capsys, *args)[0] == 0
    assert run_main(segment_main, capsys, *args)[0] == 2  # not without --overwrite
    code, out, err = run_main(segment_main, capsys, *args, "--overwrite")
    assert code == 0, err
    assert len(list(own.glob("*.png"))) == 6 and (tmp_path / "own.mp4").stat().st_size > 0


def test_eval_out_inside_the_dataset_never_touches_ground_truth(tmp_path, clip, seeded_small_checkpoint, capsys):
    root = tmp_path / "davis"
    write_frames(root / "JPEGImages" / "240p" / "seq", clip.frames)
    gt = root / "Annotations" / "240p" / "seq"
    gt.mkdir(parents=True)
    for t, m in enumerate(clip.masks):
        write_mask(gt / f"{t:05d}.png", m)
    before = snapshot(root)
    base = ["--dataset", root, "--sequences", "seq", "--resolution", "240p", "--checkpoint",
            seeded_small_checkpoint, "--size", -1, "--device", "cpu", "--quiet", "--overwrite"]
    for out, needle in ((root / "Annotations" / "240p", "inside --dataset"), (root, "same path as --dataset"),
                        (tmp_path, "holds --dataset")):
        code, stdout, err = run_main(eval_main, capsys, *base, "--out", out)
        assert code == 2 and "J&F" not in stdout
        one_line_error(err, "stmae-eval", needle)
    assert snapshot(root) == before


def test_eval_overwrite_needs_its_own_record(tmp_path, capsys, seeded_small_checkpoint, clip):
    root = tmp_path / "davis"
    write_frames(root / "JPEGImages" / "240p" / "seq", clip.frames)
    (root / "Annotations" / "240p" / "seq").mkdir(parents=True)
    out = tmp_path / "results"
    out.mkdir()
    (out / "results.csv").write_text("someone else's numbers\n")
    before = snapshot(out)
    code, _, err = run_main(eval_main, capsys, "--dataset", root, "--sequences", "seq", "--resolution", "240p",
                            "--checkpoint", seeded_small_checkpoint, "--device", "cpu", "--quiet",
                            "--out", out, "--overwrite")
    assert code == 2
    one_line_error(err, "stmae-eval", "replaces only results that stmae-eval wrote")
    assert snapshot(out) == before


def test_train_fresh_run_into_an_existing_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pth").write_bytes(b"weights of a week of training")
    (run / "train_config.json").write_text("{}")
    (run / "train_log.csv").write_text("step,loss\n1,0.5\n")
    before = snapshot(run)
    code, _, err = run_main(train_main, capsys, "--synthetic-clips", 2, "--model", "small", "--output", run,
                            "--device", "cpu", "--no-progress")
    assert code == 2
    one_line_error(err, "stmae-train", "already holds a training run", "--resume auto")
    code, _, err = run_main(train_main, capsys, "--synthetic-clips", 2, "--model", "small", "--output", run,
                            "--device", "cpu", "--no-progress", "--resume", "auto")
    assert code == 2  # the folder has a last.pth, but not a resumable one
    assert "Traceback" not in err
    assert snapshot(run) == before


def test_train_output_inside_the_data(tmp_path, capsys):
    data = tmp_path / "davis"
    (data / "JPEGImages").mkdir(parents=True)
    code, _, err = run_main(train_main, capsys, "--davis", data, "--output", data / "run", "--device", "cpu")
    assert code == 2
    one_line_error(err, "stmae-train", "inside --davis")
    assert not (data / "run").exists()


def test_bench_and_demo_refuse_folders_they_did_not_write(tmp_path, capsys, seeded_small_checkpoint):
    out = tmp_path / "results"
    out.mkdir()
    (out / "report.json").write_text('{"mine": true}')
    before = snapshot(out)
    code, _, err = run_main(bench_main, capsys, "--out", out, "--frames", 4, "--warmup", 1, "--sizes", 32)
    assert code == 2
    one_line_error(err, "stmae-bench", "not written by stmae-bench")
    code, _, err = run_main(demo_main, capsys, "--out", out, "--backend", "torch", "--checkpoint",
                            seeded_small_checkpoint, "--frames", 4, "--size", 32, "--objects", 2)
    assert code == 2
    one_line_error(err, "stmae-demo", "not written by stmae-demo")
    assert snapshot(out) == before
    # and a demo never writes into the folder of its checkpoint
    ckpt_dir = tmp_path / "w"
    ckpt_dir.mkdir()
    ckpt = ckpt_dir / "c.pth"
    ckpt.write_bytes(seeded_small_checkpoint.read_bytes())
    code, _, err = run_main(demo_main, capsys, "--out", ckpt_dir, "--backend", "torch", "--checkpoint", ckpt)
    assert code == 2
    one_line_error(err, "stmae-demo", "holds --checkpoint")


def test_bench_reruns_into_its_own_folder(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    write_record(out, "stmae-bench")
    (out / "report.json").write_text("{}")
    from runtime.bench.report import check_report_folder

    assert check_report_folder(out, {}) == out  # its own record: a re-run may replace its reports


def test_live_overlay_overwrite_leaves_a_foreign_video(tmp_path, clip, seg_args, capsys):
    """A live source (stream URL) with --overlay over an existing file the tool did not write:
    refused before the stream is opened."""
    mask = tmp_path / "m.png"
    write_mask(mask, clip.masks[0])
    (tmp_path / "holiday.mp4").write_bytes(b"a video the user cares about")
    before = snapshot(tmp_path)
    code, _, err = run_main(segment_main, capsys, *seg_args, "--input", "udp://127.0.0.1:9", "--mask", mask,
                            "--overlay", tmp_path / "holiday.mp4", "--overwrite")
    assert code == 2
    one_line_error(err, "stmae-segment", "holiday.mp4 is not recorded", "left untouched")
    assert snapshot(tmp_path) == before
