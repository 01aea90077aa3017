"""Refusals of a wrong path, a wrong mask or a taken output answer before torch loads (the
one-line message comes in well under a second instead of after the model's import).

Each case runs ``stmae-segment`` in a fresh interpreter and reports whether torch was
imported by the time the refusal was printed: a property, not a timing (the times are
printed by ``benchmarks/refusal_times.py``)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from runtime.io.mask_io import write_mask
from tests.runtime.conftest import subprocess_env

PROBE = (
    "import json, sys\n"
    "from runtime.cli import segment_main\n"
    "code = segment_main(sys.argv[1:])\n"
    "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules}))\n"
)


def refusal_cases(root, clip, checkpoint):
    frames = root / "frames"
    frames.mkdir()
    from PIL import Image

    for i, frame in enumerate(clip.frames[:3]):
        Image.fromarray(frame).save(frames / f"{i:05d}.jpg")
    mask = root / "first.png"
    write_mask(mask, clip.masks[0])
    small = root / "small.png"
    write_mask(small, np.zeros((8, 8), np.uint8) + 1)
    taken = root / "taken"
    taken.mkdir()
    (taken / "holiday.png").write_bytes(b"someone's file")
    common = ["--checkpoint", str(checkpoint), "--device", "cpu"]
    return {
        "missing input": ["--input", str(root / "nope"), "--mask", str(mask), "--out", str(root / "o1"), *common],
        "missing mask": ["--input", str(frames), "--mask", str(root / "nope.png"), "--out", str(root / "o2"), *common],
        "mask of the wrong size": ["--input", str(frames), "--mask", str(small), "--out", str(root / "o3"), *common],
        "out inside the input": ["--input", str(frames), "--mask", str(mask), "--out", str(frames / "o"), *common],
        "out holds foreign files": ["--input", str(frames), "--mask", str(mask), "--out", str(taken), *common],
        "overlay type": ["--input", str(frames), "--mask", str(mask), "--out", str(root / "o4"),
                         "--overlay", str(root / "o.gif"), *common],
    }


@pytest.mark.parametrize("case", ["missing input", "missing mask", "mask of the wrong size", "out inside the input",
                                  "out holds foreign files", "overlay type"])
def test_segment_refuses_before_torch_loads(tmp_path, clip, seeded_small_checkpoint, case):
    args = refusal_cases(tmp_path, clip, seeded_small_checkpoint)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          env=subprocess_env(), timeout=300)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert result["code"] == 2 and len(lines) == 1 and lines[0].startswith("stmae-segment: error: "), proc.stderr
    assert result["torch"] is False, f"{case}: torch was imported before the refusal"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
