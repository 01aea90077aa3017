"""One output gate for every entry point (runtime/io/gate.py): classes 1, 5, 7 and 8.

- Class 1: every console script's path (segment single / --videos / --workers / --ray /
  --streams / live, eval single / --workers / --ray / --streams, bench plain / --streams,
  demo, train and its weights sub-commands) refuses an output equal to or inside each of
  its inputs, and (folder outputs) one holding an input: exit 2, one line, nothing written.
  All refusals happen before any network, worker or Ray runs, so the mains run in-process.
- Class 5: the write probe checks every write count (a short write on a nearly full disk),
  and a read-only corpus --out is the exit-2 refusal, not a raw OSError with exit 1.
- Class 7: --overwrite replaces the earlier run's whole output (what its record lists).
- Class 8: a corpus --out is locked while a run writes into it; a live refusal writes nothing.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from demo.cli import main as demo_main
from runtime.bench.cli import main as bench_main
from runtime.cli import eval_main, segment_main
from runtime.io.mask_io import write_mask
from runtime.serve.cli import main as serve_main
from stmae import generate_clip
from train.cli import main as train_main

from .conftest import one_line_error, run_main, write_frames

ROOT = Path(__file__).resolve().parents[2]


def tree(root: Path) -> dict[str, str]:
    """Every file (sha256) and folder under ``root``: a new empty folder counts as written."""
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder")
            for p in sorted(root.rglob("*"))}


@pytest.fixture()
def ws(tmp_path, seeded_small_checkpoint) -> Path:
    """Each input in a folder of its own, so that an --out holding one holds only that one:
    f/frames (6 frames, 48x64), m/first.png, w/small.pth, w2/second.pth, v/videos/a/ with
    vm/masks/a.png, d/davis (DAVIS 240p layout, sequence 'seq'), r/val (another)."""
    clip = generate_clip(frames=6, height=48, width=64, objects=2, seed=3)
    write_frames(tmp_path / "f" / "frames", clip.frames)
    (tmp_path / "m").mkdir()
    write_mask(tmp_path / "m" / "first.png", clip.masks[0])
    for folder, name in (("w", "small.pth"), ("w2", "second.pth")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_bytes(seeded_small_checkpoint.read_bytes())
    write_frames(tmp_path / "v" / "videos" / "a", clip.frames)
    (tmp_path / "vm" / "masks").mkdir(parents=True)
    write_mask(tmp_path / "vm" / "masks" / "a.png", clip.masks[0])
    for root in (tmp_path / "d" / "davis", tmp_path / "r" / "val"):
        write_frames(root / "JPEGImages" / "240p" / "seq", clip.frames)
        (root / "Annotations" / "240p" / "seq").mkdir(parents=True)
        for t, mask in enumerate(clip.masks):
            write_mask(root / "Annotations" / "240p" / "seq" / f"{t:05d}.png", mask)
    return tmp_path


@dataclass(frozen=True)
class EntryPoint:
    """A console script's path: ``args(ws, out)`` is its command line writing to ``out``;
    inputs: {flag: path relative to ws}; folder: whether --out is a folder (then an --out
    holding an input is refused too)."""

    prog: str
    main: Callable
    args: Callable[[Path, Path], list]
    inputs: dict[str, str]
    folder: bool = True
    flag: str = "--out"
    holds_exempt: tuple[str, ...] = field(default=())


def _seg(ws: Path) -> list:
    return ["--checkpoint", ws / "w" / "small.pth", "--size", -1, "--device", "cpu", "--quiet"]


def _corpus(*extra):
    return lambda ws, out: [*_seg(ws), "--videos", ws / "v" / "videos", "--masks-dir", ws / "vm" / "masks",
                            "--out", out, *extra]


def _eval(*extra):
    return lambda ws, out: [*_seg(ws), "--dataset", ws / "d" / "davis", "--sequences", "seq", "--resolution",
                            "240p", "--out", out, *extra]


CORPUS_INPUTS = {"--videos": "v/videos", "--masks-dir": "vm/masks", "--checkpoint": "w/small.pth"}
EVAL_INPUTS = {"--dataset": "d/davis", "--checkpoint": "w/small.pth"}
BENCH = ["--frames", 4, "--warmup", 1, "--sizes", 32]

ENTRY_POINTS = {
    "segment": EntryPoint("stmae-segment", segment_main, lambda ws, out: [
        *_seg(ws), "--input", ws / "f" / "frames", "--mask", ws / "m" / "first.png", "--out", out],
        {"--input": "f/frames", "--mask": "m/first.png", "--checkpoint": "w/small.pth"}),
    "segment --videos": EntryPoint("stmae-segment", segment_main, _corpus(), CORPUS_INPUTS),
    "segment --videos --workers 1": EntryPoint("stmae-segment", segment_main, _corpus("--workers", 1), CORPUS_INPUTS),
    "segment --videos --ray local": EntryPoint("stmae-segment", segment_main, _corpus("--ray", "local"), CORPUS_INPUTS),
    "segment --videos --streams 2": EntryPoint("stmae-segment", segment_main, _corpus("--streams", 2), CORPUS_INPUTS),
    "segment live": EntryPoint("stmae-segment", segment_main, lambda ws, out: [
        *_seg(ws), "--input", "udp://127.0.0.1:9", "--mask", ws / "m" / "first.png", "--stream-timeout", 0.5,
        "--out", out], {"--mask": "m/first.png", "--checkpoint": "w/small.pth"}),
    # a client of a server: its output rules are stmae-segment's, checked before any network
    "serve client": EntryPoint("stmae-serve client", serve_main, lambda ws, out: [
        "client", "--url", "http://127.0.0.1:9", "--token", "t", "--input", ws / "f" / "frames",
        "--mask", ws / "m" / "first.png", "--out", out, "--quiet"], {"--input": "f/frames", "--mask": "m/first.png"}),
    "eval": EntryPoint("stmae-eval", eval_main, _eval(), EVAL_INPUTS),
    "eval --streams 2": EntryPoint("stmae-eval", eval_main, _eval("--streams", 2), EVAL_INPUTS),
    "eval --workers 1": EntryPoint("stmae-eval", eval_main, _eval("--workers", 1), EVAL_INPUTS),
    "eval --ray local": EntryPoint("stmae-eval", eval_main, _eval("--ray", "local"), EVAL_INPUTS),
    "bench": EntryPoint("stmae-bench", bench_main, lambda ws, out: [
        *BENCH, "--input", ws / "f" / "frames", "--mask", ws / "m" / "first.png", "--checkpoint",
        ws / "w" / "small.pth", "--out", out],
        {"--input": "f/frames", "--mask": "m/first.png", "--checkpoint": "w/small.pth"}),
    "bench --streams 1": EntryPoint("stmae-bench", bench_main, lambda ws, out: [
        *BENCH, "--streams", 1, "--sequential", "off", "--checkpoint", ws / "w" / "small.pth", "--out", out],
        {"--checkpoint": "w/small.pth"}),
    "demo": EntryPoint("stmae-demo", demo_main, lambda ws, out: [
        "--backend", "torch", "--input", ws / "f" / "frames", "--mask", ws / "m" / "first.png", "--checkpoint",
        ws / "w" / "small.pth", "--out", out],
        {"--input": "f/frames", "--mask": "m/first.png", "--checkpoint": "w/small.pth"}),
    "train": EntryPoint("stmae-train", train_main, lambda ws, out: [
        "--model", "small", "--davis", ws / "d" / "davis", "--davis-resolution", "240p", "--frames", 3,
        "--synthetic-clips", 2, "--crop", 32, 48, "--batch-size", 2, "--refs", 2, "--steps", 2, "--warmup", 1,
        "--decay-at", 1, "--init-checkpoint", ws / "w" / "small.pth", "--val-root", ws / "r" / "val",
        "--val-resolution", "240p", "--device", "cpu", "--no-progress", "--output", out],
        {"--davis": "d/davis", "--val-root": "r/val", "--init-checkpoint": "w/small.pth"}, flag="--output"),
    "train export-weights": EntryPoint("stmae-train export-weights", train_main, lambda ws, out: [
        "export-weights", ws / "w" / "small.pth", "--out", out], {"CHECKPOINT": "w/small.pth"}, folder=False),
    "train average-weights": EntryPoint("stmae-train average-weights", train_main, lambda ws, out: [
        "average-weights", ws / "w" / "small.pth", ws / "w2" / "second.pth", "--out", out],
        {"CHECKPOINT 1": "w/small.pth", "CHECKPOINT 2": "w2/second.pth"}, folder=False),
}


def _cases(entry: EntryPoint, ws: Path) -> list[tuple[Path, str]]:
    """(--out, the words the refusal must hold) for every input: inside it (a folder), the
    same path (a file), inside it as if it were a folder (a file), holding it (folder outputs)."""
    cases = []
    for flag, rel in entry.inputs.items():
        given = ws / rel
        if given.is_dir():
            cases.append((given / "sub", f"inside {flag}"))
        else:
            cases += [(given, f"same path as {flag}"), (given / "sub", f"inside {flag}")]
        if entry.folder and flag not in entry.holds_exempt:
            cases.append((given.parent, f"holds {flag}"))
    return cases


@pytest.mark.parametrize("path", sorted(ENTRY_POINTS))
def test_every_path_refuses_an_output_inside_or_holding_its_inputs(path, ws, capsys):
    entry = ENTRY_POINTS[path]
    before = tree(ws)
    for out, needle in _cases(entry, ws):
        code, stdout, err = run_main(entry.main, capsys, *entry.args(ws, out))
        assert code == 2, f"{path} --out {out}: exit {code}\n{err}"
        line = one_line_error(err, entry.prog, needle)
        assert entry.flag in line, line
        assert tree(ws) == before, f"{path} --out {out} wrote or changed files"


def test_the_enumeration_covers_every_console_script_and_train_command():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    covered = {entry.prog.split()[0] for entry in ENTRY_POINTS.values()}
    assert set(scripts) - covered == {"stmae-export"}  # export: tests/adversarial/test_data_loss.py
    assert {"stmae-train export-weights", "stmae-train average-weights"} <= {e.prog for e in ENTRY_POINTS.values()}


# --- bench --streams: the same output checks and caps as the plain bench --------------------------


def test_bench_streams_output_and_count_checks(ws, capsys, monkeypatch):
    out = ws / "report"
    out.mkdir()
    (out / "report.json").write_text('{"someone": "else"}')
    (out / "report.md").write_text("# my notes\n")
    (ws / "afile").write_text("a file")
    before = tree(ws)
    base = [*BENCH, "--streams", 1, "--sequential", "off"]
    code, _, err = run_main(bench_main, capsys, *base, "--out", out)
    assert code == 2
    one_line_error(err, "stmae-bench", "not written by stmae-bench", "left untouched")
    code, _, err = run_main(bench_main, capsys, *base, "--out", ws / "afile")
    assert code == 2
    one_line_error(err, "stmae-bench", "is a file")
    code, _, err = run_main(bench_main, capsys, "--frames", 4, "--warmup", 1, "--streams", 1, "--sizes", 100000,
                            "--out", ws / "b")
    assert code == 2
    one_line_error(err, "stmae-bench", "--sizes", "4320")
    monkeypatch.delenv("STMAE_MAX_PIXELS", raising=False)
    code, _, err = run_main(bench_main, capsys, "--frames", 4, "--warmup", 1, "--streams", 1, 100000,
                            "--sizes", 480, "--out", ws / "b")
    assert code == 2
    one_line_error(err, "stmae-bench", "--streams 100000", "STMAE_MAX_PIXELS")
    assert tree(ws) == before


# --- class 5: the write probe and read-only outputs ------------------------------------------------


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _nearly_full_disk(monkeypatch, first: int | None) -> None:
    """os.write on a probe file: ``first`` bytes the first time (a short count), then
    ENOSPC (``first`` None: no progress at all, a count of 0)."""
    real_write = os.write
    written: dict[str, int] = {}

    def fake_write(fd, data):
        path = _fd_path(fd)
        if "write-probe" not in path:
            return real_write(fd, data)
        if first is None:
            return 0
        if path not in written:
            written[path] = real_write(fd, bytes(data[:first]))
            return written[path]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", fake_write)


@pytest.mark.parametrize("first", [4096, None])
def test_a_short_write_in_the_probe_is_a_full_disk(ws, capsys, monkeypatch, first):
    _nearly_full_disk(monkeypatch, first)
    before = tree(ws)
    out = ws / "o"
    for main, prog, args in (
        (segment_main, "stmae-segment", [*_seg(ws), "--input", ws / "f" / "frames", "--mask", ws / "m" / "first.png"]),
        (segment_main, "stmae-segment", _corpus()(ws, out)[:-2]),
        (eval_main, "stmae-eval", _eval()(ws, out)[:-2]),
    ):
        code, _, err = run_main(main, capsys, *args, "--out", out)
        assert code == 2, err
        one_line_error(err, prog, "cannot be written", "disk is full")
        assert tree(ws) == before


def test_a_corpus_out_on_a_read_only_mount_is_refused_with_exit_2(ws, capsys, monkeypatch):
    out = ws / "ro"
    out.mkdir()
    real_open, real_mkdir = os.open, os.mkdir
    inside = str(out) + os.sep

    def ro_open(path, flags, *args, **kwargs):
        if os.fspath(path).startswith(inside) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    def ro_mkdir(path, *args, **kwargs):
        if os.fspath(path).startswith(inside):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(os, "mkdir", ro_mkdir)
    before = tree(ws)
    code, _, err = run_main(segment_main, capsys, *_corpus()(ws, out))
    assert code == 2, err
    one_line_error(err, "stmae-segment", "cannot be written", "read-only")
    assert tree(ws) == before


# --- class 7: --overwrite replaces the earlier run's whole output ----------------------------------


def test_overwrite_replaces_the_whole_earlier_run(ws, capsys):
    out = ws / "masks"
    args = [*_seg(ws), "--input", ws / "f" / "frames", "--mask", ws / "m" / "first.png", "--out", out]
    assert run_main(segment_main, capsys, *args)[0] == 0
    (out / "notes.txt").write_text("the user's own file")
    code, _, err = run_main(segment_main, capsys, *args, "--max-frames", 3, "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00001.png", "00002.png"]
    assert (out / "notes.txt").read_text() == "the user's own file"
    # and the record lists what the second run wrote: a third run removes exactly those
    code, _, err = run_main(segment_main, capsys, *args, "--overwrite")
    assert code == 0, err
    assert len(list(out.glob("*.png"))) == 6 and (out / "notes.txt").exists()


def test_eval_overwrite_replaces_the_whole_earlier_run(ws, capsys):
    out = ws / "eval"
    args = _eval()(ws, out)
    assert run_main(eval_main, capsys, *args)[0] == 0
    assert len(list((out / "seq").glob("*.png"))) == 6
    code, _, err = run_main(eval_main, capsys, *args, "--max-frames", 3, "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in (out / "seq").glob("*.png")) == ["00000.png", "00001.png", "00002.png"]


# --- class 8: one corpus run at a time; a live refusal writes nothing ------------------------------


def test_a_second_corpus_run_into_a_locked_out_is_refused(ws, capsys):
    out = ws / "corpus"
    out.mkdir()
    lock = ".stmae-corpus.lock"
    # another run holds --out: its lock file, flock'ed (any other open file description conflicts)
    with open(out / lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        before = tree(ws)
        code, _, err = run_main(segment_main, capsys, *_corpus()(ws, out))
        assert code == 2, err
        one_line_error(err, "stmae-segment", "another corpus run", "pid 4242")
        assert tree(ws) == before
    code, _, err = run_main(segment_main, capsys, *_corpus()(ws, out))  # released: the run goes ahead
    assert code == 0, err
    assert len(list((out / "a").glob("*.png"))) == 6


def test_a_live_refusal_writes_nothing(ws, capsys):
    out = ws / "live"
    before = tree(ws)
    code, _, err = run_main(segment_main, capsys, *_seg(ws), "--input", "udp://127.0.0.1:9", "--mask",
                            ws / "m" / "first.png", "--stream-timeout", 0.5, "--out", out)
    assert code != 0 and "Traceback" not in err
    assert not out.exists() and tree(ws) == before
