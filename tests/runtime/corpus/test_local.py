"""Corpus runs in this process and on local worker processes: same masks as the
sequential run, a killed worker's video retried, resume, failures reported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.corpus import records
from runtime.corpus.dispatch import WorkList
from runtime.corpus.jobs import VideoJob, discover_jobs
from runtime.corpus.run import run_corpus
from runtime.corpus.worker_setup import CRASH_ENV
from runtime.errors import InputError
from tests.runtime.conftest import default_sigint, subprocess_env

from .conftest import FRAMES, make_setup, png_names, read_outputs, stray_files


def assert_same(outputs: dict, reference: dict) -> None:
    assert sorted(outputs) == sorted(reference)
    for key, labels in reference.items():
        np.testing.assert_array_equal(outputs[key], labels, err_msg=key)


def test_reference_is_not_trivial(reference):
    """The comparisons below mean something: the (random-weight) network's masks differ
    from frame to frame and from video to video."""
    distinct = {labels.tobytes() for labels in reference.values()}
    assert len(distinct) > 3 * FRAMES


def test_two_workers_match_the_sequential_run(corpus, small_checkpoint, reference, tmp_path):
    videos, masks = corpus
    out = tmp_path / "out"
    summary = run_corpus(discover_jobs(videos, masks), make_setup(small_checkpoint, out), workers=2)
    assert sorted(summary.done) == list("abcd") and not summary.failed and not summary.retried
    assert_same(read_outputs(out), reference)
    pids = {records.read_record(out, n)["pid"] for n in "abcd"}
    assert os.getpid() not in pids  # done in the worker processes (how many each: timing)
    saved = json.loads((out / "run_summary.json").read_text())
    assert saved["done"] == summary.done and saved["failed"] == [] and saved["frames"] == 4 * FRAMES


def test_killed_worker_has_its_video_retried(corpus, small_checkpoint, reference, tmp_path, monkeypatch):
    videos, masks = corpus
    out = tmp_path / "out"
    marker = tmp_path / "crashed-once"
    monkeypatch.setenv(CRASH_ENV, f"b:3:{marker}")
    summary = run_corpus(discover_jobs(videos, masks), make_setup(small_checkpoint, out), workers=2)
    assert marker.exists()  # the worker holding b really died at its third frame
    assert sorted(summary.done) == list("abcd") and not summary.failed
    assert summary.retried == {"b": 2}
    assert_same(read_outputs(out), reference)
    assert stray_files(out) == []


def test_work_list_retries_a_dead_workers_video_then_gives_up():
    results, retries = [], []
    jobs = [VideoJob("x", Path("x.mp4"), Path("x.png")), VideoJob("y", Path("y.mp4"), Path("y.png"))]
    work = WorkList(jobs, retries=1, on_result=results.append, on_retry=lambda n, r: retries.append((n, r)))
    x = work.next()
    work.died(x, "worker process exited with code -9")
    assert retries == [("x", "worker process exited with code -9")] and not results
    y = work.next()
    assert y.name == "y" and work.next().name == "x"  # back in the list, behind y
    work.finished(y, {"name": "y", "status": "done", "retriable": False, "record": {"frames": 1}})
    work.died(x, "worker process exited with code -9")
    assert work.complete and [r["name"] for r in results] == ["y", "x"]
    assert results[1]["status"] == "failed" and results[1]["attempts"] == 2 and results[1]["retried"]
    assert results[1]["error"] == "failed 2 times, last: worker process exited with code -9"
    assert results[0]["attempts"] == 1 and not results[0]["retried"]


def test_out_of_memory_failure_is_retried():
    results = []
    work = WorkList([VideoJob("x", Path("x.mp4"), Path("x.png"))], retries=2, on_result=results.append)
    job = work.next()
    work.finished(job, {"name": "x", "status": "failed", "error": "OutOfMemoryError: CUDA", "retriable": True})
    assert not work.complete and work.next() is job


def test_rerun_skips_finished_videos_and_redoes_unfinished(corpus, small_checkpoint, reference, tmp_path):
    videos, masks = corpus
    out = tmp_path / "out"
    jobs = discover_jobs(videos, masks)
    run_corpus(jobs, make_setup(small_checkpoint, out))
    # What a run killed while writing c leaves: c's first masks, a temp file, no record.
    records.record_path(out, "c").unlink()
    for path in sorted((out / "c").glob("*.png"))[3:]:
        path.unlink()
    (out / "c" / ".00003.abc.png.tmp").write_bytes(b"partial")
    (out / "c" / ".00004.png.stmae-tmp-999-0a1b2c3d.png").write_bytes(b"partial")
    before = {n: records.read_record(out, n) for n in "abd"}
    mtimes = {p: p.stat().st_mtime_ns for n in "abd" for p in (out / n).glob("*.png")}
    time.sleep(0.05)
    summary = run_corpus(jobs, make_setup(small_checkpoint, out))
    assert summary.done == ["c"] and sorted(summary.skipped) == list("abd")
    for name in "abd":
        assert records.read_record(out, name) == before[name]  # same timestamps: not redone
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # files not rewritten
    assert records.read_record(out, "c")["started_at"] > before["d"]["finished_at"]
    assert_same(read_outputs(out), reference)
    assert stray_files(out) == []


def test_rerun_with_other_settings_is_refused(corpus, small_checkpoint, tmp_path):
    videos, masks = corpus
    out = tmp_path / "out"
    jobs = discover_jobs(videos, masks)[:1]
    run_corpus(jobs, make_setup(small_checkpoint, out, max_frames=3))
    with pytest.raises(InputError, match="other settings.*max_frames"):
        run_corpus(jobs, make_setup(small_checkpoint, out, max_frames=4))
    summary = run_corpus(jobs, make_setup(small_checkpoint, out, max_frames=4), overwrite=True)
    assert summary.done == ["a"] and png_names(out / "a") == [f"{i:05d}.png" for i in range(4)]


def test_output_inside_the_inputs_is_refused(corpus, small_checkpoint):
    videos, masks = corpus
    with pytest.raises(InputError, match="--out .* holds the video 'a'"):
        run_corpus(discover_jobs(videos, masks), make_setup(small_checkpoint, videos))


def test_cli_corrupt_video_fails_while_the_others_finish(corpus, small_checkpoint, reference, tmp_path):
    videos, masks = corpus
    mixed = tmp_path / "videos"
    shutil.copytree(videos, mixed)
    shutil.copytree(masks, tmp_path / "masks")
    (mixed / "e.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    shutil.copy(masks / "a.png", tmp_path / "masks" / "e.png")
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-c", "import sys; from runtime.cli import segment_main; sys.exit(segment_main())",
        "--videos", str(mixed), "--masks-dir", str(tmp_path / "masks"), "--out", str(out),
        "--checkpoint", str(small_checkpoint), "--device", "cpu", "--size", "-1", "--mem-every", "2",
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "5 videos: 4 done, 0 skipped (done before), 0 retried, 1 failed" in proc.stdout
    assert "failed: e: " in proc.stderr and "cannot be opened as a video" in proc.stderr
    saved = json.loads((out / "run_summary.json").read_text())
    assert [f["name"] for f in saved["failed"]] == ["e"] and "cannot be opened" in saved["failed"][0]["error"]
    assert_same(read_outputs(out), reference)
    assert not (out / "e").exists()
    # The rerun does only the failed video again (and fails it again).
    again = run_corpus(discover_jobs(mixed, tmp_path / "masks"), make_setup(small_checkpoint, out))
    assert again.done == [] and sorted(again.skipped) == list("abcd") and list(again.failed) == ["e"]


def test_ctrl_c_then_rerun_finishes_only_the_rest(small_checkpoint, tmp_path):
    """A real interruption: SIGINT to the command (videos in its own process) after its
    first finished video; the rerun skips what was finished (records and files untouched)
    and does the rest."""
    import signal

    from stmae import generate_clip
    from tests.runtime.conftest import write_frames
    from runtime.io.mask_io import write_mask

    videos, masks, out = tmp_path / "videos", tmp_path / "masks", tmp_path / "out"
    masks.mkdir()
    for seed, name in enumerate(("p", "q", "r")):
        clip = generate_clip(frames=20, height=48, width=64, objects=1, seed=20 + seed)
        write_frames(videos / name, clip.frames, ".png")
        write_mask(masks / f"{name}.png", clip.masks[0])
    cmd = [sys.executable, "-c", "import sys; from runtime.cli import segment_main; sys.exit(segment_main())",
           "--videos", str(videos), "--masks-dir", str(masks), "--out", str(out), "--checkpoint",
           str(small_checkpoint), "--device", "cpu", "--size", "-1", "--mem-every", "2", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
                            preexec_fn=default_sigint)
    deadline = time.monotonic() + 180
    def records_written() -> list[Path]:  # not the hidden temp files of a record being written
        return [p for p in (out / ".records").glob("*.json") if not p.name.startswith(".")]

    while not records_written() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in stderr, stderr
    finished = sorted(p.stem for p in records_written())
    assert 1 <= len(finished) < 3, "the run ended before it could be interrupted"
    assert json.loads((out / "run_summary.json").read_text())["interrupted"]
    before = {n: records.read_record(out, n) for n in finished}
    mtimes = {p: p.stat().st_mtime_ns for n in finished for p in (out / n).glob("*.png")}
    summary = run_corpus(discover_jobs(videos, masks), make_setup(small_checkpoint, out))
    assert sorted(summary.skipped) == finished and sorted(summary.done + finished) == ["p", "q", "r"]
    assert {n: records.read_record(out, n) for n in finished} == before
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert all(len(png_names(out / n)) == 20 for n in "pqr") and stray_files(out) == []
