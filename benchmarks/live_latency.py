"""Live latency on loopback: DAVIS frames served as an HTTP MJPEG stream at --fps, read
through FFmpeg (PyAV) and segmented with and without --realtime. Prints, per mode, frames
received / segmented / dropped, FPS and arrival-to-mask latency p50/p99.

    PYTHONPATH=$PWD python benchmarks/live_latency.py \
        --frames ../shared/data/DAVIS2016/JPEGImages/240p/bear \
        --mask ../shared/data/DAVIS2016/Annotations/240p/bear/00000.png --fps 25
"""

from __future__ import annotations

import argparse
import http.server
import os
import threading
import time
from pathlib import Path


def serve(paths: list[Path], fps: float) -> http.server.ThreadingHTTPServer:
    parts = [p.read_bytes() for p in paths]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            start = time.perf_counter()
            try:
                for i, data in enumerate(parts):
                    time.sleep(max(0.0, start + i / fps - time.perf_counter()))  # a camera's pace
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data))
                    self.wfile.write(data + b"\r\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", required=True, help="folder of JPEG frames")
    parser.add_argument("--mask", required=True)
    parser.add_argument("--checkpoint", default=str(Path(__file__).resolve().parents[1] / "weights" / "stmae_small_davis240_v3.pth"))
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--size", type=int, default=240)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    import torch

    from runtime.backends.factory import create_backend
    from runtime.config import SessionConfig
    from runtime.live.realtime import segment_live
    from runtime.live.source import StreamSource
    from runtime.io.mask_io import read_mask

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    backend = create_backend("torch", checkpoint=args.checkpoint, device="cpu")
    paths = sorted(Path(args.frames).glob("*.jpg"))
    mask, palette = read_mask(args.mask)
    load = os.getloadavg()
    print(f"{len(paths)} frames served at {args.fps} FPS over loopback MJPEG, size {args.size}, "
          f"{args.threads} torch threads, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for realtime in (True, False):
        server = serve(paths, args.fps)
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        summary = segment_live(StreamSource(url, timeout=10), backend, mask, config=SessionConfig(size=args.size),
                               palette=palette, realtime=realtime)
        server.shutdown()
        print(f"{'--realtime' if realtime else 'every frame':<12} {summary.line()}")


if __name__ == "__main__":
    main()
