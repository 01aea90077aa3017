"""Corpus throughput: the same videos on --workers 1, --workers 2 and a local Ray cluster
(and, with --gpu, one Ray actor on the GPU), each into a fresh output folder. A run name
with ``:sN`` steps N videos together in each worker (``--streams N``), e.g.
``--runs workers1t1,workers1t1:s4``; the masks of every run are checked against the first
run's (the same, byte for byte).

Videos: DAVIS sequences (first --frames frames each, --max-frames). The network: the
trained small model shipped in weights/ (default), ``--checkpoint published`` for the
published architecture with the contract's deterministic weights, or any checkpoint. Prints one row per runner: wall time (including
worker start-up), start-up, videos/min, frames/s, the ratio to --workers 1, and the
dispatch overhead per video (hand-out to result minus the worker's own time).

    PYTHONPATH=$PWD python benchmarks/corpus_throughput.py \
        --davis ../shared/data/DAVIS2016 --resolution 240p --videos 8 --frames 20
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def published_checkpoint(folder: Path) -> Path:
    import torch

    from stmae import STMAE
    from stmae.reference_weights import reference_weights_for

    path = folder / "published_rule_weights.pth"
    model = STMAE()
    torch.save(reference_weights_for(model), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", required=True)
    parser.add_argument("--resolution", default="240p")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--size", type=int, default=240)
    parser.add_argument("--checkpoint")
    parser.add_argument("--runs", default="workers1,workers2,ray",
                        help="comma list of workers1, workers1t1 (one torch thread), workers2, ray, ray-gpu, "
                        "each optionally with :sN (N videos stepped together per worker)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()

    from runtime.config import SessionConfig
    from runtime.corpus.jobs import dataset_jobs
    from runtime.corpus.run import run_corpus
    from runtime.corpus.worker_setup import BackendSpec, WorkerSetup, fingerprint_of

    work = Path(tempfile.mkdtemp(prefix="corpus-bench-"))
    if args.checkpoint == "published":
        checkpoint = published_checkpoint(work)
    else:
        checkpoint = Path(args.checkpoint or Path(__file__).resolve().parents[1] / "weights" / "stmae_small_davis240_v3.pth")
    jobs = dataset_jobs(args.davis, args.resolution)[: args.videos]
    config = SessionConfig(size=args.size)
    load = os.getloadavg()
    print(f"{len(jobs)} videos x {args.frames} frames ({args.resolution}, size {args.size}), "
          f"{os.cpu_count()} CPUs, load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    rows = []
    first_masks = None
    for name in args.runs.split(","):
        run, _, streams = name.partition(":s")
        device = "cuda" if run == "ray-gpu" else args.device
        spec = BackendSpec("torch", str(checkpoint), None, device, "fp32")
        out = work / name.replace(":", "-")
        setup = WorkerSetup(spec, config, out, fingerprint_of(spec, config, args.frames), args.frames,
                            threads=1 if run == "workers1t1" else None, streams=int(streams or 1))
        kwargs = {"workers1": dict(workers=1), "workers1t1": dict(workers=1), "workers2": dict(workers=2),
                  "ray": dict(ray="local"),
                  "ray-gpu": dict(ray="local")}[run]
        start = time.perf_counter()
        summary = run_corpus(jobs, setup, **kwargs)
        wall = time.perf_counter() - start
        assert not summary.failed, summary.failed
        masks = {p.relative_to(out): p.read_bytes() for p in sorted(out.glob("*/*.png"))}
        first_masks = first_masks or masks
        rows.append({
            "run": name, "same_masks_as_first": masks == first_masks, "runner": summary.runner,
            "wall_s": round(wall, 2), "startup_s": round(summary.startup_seconds, 2),
            "videos_per_min": round(60 * len(jobs) / wall, 2), "fps": round(summary.frames / wall, 2),
            "fps_after_startup": round(summary.frames / (wall - summary.startup_seconds), 2),
            "dispatch_ms_per_video": round(1000 * summary.dispatch_seconds / len(jobs), 1),
            "frames": summary.frames,
        })
    base = rows[0]["wall_s"]
    print(f"{'run':<14}{'wall s':>8}{'startup s':>11}{'videos/min':>12}{'FPS':>7}{'FPS after start':>17}"
          f"{'vs first':>10}{'dispatch ms/video':>19}{'same masks':>12}  runner")
    for r in rows:
        print(f"{r['run']:<14}{r['wall_s']:>8.1f}{r['startup_s']:>11.1f}{r['videos_per_min']:>12.2f}{r['fps']:>7.2f}"
              f"{r['fps_after_startup']:>17.2f}{base / r['wall_s']:>9.2f}x{r['dispatch_ms_per_video']:>19.1f}{str(r['same_masks_as_first']):>12}  {r['runner']}")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
