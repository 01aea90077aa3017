"""Median per-frame cost of one VideoSession on the CPU: thread CPU time and wall time of
``step`` (one intra-op thread), frame 0 and the first warm-up frames left out. Thread CPU
time is what to compare across code versions on a shared machine (wall time swings with
the other jobs). Usage:

    PYTHONPATH=. python benchmarks/session_cpu_time.py --checkpoint weights/stmae_small_davis240_v3.pth \\
        --frames-dir ../shared/data/DAVIS2016/JPEGImages/480p/bear \\
        --mask ../shared/data/DAVIS2016/Annotations/480p/bear/00000.png --size 240 --label after
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from runtime.backends import TorchBackend
from runtime.config import SessionConfig
from runtime.io.frames import FrameFolder
from runtime.io.mask_io import read_mask
from runtime.engine.session import VideoSession
from stmae import load_checkpoint


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--frames-dir", required=True)
    parser.add_argument("--mask", required=True, help="the first frame's mask")
    parser.add_argument("--size", type=int, default=240)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    model = load_checkpoint(args.checkpoint).model.eval()
    folder = FrameFolder(args.frames_dir)
    frames = [frame for _, (_, frame) in zip(range(args.frames), folder)]
    mask, _ = read_mask(args.mask)
    session = VideoSession(TorchBackend(model), SessionConfig(size=args.size))
    cpu, wall = [], []
    for t, frame in enumerate(frames):
        c0, w0 = time.thread_time(), time.perf_counter()
        session.step(frame, mask if t == 0 else None)
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    cpu_ms = statistics.median(cpu[args.warmup:]) * 1e3
    wall_ms = statistics.median(wall[args.warmup:]) * 1e3
    print(f"{args.label} cpu_ms={cpu_ms:.1f} wall_ms={wall_ms:.1f}")


if __name__ == "__main__":
    main()
