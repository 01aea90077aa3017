"""The pipelined frame loop (runtime.io.pipeline): the masks of stepping the engine one frame
at a time, for one video (stmae-segment) and for several streams joining and leaving, with
an eager engine and with one whose results come back later (submit t+1 before wait t);
a failed write is raised and leaves no temp file; masks are synced in groups (no fsync per
mask) and the record is written after the last one; the PNG level changes sizes, not labels."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import stmae.atomic as atomic
from runtime.backends import TorchBackend
from runtime.cli import segment_main
from runtime.config import SessionConfig
from runtime.engine.session import VideoSession, check_step_input
from runtime.engine.stream_engine import StreamEngine
from runtime.engine.types import PendingStep
from runtime.io.frames import FrameFolder
from runtime.io.mask_io import read_mask, write_mask
from runtime.io.overlap import WriterPool
from runtime.io.pipeline import FrameLoop, LoopVideo, PipelineOptions
from runtime.segment_video import segment_video
from stmae import generate_clip
from stmae.atomic import GroupCommit, is_temp_name

from ..conftest import write_frames

CONFIG = SessionConfig(mem_every=2, top_k=7, max_memory_frames=2, size=-1)  # the window wraps around


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if is_temp_name(p.name))


def masks_on_disk(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: read_mask(p)[0] for p in sorted(folder.glob("*.png"))}


class LaterEngine(StreamEngine):
    """An engine whose results come back at ``wait`` (as a CUDA graph replay's do), logging
    the order of submits and waits."""

    def __init__(self, *args, log: list, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.log = log

    def submit(self, inputs):
        index = sum(1 for event, _ in self.log if event == "submit")
        self.log.append(("submit", index))
        ready = super().submit(inputs).wait()

        def finish():
            self.log.append(("wait", index))
            return ready

        return PendingStep({}, [finish])


# ---- one video ---------------------------------------------------------------------------
def test_segment_video_gives_the_masks_of_one_frame_at_a_time(tmp_path, small_model, tiny_video):
    frames_dir, mask_path, clip = tiny_video
    backend = TorchBackend(small_model)
    session = VideoSession(backend, CONFIG)
    first = read_mask(mask_path)[0]
    want = [session.step(frame, first if t == 0 else None).labels for t, frame in enumerate(clip.frames)]
    summary = segment_video(backend, frames_dir, tmp_path / "out", first_mask=mask_path, config=CONFIG)
    got = masks_on_disk(tmp_path / "out")
    assert summary.frames == len(clip.frames) and list(got) == [f"{t:05d}" for t in range(len(clip.frames))]
    for t, labels in enumerate(want):
        np.testing.assert_array_equal(got[f"{t:05d}"], labels, err_msg=f"frame {t}")
    assert temp_files(tmp_path) == []


def test_step_t_plus_1_is_submitted_before_step_t_is_waited_for(tmp_path, small_model, tiny_video):
    frames_dir, mask_path, clip = tiny_video
    backend = TorchBackend(small_model)
    session = VideoSession(backend, CONFIG)
    first = read_mask(mask_path)[0]
    want = [session.step(frame, first if t == 0 else None).labels for t, frame in enumerate(clip.frames)]
    log: list = []
    (tmp_path / "out").mkdir()
    with FrameLoop(lambda: LaterEngine(backend, CONFIG, log=log)) as loop:
        outcome = loop.run(LoopVideo("v", FrameFolder(frames_dir), {"00000": first}, tmp_path / "out"))
    assert outcome.ok and outcome.frames == len(clip.frames)
    n = len(clip.frames)
    expected = [("submit", 0)] + [e for t in range(1, n) for e in (("submit", t), ("wait", t - 1))] + [("wait", n - 1)]
    assert log == expected
    got = masks_on_disk(tmp_path / "out")
    for t, labels in enumerate(want):
        np.testing.assert_array_equal(got[f"{t:05d}"], labels, err_msg=f"frame {t}")


# ---- several streams ---------------------------------------------------------------------
@pytest.mark.parametrize("engine_class", [StreamEngine, LaterEngine], ids=["eager", "results-later"])
def test_streams_joining_and_leaving_give_the_masks_of_stepping_one_frame_at_a_time(
        tmp_path, small_model, engine_class):
    """A (7 frames, 1 object), B (4 frames, 3 objects) and C (5 frames; object 2 introduced
    by its own mask at C's frame 2) joining when B leaves. The reference steps a plain
    engine frame by frame with the same streams at the same steps."""
    backend = TorchBackend(small_model)
    clips = {"A": generate_clip(frames=7, height=32, width=48, objects=1, seed=11),
             "B": generate_clip(frames=4, height=32, width=48, objects=3, seed=12),
             "C": generate_clip(frames=5, height=32, width=48, objects=2, seed=13)}
    given = {name: {0: clip.masks[0]} for name, clip in clips.items()}
    given["C"] = {0: np.where(clips["C"].masks[0] == 1, 1, 0).astype(np.uint8),
                  2: np.where(clips["C"].masks[2] == 2, 2, 0).astype(np.uint8)}
    for name, clip in clips.items():
        write_frames(tmp_path / "in" / name, clip.frames, ".png")

    # the reference: a plain engine stepped frame by frame (B's end is seen at step 4, A's at 7)
    engine = StreamEngine(backend, CONFIG)
    want: dict[str, list] = {name: [] for name in clips}

    def step(frames: dict[str, int]) -> None:
        inputs = {}
        for name, t in frames.items():
            known = engine.schedule(name).registry.labels
            mask = given[name].get(t)
            objects = None if mask is None or not known else [v for v in np.unique(mask) if v and v not in known]
            inputs[name] = check_step_input(engine.schedule(name), clips[name].frames[t], mask, objects)
        for name, result in engine.step(inputs).items():
            want[name].append(result.labels)

    engine.add_stream("A"), engine.add_stream("B")
    for t in range(4):
        step({"A": t, "B": t})
    step({"A": 4})
    engine.remove_stream("B")
    engine.add_stream("C")
    step({"A": 5, "C": 0})
    step({"A": 6, "C": 1})
    step({"C": 2})
    engine.remove_stream("A")
    step({"C": 3})
    step({"C": 4})

    log: list = []
    make = (lambda: StreamEngine(backend, CONFIG)) if engine_class is StreamEngine else (
        lambda: LaterEngine(backend, CONFIG, log=log))
    out = tmp_path / "out"

    def video(name: str) -> LoopVideo:
        masks = {f"{t:05d}": m for t, m in given[name].items()}
        (out / name).mkdir(parents=True)
        return LoopVideo(name, FrameFolder(tmp_path / "in" / name), masks, out / name)

    order = []
    with FrameLoop(make, PipelineOptions(sync_every=3, writers=2, decoders=2)) as loop:
        loop.add(video("A"))
        loop.add(video("B"))
        while loop.held:
            for outcome in loop.advance():
                assert outcome.ok and outcome.unused == ()
                order.append(outcome.key)
                # the outcome comes once the video's masks are all in place (a record may follow)
                assert len(masks_on_disk(out / outcome.key)) == outcome.frames == len(clips[outcome.key].frames)
                assert temp_files(out / outcome.key) == []
                if outcome.key == "B":
                    loop.add(video("C"))
    assert order == ["B", "A", "C"]
    for name, labels in want.items():
        got = masks_on_disk(out / name)
        assert len(got) == len(labels)
        for t, expected in enumerate(labels):
            np.testing.assert_array_equal(got[f"{t:05d}"], expected, err_msg=f"{name} frame {t}")


# ---- writes ------------------------------------------------------------------------------
def test_a_failed_write_is_raised_in_the_caller_and_leaves_no_temp_file(tmp_path, small_model, tiny_video,
                                                                      monkeypatch):
    frames_dir, mask_path, _ = tiny_video
    real_save, calls = Image.Image.save, []

    def save(image, fp, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the third mask: the disk is full halfway through its PNG
            fp.write(b"\x89PNG partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(image, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left"):
        segment_video(TorchBackend(small_model), frames_dir, out, first_mask=mask_path, config=CONFIG)
    assert temp_files(tmp_path) == []
    assert list(out.glob("*.png")) == []  # the two written before were not yet committed: dropped


def test_writer_pool_keeps_errors_by_video():
    pool = WriterPool(threads=2, depth=2)
    done = []

    def fail():
        raise ValueError("write failed")

    pool.submit("a", fail)
    for i in range(5):
        pool.submit("b", lambda i=i: done.append(i))
    pool.wait("b")
    assert sorted(done) == list(range(5))
    with pytest.raises(ValueError, match="write failed"):
        pool.wait("a")
    pool.submit("a", lambda: done.append("a again"))  # the error was handed over: the key starts afresh
    pool.close()
    assert done[-1] == "a again"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="names the fsync'ed files through /proc/self/fd")
def test_masks_are_synced_in_groups_and_the_record_is_written_last(tmp_path, small_model, monkeypatch):
    clip = generate_clip(frames=12, height=32, width=48, objects=2, seed=5)
    write_frames(tmp_path / "frames", clip.frames, ".png")
    write_mask(tmp_path / "first.png", clip.masks[0])
    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_syncfs = os.fsync, os.replace, atomic._syncfs

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        return real_replace(src, dst)

    def syncfs(fd):
        events.append(("syncfs", os.readlink(f"/proc/self/fd/{fd}")))
        return real_syncfs(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(atomic, "_syncfs", syncfs)
    out = tmp_path / "out"
    segment_video(TorchBackend(small_model), tmp_path / "frames", out, first_mask=tmp_path / "first.png",
                  config=CONFIG, pipeline=PipelineOptions(sync_every=5, writers=1))  # one writer: groups of 5
    masks = [i for i, (kind, path) in enumerate(events) if kind == "replace" and path.endswith(".png")]
    assert len(masks) == 12
    assert [path for kind, path in events if kind == "fsync" and ".png" in path] == []  # no fsync per mask
    flushes = [i for i, (kind, path) in enumerate(events) if kind == "syncfs"]
    record = [i for i, (kind, path) in enumerate(events) if kind == "replace" and path.endswith(".stmae-output.json")]
    folder_syncs = [i for i, (kind, path) in enumerate(events)
                    if kind == "fsync" and Path(path) == out.resolve() and flushes[0] < i < record[-1]]
    assert len(flushes) == len(folder_syncs) == 3  # masks 1-5, 6-10, and 11-12 at the video's end
    assert record[-1] > max(masks + flushes + folder_syncs)  # the record follows the synced masks


def test_group_commit_renames_only_synced_files(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(atomic, "_syncfs", lambda fd: synced.append(fd) or True)
    group = GroupCommit(every=3)
    for i in range(4):
        with atomic.atomic_write(tmp_path / f"{i}.txt", "w", group=group) as fh:
            fh.write(str(i))
        if i < 2:  # waiting in the group: the target does not exist yet, its temp file does
            assert not (tmp_path / f"{i}.txt").exists() and len(temp_files(tmp_path)) == i + 1
    assert len(synced) == 1 and sorted(p.name for p in tmp_path.iterdir() if not is_temp_name(p.name)) == [
        "0.txt", "1.txt", "2.txt"]
    group.discard(tmp_path)  # the fourth is dropped, its temp file removed
    group.commit()
    assert temp_files(tmp_path) == [] and not (tmp_path / "3.txt").exists() and len(synced) == 1


def test_group_commit_without_syncfs_fsyncs_each_file(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_syncfs", lambda fd: False)
    count = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: count.append(fd) or real_fsync(fd))
    group = GroupCommit(every=10)
    for i in range(4):
        with atomic.atomic_write(tmp_path / f"{i}.txt", "w", group=group) as fh:
            fh.write(str(i))
    assert count == []
    group.commit()
    assert len(count) == 4 + 1  # each file, then the folder
    assert [(tmp_path / f"{i}.txt").read_text() for i in range(4)] == ["0", "1", "2", "3"]


def test_a_failed_group_flush_is_raised_for_its_folder_and_removes_the_temp_files(tmp_path, monkeypatch):
    def broken(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(atomic, "_syncfs", broken)
    group = GroupCommit(every=10)
    with atomic.atomic_write(tmp_path / "a.txt", "w", group=group) as fh:
        fh.write("a")
    with pytest.raises(OSError, match="Input/output"):
        group.commit(tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---- PNG level ---------------------------------------------------------------------------
def test_png_level_changes_the_file_size_but_not_the_labels(tmp_path, tiny_video, small_checkpoint, capsys):
    frames_dir, mask_path, _ = tiny_video
    palette = [(i * 7) % 256 for i in range(768)]
    write_mask(mask_path, read_mask(mask_path)[0], palette)  # a palette of its own, to be kept
    base = ["--checkpoint", small_checkpoint, "--size", -1, "--device", "cpu", "--quiet",
            "--input", frames_dir, "--mask", mask_path]
    results = {}
    for level in ("0", "9", None):
        out = tmp_path / f"out-{level}"
        extra = ["--png-level", level] if level is not None else []
        assert segment_main([str(a) for a in (*base, "--out", out, *extra)]) == 0
        results[level] = {p.name: (read_mask(p), p.stat().st_size) for p in sorted(out.glob("*.png"))}
    assert len(results["0"]) == 6
    for name, ((labels, kept), _) in results["0"].items():
        for level in ("9", None):
            (other, other_palette), _ = results[level][name]
            np.testing.assert_array_equal(other, labels)
            assert other_palette == kept == palette
    sizes = {level: sum(size for _, size in files.values()) for level, files in results.items()}
    assert sizes["0"] > sizes[None] and sizes["0"] > sizes["9"]
    capsys.readouterr()
    code = segment_main([str(a) for a in (*base, "--out", tmp_path / "bad", "--png-level", "12")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("stmae-segment: error: --png-level must be an integer from 0") and "got 12" in err
    assert not (tmp_path / "bad").exists()
