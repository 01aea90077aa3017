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
    "import os\n"
    "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules, 'omp': os.environ.get('OMP_WAIT_POLICY')}))\n"
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


def _refuses_before_torch(tmp_path, probe: str, args: list[str], prog: str, case: str, backend: str) -> None:
    """Run the probe in a fresh interpreter: exit 2, one line, torch never imported, OpenMP
    told not to spin before it is, nothing written, and no export made into the cache."""
    cache = tmp_path.parent / f"{tmp_path.name}-cache"
    env = {**subprocess_env(), "STMAE_CACHE_DIR": str(cache)}
    env.pop("STMAE_BACKEND") if backend == "default" else env.update(STMAE_BACKEND=backend)
    env.pop("OMP_WAIT_POLICY", None)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env, timeout=300)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert result["code"] == 2 and len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), proc.stderr
    assert result["torch"] is False, f"{case}: torch was imported before the refusal"
    # idle OpenMP threads will sleep, not spin, once torch loads (runtime.cpus.passive_openmp_waits)
    assert result["omp"] == "PASSIVE"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not cache.exists(), f"{case}: the checkpoint was exported before the refusal"


@pytest.mark.parametrize("backend", ["default", "torch"])
@pytest.mark.parametrize("case", ["missing input", "missing mask", "mask of the wrong size", "out inside the input",
                                  "out holds foreign files", "overlay type"])
def test_segment_refuses_before_torch_loads(tmp_path, clip, seeded_small_checkpoint, case, backend):
    args = refusal_cases(tmp_path, clip, seeded_small_checkpoint)[case]
    _refuses_before_torch(tmp_path, PROBE, args, "stmae-segment", case, backend)


EVAL_PROBE = PROBE.replace("segment_main", "eval_main")


def eval_refusal_cases(root, clip, checkpoint):
    """A two-sequence DAVIS-layout dataset at 240p and the eval refusals the README lists."""
    from PIL import Image

    dataset = root / "davis"
    for name in ("a", "b"):
        (dataset / "JPEGImages" / "240p" / name).mkdir(parents=True)
        (dataset / "Annotations" / "240p" / name).mkdir(parents=True)
        for i, frame in enumerate(clip.frames[:3]):
            Image.fromarray(frame).save(dataset / "JPEGImages" / "240p" / name / f"{i:05d}.jpg")
            write_mask(dataset / "Annotations" / "240p" / name / f"{i:05d}.png", clip.masks[i])
    taken = root / "taken"
    (taken / "a").mkdir(parents=True)
    (taken / "a" / "00000.png").write_bytes(b"someone's mask")
    common = ["--checkpoint", str(checkpoint), "--device", "cpu", "--dataset", str(dataset)]
    return {
        "missing dataset": [*common[:-1], str(root / "nope"), "--sequences", "a", "--out", str(root / "o1")],
        "unknown sequence": [*common, "--sequences", "a,zebra", "--out", str(root / "o2")],
        "missing resolution": [*common, "--sequences", "a", "--resolution", "1080p", "--out", str(root / "o3")],
        "out inside the dataset": [*common, "--sequences", "a", "--out", str(dataset / "o")],
        "out holds masks it did not write": [*common, "--sequences", "a", "--out", str(taken)],
        "corpus out inside the dataset": [*common, "--sequences", "a", "--workers", "1", "--out", str(dataset / "o")],
    }


@pytest.mark.parametrize("backend", ["default", "torch"])
@pytest.mark.parametrize("case", ["missing dataset", "unknown sequence", "missing resolution", "out inside the dataset",
                                  "out holds masks it did not write", "corpus out inside the dataset"])
def test_eval_refuses_before_torch_loads(tmp_path, clip, seeded_small_checkpoint, case, backend):
    args = eval_refusal_cases(tmp_path, clip, seeded_small_checkpoint)[case]
    _refuses_before_torch(tmp_path, EVAL_PROBE, args, "stmae-eval", case, backend)
