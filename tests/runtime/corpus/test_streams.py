"""Corpus workers stepping several videos together (``--streams``): the same masks as the
sequential run (videos of different lengths and object counts, an object introduced
later, a video file), in this process and on worker processes; a worker killed with
several videos in flight has all of them retried; resume; a video failing mid-batch
leaves while the others finish; the dispatch rules of the work list."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.cli import eval_main, segment_main
from runtime.corpus import records
from runtime.corpus.dispatch import WorkList
from runtime.corpus.jobs import VideoJob, discover_jobs
from runtime.corpus.run import run_corpus
from runtime.corpus.worker_setup import CRASH_ENV

from .conftest import LENGTHS, png_names, read_outputs, stray_files, streams_setup


def assert_same(outputs: dict, reference: dict) -> None:
    assert sorted(outputs) == sorted(reference)
    for key, labels in reference.items():
        np.testing.assert_array_equal(outputs[key], labels, err_msg=key)


def test_streams_in_process_match_the_sequential_run(streams_corpus, trained, streams_reference, tmp_path):
    out = tmp_path / "out"
    summary = run_corpus(discover_jobs(*streams_corpus), streams_setup(trained, out, streams=2))
    assert sorted(summary.done) == sorted(LENGTHS) and not summary.failed and not summary.retried
    assert summary.runner == "this process, 2 videos stepped together per worker"
    assert_same(read_outputs(out), streams_reference)
    assert stray_files(out) == []
    for name, (frames, _) in LENGTHS.items():
        record = records.read_record(out, name)
        assert record["frames"] == frames and record["pid"] == os.getpid()
    assert records.read_record(out, "late")["objects"] == [1, 2]
    # Videos overlapped in time: a lane freed by a finished video was taken by the next one.
    spans = {n: (records.read_record(out, n)["started_at"], records.read_record(out, n)["finished_at"])
             for n in LENGTHS}
    assert spans["beta"][0] < spans["alpha"][1] and spans["gamma"][0] < spans["alpha"][1]
    assert spans["gamma"][0] >= spans["beta"][1]  # gamma joined when beta (4 frames) left


def test_streams_on_two_workers_match_the_sequential_run(streams_corpus, trained, streams_reference, tmp_path):
    out = tmp_path / "out"
    summary = run_corpus(discover_jobs(*streams_corpus), streams_setup(trained, out, streams=2), workers=2)
    assert sorted(summary.done) == sorted(LENGTHS) and not summary.failed and not summary.retried
    assert summary.runner == "2 local worker process(es), 2 videos stepped together per worker"
    assert_same(read_outputs(out), streams_reference)
    assert os.getpid() not in {records.read_record(out, n)["pid"] for n in LENGTHS}
    assert stray_files(out) == []


def test_killed_worker_has_all_its_videos_retried(streams_corpus, trained, streams_reference, tmp_path, monkeypatch):
    """One worker process stepping alpha, beta and gamma together dies at alpha's frame 3
    (beta, 4 frames, is not finished yet): all three are retried, each alone."""
    out = tmp_path / "out"
    marker = tmp_path / "crashed-once"
    monkeypatch.setenv(CRASH_ENV, f"alpha:3:{marker}")
    summary = run_corpus(discover_jobs(*streams_corpus), streams_setup(trained, out, streams=3), workers=1)
    assert marker.exists()
    assert sorted(summary.done) == sorted(LENGTHS) and not summary.failed
    assert summary.retried == {"alpha": 2, "beta": 2, "gamma": 2}
    assert_same(read_outputs(out), streams_reference)
    assert stray_files(out) == []
    saved = json.loads((out / "run_summary.json").read_text())
    assert saved["retried"] == summary.retried and saved["failed"] == []


def test_out_of_memory_in_a_batched_step_retries_its_videos(streams_corpus, trained, streams_reference, tmp_path,
                                                            monkeypatch):
    """The third batched step (alpha, beta, gamma) runs out of memory: all three fail
    retriably, are retried (alone), and end done with the sequential run's masks."""
    import torch

    from runtime.engine.stream_engine import StreamEngine

    real, calls = StreamEngine.submit, []

    def submit(engine, inputs):  # the pipelined loop submits each step (runtime.io.pipeline)
        calls.append(sorted(inputs))
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return real(engine, inputs)

    monkeypatch.setattr(StreamEngine, "submit", submit)
    out = tmp_path / "out"
    summary = run_corpus(discover_jobs(*streams_corpus), streams_setup(trained, out, streams=3))
    assert calls[2] == ["alpha", "beta", "gamma"]
    assert sorted(summary.done) == sorted(LENGTHS) and not summary.failed
    assert summary.retried == {"alpha": 2, "beta": 2, "gamma": 2}
    assert_same(read_outputs(out), streams_reference)
    assert stray_files(out) == []


def test_rerun_with_streams_skips_finished_videos(streams_corpus, trained, streams_reference, tmp_path):
    out = tmp_path / "out"
    jobs = discover_jobs(*streams_corpus)
    run_corpus(jobs, streams_setup(trained, out, streams=3))
    # What a run killed while writing gamma leaves: its first masks, a temp file, no record.
    records.record_path(out, "gamma").unlink()
    for path in sorted((out / "gamma").glob("*.png"))[2:]:
        path.unlink()
    (out / "gamma" / ".00002.abc.png.tmp").write_bytes(b"partial")
    others = [n for n in LENGTHS if n != "gamma"]
    before = {n: records.read_record(out, n) for n in others}
    mtimes = {p: p.stat().st_mtime_ns for n in others for p in (out / n).glob("*.png")}
    time.sleep(0.05)
    summary = run_corpus(jobs, streams_setup(trained, out, streams=3))  # streams is not a setting of the masks
    assert summary.done == ["gamma"] and sorted(summary.skipped) == sorted(others)
    assert {n: records.read_record(out, n) for n in others} == before
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert_same(read_outputs(out), streams_reference)
    assert stray_files(out) == []


def test_video_failing_mid_batch_leaves_while_the_others_finish(streams_corpus, trained, streams_reference, tmp_path):
    import shutil

    videos, masks = tmp_path / "videos", tmp_path / "masks"
    shutil.copytree(streams_corpus[0], videos)
    shutil.copytree(streams_corpus[1], masks)
    shutil.copytree(videos / "alpha", videos / "broken")
    shutil.copy(masks / "alpha.png", masks / "broken.png")
    frame = videos / "broken" / "00003.png"
    frame.write_bytes(frame.read_bytes()[:120])  # the header reads, the pixels do not
    out = tmp_path / "out"
    summary = run_corpus(discover_jobs(videos, masks), streams_setup(trained, out, streams=3))
    assert list(summary.failed) == ["broken"] and "00003.png cannot be read" in summary.failed["broken"]
    assert sorted(summary.done) == sorted(LENGTHS) and not summary.retried
    assert_same(read_outputs(out), streams_reference)
    assert not (out / "broken").exists() and records.read_record(out, "broken") is None


def test_work_list_fills_lanes_and_runs_a_retried_video_alone():
    jobs = [VideoJob(n, Path(f"{n}.mp4"), Path(f"{n}.png")) for n in "wxyz"]
    results = []
    work = WorkList(jobs, retries=1, on_result=results.append)
    first = work.take([], 3)
    assert [j.name for j in first] == ["w", "x", "y"]
    assert work.take(first, 3) == []  # no free lane
    for job in first:  # the worker died with all three in flight
        work.died(job, "worker process exited with code -9")
    assert work.in_flight == 0 and [j.name for j in work.pending] == ["z", "w", "x", "y"]
    z = work.take([], 3)
    assert [j.name for j in z] == ["z"]  # w, x, y died before: none joins a worker holding z
    w = work.take([], 3)
    assert [j.name for j in w] == ["w"]  # alone in an empty worker ...
    assert work.take(w, 3) == []  # ... and nothing joins it
    work.finished(z[0], {"name": "z", "status": "done", "retriable": False, "record": {"frames": 1}})
    work.finished(w[0], {"name": "w", "status": "done", "retriable": False, "record": {"frames": 1}})
    x, y = work.take([], 3), work.take([], 3)
    assert [j.name for j in x] == ["x"] and [j.name for j in y] == ["y"]  # each alone
    work.died(x[0], "worker process exited with code -9")  # a second death: retries=1 is spent
    assert [r["name"] for r in results] == ["z", "w", "x"]
    assert results[0]["attempts"] == 1 and results[1]["attempts"] == 2 and results[1]["retried"]
    assert results[2]["status"] == "failed" and results[2]["error"].startswith("failed 2 times")
    assert not work.complete and work.in_flight == 1


def test_eval_on_a_worker_with_streams_scores_like_the_sequential_eval(trained, tmp_path, capsys):
    """stmae-eval --workers 1 --streams 2 (refused before this combination existed)."""
    from tests.runtime.test_evaluation_streams import make_davis

    root = make_davis(tmp_path / "davis")
    base = ["--checkpoint", str(trained), "--device", "cpu", "--quiet", "--size", "-1",
            "--dataset", str(root), "--split", "val"]
    assert eval_main([*base, "--out", str(tmp_path / "a")]) == 0
    assert eval_main([*base, "--out", str(tmp_path / "b"), "--workers", "1", "--streams", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("on 1 local worker process(es), 2 videos stepped together per worker" in line for line in lines)
    a = (tmp_path / "a" / "results.csv").read_text()
    assert a == (tmp_path / "b" / "results.csv").read_text() and "gamma" in a


def test_cli_streams(streams_corpus, trained, streams_reference, tmp_path, capsys):
    videos, masks = streams_corpus
    common = ["--videos", str(videos), "--masks-dir", str(masks), "--checkpoint", str(trained), "--device", "cpu",
              "--size", "-1", "--mem-every", "2", "--max-memory-frames", "2", "--top-k", "9", "--quiet"]
    assert segment_main([*common, "--out", str(tmp_path / "o"), "--streams", "3"]) == 0
    out = capsys.readouterr().out
    assert "5 videos: 5 done, 0 skipped" in out and "3 videos stepped together per worker" in out
    assert_same(read_outputs(tmp_path / "o"), streams_reference)
    for extra, message in ((["--streams", "0"], "--streams must be at least 1, got 0"),):
        code = segment_main([*common, "--out", str(tmp_path / "bad"), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1
    code = segment_main(["--input", str(videos / "alpha"), "--mask", str(masks / "alpha.png"), "--out",
                         str(tmp_path / "one"), "--checkpoint", str(trained), "--streams", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--streams steps several videos together: give them with --videos DIR" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "one").exists()
