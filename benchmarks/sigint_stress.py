"""Ctrl-C stress: interrupt `stmae-segment --videos` N times at random moments after its
first finished video, with K busy processes loading the CPU, and count the runs that do
not exit (status 130) within 30 s. For each hang, py-spy's stack dump (if installed).

Before runtime.interrupt, 1 of 43 runs hung on the 2-core CI-like machine with K=2 (the
main thread joining the mask writer, the writer waiting on a queue whose wake-up was lost).

Usage: PYTHONPATH=. python benchmarks/sigint_stress.py [--runs 60] [--load 2]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--load", type=int, default=2, help="busy processes beside the runs")
    args = parser.parse_args(argv)
    import torch

    from runtime.io.mask_io import write_mask
    from stmae import STMAE, generate_clip
    from stmae.checkpoint import save_checkpoint
    from stmae.config import preset
    from tests.runtime.conftest import write_frames

    base = Path(tempfile.mkdtemp(prefix="stmae-sigint-"))
    torch.manual_seed(0)
    checkpoint = base / "small.pth"
    save_checkpoint(checkpoint, STMAE(preset("small")).eval())
    videos, masks = base / "videos", base / "masks"
    masks.mkdir()
    for seed, name in enumerate(("p", "q", "r")):
        clip = generate_clip(frames=20, height=48, width=64, objects=1, seed=20 + seed)
        write_frames(videos / name, clip.frames, ".png")
        write_mask(masks / f"{name}.png", clip.masks[0])
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    hangs, other = 0, 0
    try:
        for i in range(args.runs):
            out = base / f"out{i}"
            cmd = [sys.executable, "-c", "import sys; from runtime.cli import segment_main; sys.exit(segment_main())",
                   "--videos", str(videos), "--masks-dir", str(masks), "--out", str(out), "--checkpoint",
                   str(checkpoint), "--device", "cpu", "--size", "-1", "--mem-every", "2", "--quiet"]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline and not any(
                    not p.name.startswith(".") for p in (out / ".records").glob("*.json")):
                time.sleep(0.01)
            time.sleep(random.random() * 0.3)
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                hangs += 1
                print(f"run {i}: HANG", flush=True)
                if shutil.which("py-spy"):
                    subprocess.run(["py-spy", "dump", "--pid", str(proc.pid)], check=False)
                proc.kill()
                proc.communicate()
                continue
            if proc.returncode != 130:
                other += 1
                print(f"run {i}: exit {proc.returncode}: {err.strip()[-300:]}", flush=True)
            else:
                print(f"run {i}: interrupted, exit 130", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        for p in load:
            p.kill()
        shutil.rmtree(base, ignore_errors=True)
    print(f"{args.runs} interrupted runs, load {args.load}: {hangs} hung, {other} exited other than 130")
    return 1 if hangs or other else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
