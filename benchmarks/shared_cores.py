"""The README's segment example on a quiet machine and on busy cores, for the CPU default
(ONNX Runtime on the cached fp32 export) and for ``--backend torch``, in one run.

    PYTHONPATH=. python benchmarks/shared_cores.py [--frames 30] [--repeats 1]

"Busy": one competing process per CPU this process may use (``runtime.cpus.usable_cpus``),
each spinning in pure Python at normal priority, as other jobs on a shared runner would. Each
row runs ``stmae-segment`` in a fresh process on the first ``--frames`` frames of DAVIS
``bear`` (480p frames, the checkpoint's own size) and reads the frames/s from its summary
line. The first run of the default backend may export the checkpoint into the user cache; a
warm-up run makes sure every timed run reuses it. Printed: frames/s per row and, per
backend, loaded / quiet (the fraction of its quiet speed kept under load).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEGMENT = "import sys; from runtime.cli import segment_main; sys.exit(segment_main(sys.argv[1:]))"
FPS = re.compile(r"([0-9.]+) FPS -> ")
BACKEND = re.compile(r"backend (\S+) \(")


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def _segment(args: argparse.Namespace, backend: list[str], out: Path, env: dict) -> tuple[float, str]:
    cmd = [sys.executable, "-c", SEGMENT, "--checkpoint", str(args.checkpoint), "--input", str(args.input),
           "--mask", str(args.mask), "--out", str(out), "--max-frames", str(args.frames), "--quiet", "--overwrite",
           "--device", "cpu", *backend]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"shared_cores: stmae-segment failed: {proc.stderr.strip()[-500:]}")
    line = proc.stdout.strip().splitlines()[-1]
    return float(FPS.search(line).group(1)), BACKEND.search(line).group(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = ROOT.parent / "shared" / "data" / "DAVIS2016"
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "weights" / "stmae_small_davis240_v3.pth")
    parser.add_argument("--input", type=Path, default=data / "JPEGImages" / "480p" / "bear")
    parser.add_argument("--mask", type=Path, default=data / "Annotations" / "480p" / "bear" / "00000.png")
    parser.add_argument("--frames", type=int, default=30, help="frames per run (the example has 82)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per row (median)")
    args = parser.parse_args()
    from runtime.cpus import usable_cpus

    env = {k: v for k, v in os.environ.items() if k not in ("STMAE_BACKEND", "OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    cpus = usable_cpus()
    backends = {"default": [], "torch": ["--backend", "torch"]}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "masks"
        _, chosen = _segment(args, [], out, env)  # warm-up: makes or reuses the cached export
        print(f"README segment example: bear, first {args.frames} frames, {cpus} usable CPU(s); "
              f"default backend here: {chosen}; load average before: {os.getloadavg()[0]:.2f}")
        fps: dict[tuple[str, str], float] = {}
        for load in ("quiet", "busy"):
            stop = multiprocessing.Event()
            hogs = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(cpus if load == "busy" else 0)]
            for hog in hogs:
                hog.start()
            time.sleep(1.0 if hogs else 0.0)
            try:
                for name, flags in backends.items():
                    runs = [_segment(args, flags, out, env)[0] for _ in range(args.repeats)]
                    fps[(name, load)] = statistics.median(runs)
                    print(f"  {load:<6} {name:<8} {fps[(name, load)]:7.2f} frames/s  (runs: {', '.join(f'{r:.2f}' for r in runs)})",
                          flush=True)
            finally:
                stop.set()
                for hog in hogs:
                    hog.join(5)
        for name in backends:
            print(f"{name:<8} busy / quiet = {fps[(name, 'busy')] / fps[(name, 'quiet')]:.2f}")
        print(f"default / torch: quiet {fps[('default', 'quiet')] / fps[('torch', 'quiet')]:.2f}x, "
              f"busy {fps[('default', 'busy')] / fps[('torch', 'busy')]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
