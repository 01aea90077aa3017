"""How long `stmae-segment` and `stmae-eval` take to refuse bad input: wall time of a fresh process for each
refusal case, from start to the one-line message (median of --repeats runs).

    PYTHONPATH=. python benchmarks/refusal_times.py [--repeats 3]

Uses a tiny synthetic clip and a small seeded checkpoint made in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import numpy as np
    import torch
    from PIL import Image

    from runtime.io.mask_io import write_mask
    from stmae import STMAE, generate_clip, preset, save_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = generate_clip(frames=3, height=48, width=64, objects=2, seed=3)
        frames = root / "frames"
        frames.mkdir()
        for i, frame in enumerate(clip.frames):
            Image.fromarray(frame).save(frames / f"{i:05d}.jpg")
        mask, small = root / "first.png", root / "small.png"
        write_mask(mask, clip.masks[0])
        write_mask(small, np.ones((8, 8), np.uint8))
        torch.manual_seed(0)
        checkpoint = root / "small.pth"
        save_checkpoint(checkpoint, STMAE(preset("small")))
        taken = root / "taken"
        taken.mkdir()
        (taken / "holiday.png").write_bytes(b"someone's file")
        common = ["--checkpoint", str(checkpoint), "--device", "cpu"]
        cases = {
            "missing input": ["--input", str(root / "nope"), "--mask", str(mask), "--out", str(root / "o")],
            "mask of the wrong size": ["--input", str(frames), "--mask", str(small), "--out", str(root / "o")],
            "--out inside --input": ["--input", str(frames), "--mask", str(mask), "--out", str(frames / "o")],
            "--out holds foreign files": ["--input", str(frames), "--mask", str(mask), "--out", str(taken)],
            "bad --size (argparse)": ["--input", str(frames), "--mask", str(mask), "--out", str(root / "o"),
                                      "--size", "0"],
        }
        dataset = root / "davis"
        for i, frame in enumerate(clip.frames):
            for sub, save in (("JPEGImages", lambda p: Image.fromarray(frame).save(p.with_suffix(".jpg"))),
                              ("Annotations", lambda p: write_mask(p, clip.masks[i]))):
                folder = dataset / sub / "240p" / "a"
                folder.mkdir(parents=True, exist_ok=True)
                save(folder / f"{i:05d}.png")
        eval_cases = {
            "missing --dataset": ["--dataset", str(root / "nope"), "--sequences", "a", "--out", str(root / "e")],
            "unknown sequence": ["--dataset", str(dataset), "--sequences", "zebra", "--out", str(root / "e")],
            "--out inside --dataset": ["--dataset", str(dataset), "--sequences", "a", "--out", str(dataset / "e")],
            "--workers, --out inside": ["--dataset", str(dataset), "--sequences", "a", "--workers", "1",
                                        "--out", str(dataset / "e")],
        }
        env = {**os.environ, "STMAE_CACHE_DIR": str(root / "cache")}  # the default backend; no export is made
        for tool, main_name, table in (("stmae-segment", "segment_main", cases), ("stmae-eval", "eval_main", eval_cases)):
            print(f"{tool} refusals, wall time of a fresh process, median of {args.repeats}")
            for name, case in table.items():
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    proc = subprocess.run([sys.executable, "-c", f"import sys; from runtime.cli import {main_name}; "
                                           f"sys.exit({main_name}(sys.argv[1:]))", *case, *common],
                                          capture_output=True, text=True, env=env)
                    times.append(time.perf_counter() - start)
                line = (proc.stderr.strip().splitlines() or [""])[-1][:90]
                print(f"  {name:<28} {statistics.median(times):6.2f} s  exit {proc.returncode}  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
