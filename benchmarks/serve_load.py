"""stmae-serve under load, on loopback: 1, 4 and 16 concurrent clients each stream a DAVIS
clip through one server; aggregate frames/s and per-frame latency p50/p99, against
offline sequential segmentation (``stmae-segment``'s function) of the same frames in the
same run, and one session at a time through the server.

    python benchmarks/serve_load.py --frames 10
    python benchmarks/serve_load.py --frames 30 --clients 1,4,16 --device cuda

The server runs in a subprocess (``stmae-serve --port 0``), the clients are threads of
this process (the Python client, WebSocket streams, frames sent as their JPEG files). The
offline rows run here first, with the same backend, size and number of threads. Every
loop is bounded: each client sends its clip's frames once.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKEN = "serve-load"


def clips(davis: Path, count: int, frames: int) -> list[tuple[str, list[Path], Path]]:
    """``count`` (name, frame files, first mask) of DAVIS 240p, sequences reused in turn."""
    names = sorted(p.name for p in (davis / "JPEGImages" / "240p").iterdir() if p.is_dir())
    if not names:
        sys.exit(f"serve_load: error: no DAVIS 240p sequences under {davis}; pass --davis")
    out = []
    for i in range(count):
        name = names[i % len(names)]
        files = sorted((davis / "JPEGImages" / "240p" / name).glob("*.jpg"))[:frames]
        out.append((name, files, davis / "Annotations" / "240p" / name / "00000.png"))
    return out


_BACKEND: list = []


def offline(args, clip_list) -> float:
    """Frames/s of segmenting the clips one after the other with stmae-segment's function
    (the backend is loaded, and warmed up on the first clip, once)."""
    from runtime.backends.factory import create_backend
    from runtime.config import SessionConfig
    from runtime.segment_video import segment_video
    from runtime.corpus.worker_setup import first_frames
    from runtime.io.frames import open_frames

    import torch

    torch.set_flush_denormal(True)
    config = SessionConfig(size=args.size)
    if not _BACKEND:
        _BACKEND.append(create_backend("torch", checkpoint=args.checkpoint, device=args.device))
        with tempfile.TemporaryDirectory() as tmp:
            name, files, mask = clip_list[0]
            segment_video(_BACKEND[0], files[0].parent, Path(tmp) / "warm", first_mask=mask, config=config,
                          frames=first_frames(open_frames(files[0].parent), len(files)))
    backend = _BACKEND[0]
    total, seconds = 0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, files, mask) in enumerate(clip_list):
            frames = first_frames(open_frames(files[0].parent), len(files))
            start = time.perf_counter()
            summary = segment_video(backend, files[0].parent, Path(tmp) / f"{i}", first_mask=mask, config=config,
                                    frames=frames)
            seconds += time.perf_counter() - start
            total += summary.frames
    return total / seconds


def start_server(args) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "STMAE_SERVE_TOKEN": TOKEN}
    command = [sys.executable, "-m", "runtime.serve.cli", "--checkpoint", args.checkpoint, "--backend", "torch",
               "--device", args.device, "--size", str(args.size), "--port", "0", "--max-batch", str(args.max_batch),
               "--max-wait-ms", str(args.max_wait_ms), "--max-sessions", str(max(args.clients) + 1),
               "--queue-depth", str(args.queue_depth)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    line = proc.stdout.readline()
    if " on " not in line:
        proc.kill()
        sys.exit(f"serve_load: error: the server did not start ({line.strip() or 'no output'})")
    return proc, line.split(" on ", 1)[1].split(" ", 1)[0]


def stream_clip(url: str, clip, latencies: list[float], depth: int) -> int:
    """One client: open a session with the clip's first frame, stream the rest; per-frame
    latency from sending a frame to receiving its mask. Returns frames received."""
    from runtime.serve.client import ServeClient

    _name, files, mask = clip
    sent: dict[int, float] = {}
    with ServeClient(url, TOKEN, timeout=300) as client:
        sent[0] = time.perf_counter()
        sid = client.open_session(files[0].read_bytes(), mask.read_bytes())["session_id"]
        received = 0
        with client.stream(sid) as stream:
            for index, path in enumerate(files[1:], start=1):
                while index - received >= depth:
                    result = stream.receive()
                    latencies.append(time.perf_counter() - sent[result.frame_index])
                    received += 1
                sent[index] = time.perf_counter()
                stream.send(path.read_bytes())
            while received < len(files):
                result = stream.receive()
                latencies.append(time.perf_counter() - sent[result.frame_index])
                received += 1
            stream.finish()
    return received


def run_clients(url: str, clip_list, depth: int) -> tuple[float, list[float]]:
    """All clips at once (one thread each): aggregate frames/s and the latencies."""
    latencies: list[float] = []
    counts: list[int] = []
    errors: list[BaseException] = []

    def client(clip) -> None:
        try:
            counts.append(stream_clip(url, clip, latencies, depth))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(clip,)) for clip in clip_list]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return sum(counts) / seconds, latencies


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "weights" / "stmae_small_davis240_v3.pth"))
    parser.add_argument("--davis", default=str(ROOT.parent / "shared" / "data" / "DAVIS2016"))
    parser.add_argument("--frames", type=int, default=10, help="frames of each clip (default 10)")
    parser.add_argument("--clients", default="1,4,16", help="concurrent clients per row (default 1,4,16)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=240, help="processing size (default 240: DAVIS 240p as is)")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--queue-depth", type=int, default=4)
    args = parser.parse_args(argv)
    from runtime.cpus import passive_openmp_waits

    passive_openmp_waits()  # as the server (and every command line) does, before torch loads here
    args.clients = [int(c) for c in args.clients.split(",")]
    most = max(args.clients)
    clip_list = clips(Path(args.davis), most, args.frames)
    print(f"serve_load: {most} DAVIS 240p clips x {args.frames} frames, size {args.size}, device {args.device}, "
          f"max-batch {args.max_batch}, max-wait-ms {args.max_wait_ms:g}, queue-depth {args.queue_depth}", flush=True)
    proc, url = start_server(args)
    rows = []
    try:
        run_clients(url, clip_list[:1], args.queue_depth)  # warm-up (first-step allocations)
        for n in args.clients:  # the offline run of the same clips just before each row (shared machines drift)
            base = offline(args, clip_list[:n])
            fps, latencies = run_clients(url, clip_list[:n], args.queue_depth)
            rows.append((f"{n} concurrent", fps, latencies, base))
            print(f"  {n} concurrent: {fps:.2f} frames/s, offline sequential {base:.2f}", flush=True)
        base = offline(args, clip_list[:most])
        one_latencies: list[float] = []
        start = time.perf_counter()
        frames = sum(stream_clip(url, clip, one_latencies, args.queue_depth) for clip in clip_list[:most])
        rows.append((f"{most}, one session at a time", frames / (time.perf_counter() - start), one_latencies, base))
    finally:
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=120)
    print()
    print("| clients | frames/s | offline sequential frames/s (same clips, just before) | ratio | "
          "latency p50 ms | latency p99 ms |")
    print("|---|---|---|---|---|---|")
    for label, fps, latencies, base in rows:
        p50, p99 = np.percentile(np.array(latencies) * 1000.0, [50, 99])
        print(f"| {label} | {fps:.2f} | {base:.2f} | {fps / base:.2f}x | {p50:.0f} | {p99:.0f} |")
    print(f"\nserver exit status after SIGTERM: {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
