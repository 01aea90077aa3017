"""Live streams served by the tests themselves on loopback: an HTTP MJPEG server
(multipart/x-mixed-replace, what IP cameras serve) with a per-frame send schedule, and
an MPEG-TS sender over UDP written with PyAV."""

from __future__ import annotations

import http.server
import io
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from stmae import generate_clip

pytest.importorskip("av", reason="live sources need PyAV (pip install av)")


@pytest.fixture(scope="session")
def stream_clip():
    """40 synthetic 48x64 frames with 2 objects (the first mask is clip.masks[0])."""
    return generate_clip(frames=40, height=48, width=64, objects=2, seed=5)


def _jpeg(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@contextmanager
def mjpeg_server(frames, delays: list[float], cut_at: int | None = None):
    """Serve ``frames`` (RGB arrays, sizes may differ) as an MJPEG stream at
    http://127.0.0.1:PORT/; ``delays[i]``: seconds to wait before sending frame i (a stall
    then zeros = a network burst); ``cut_at``: send only the first half of that frame's
    JPEG, then close the connection (a stream cut mid-frame)."""
    parts = [_jpeg(f) for f in frames]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for index, (data, delay) in enumerate(zip(parts, delays)):
                    if delay:
                        time.sleep(delay)
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data))
                    if index == cut_at:
                        self.wfile.write(data[: len(data) // 2])
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.wfile.write(data + b"\r\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    finally:
        server.shutdown()
        server.server_close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def send_mpegts_udp(port: int, frames: np.ndarray, fps: float = 25.0, start_delay: float = 0.5) -> threading.Thread:
    """Start a thread that sends ``frames`` (all intra, MPEG-2 in MPEG-TS) to
    udp://127.0.0.1:PORT at ``fps``, after ``start_delay`` (the reader binds first)."""
    import av

    def send() -> None:
        time.sleep(start_delay)
        with av.open(f"udp://127.0.0.1:{port}?pkt_size=1316", mode="w", format="mpegts") as out:
            stream = out.add_stream("mpeg2video", rate=int(fps))
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            stream.codec_context.gop_size = 1
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    out.mux(packet)
                time.sleep(1.0 / fps)
            for packet in stream.encode():
                out.mux(packet)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread
