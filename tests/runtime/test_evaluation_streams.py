"""stmae-eval --streams: sequences stepped together by the batched engine give the same
masks (byte for byte on disk) and scores as one at a time, with sequences of different
lengths and object counts joining as others leave. The shipped trained small model is
used: a randomly initialised network leaves many pixels with channels tied within float
noise, where batching may flip a label (the engine's own tests bound the probabilities)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.backends import TorchBackend
from runtime.cli import eval_main
from runtime.config import SessionConfig
from runtime.evaluation import evaluate_sequences
from runtime.io.mask_io import read_mask, write_mask
from stmae import generate_clip, load_checkpoint

from .conftest import write_frames

TRAINED = Path(__file__).resolve().parents[2] / "weights" / "stmae_small_davis240_v3.pth"
LENGTHS = {"alpha": 7, "beta": 4, "gamma": 6, "delta": 5}


def make_davis(root: Path) -> Path:
    for i, (name, frames) in enumerate(LENGTHS.items()):
        clip = generate_clip(frames=frames, height=40, width=56, objects=1 + i % 3, seed=30 + i)
        write_frames(root / "JPEGImages" / "480p" / name, clip.frames)
        ann = root / "Annotations" / "480p" / name
        ann.mkdir(parents=True)
        for t, m in enumerate(clip.masks):
            write_mask(ann / f"{t:05d}.png", m)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(LENGTHS) + "\n")
    return root


@pytest.fixture(scope="module")
def trained():
    if not TRAINED.is_file():
        pytest.skip(f"the shipped trained model {TRAINED} is missing")
    return TRAINED


def test_streams_give_the_masks_of_one_at_a_time(tmp_path, trained):
    root = make_davis(tmp_path / "davis")
    backend = TorchBackend(load_checkpoint(trained).model)
    config = SessionConfig(size=-1, mem_every=2, max_memory_frames=2, top_k=9)
    results = {}
    for streams in (1, 3):
        out = tmp_path / f"out{streams}"
        seen = []
        results[streams] = evaluate_sequences(backend, root, list(LENGTHS), "480p", out, config,
                                              streams=streams, on_frame=lambda s, i: seen.append((s, i)))
        assert sorted(seen) == sorted((s, i) for s, n in LENGTHS.items() for i in range(n))
    one, many = results[1], results[3]
    assert [s.name for s in many.sequences] == list(LENGTHS)
    assert [s.frames for s in many.sequences] == list(LENGTHS.values())
    for name in LENGTHS:
        for t in range(LENGTHS[name]):
            a, _ = read_mask(tmp_path / "out1" / name / f"{t:05d}.png")
            b, _ = read_mask(tmp_path / "out3" / name / f"{t:05d}.png")
            assert np.array_equal(a, b), f"{name} frame {t}"
    assert many.csv_text() == one.csv_text()


def test_eval_cli_streams(tmp_path, trained, capsys):
    root = make_davis(tmp_path / "davis")
    base = ["--checkpoint", str(trained), "--device", "cpu", "--quiet", "--size", "-1",
            "--dataset", str(root), "--split", "val"]
    assert eval_main([*base, "--out", str(tmp_path / "a")]) == 0
    assert eval_main([*base, "--out", str(tmp_path / "b"), "--streams", "2"]) == 0
    a = (tmp_path / "a" / "results.csv").read_text()
    assert a == (tmp_path / "b" / "results.csv").read_text() and "gamma" in a
    capsys.readouterr()
    assert eval_main([*base, "--out", str(tmp_path / "c"), "--streams", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--streams must be at least 1" in err[0]
