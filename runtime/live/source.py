"""Live frame sources: network streams through FFmpeg (PyAV) and cameras (OpenCV V4L2).

- URLs ``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``tcp://``, ``rtp://`` are
  opened with PyAV (``av``, which bundles FFmpeg with these protocols); RTSP goes over TCP.
- Cameras (``/dev/videoN`` or a camera index) are opened with OpenCV's V4L2 backend (the
  FFmpeg bundled with PyAV has no V4L2 input).

A source yields (H, W, 3) uint8 RGB frames as they are decoded. Every wait is bounded:
opening a stream and each read give up after ``timeout`` seconds (PyAV's open and read
timeouts; a camera read ends at V4L2's own timeout). :meth:`LiveSource.first_frame` reads
the first frame before anything is written, so a source that sends nothing, or frames of
another size than the mask, is refused up front. A packet the network cut short (flagged
corrupt by the demuxer) or that does not decode is never handed on: a partial frame is
never segmented. When the frames stop, ``end`` says why (:data:`SOURCE_ENDED`,
:data:`STALLED`, :data:`BROKE_MID_FRAME`, :data:`READ_ERROR`) and ``end_detail`` says it
in words. ``av`` and ``cv2`` are imported only when a source is opened.
"""

from __future__ import annotations

import errno
import re
from typing import Iterator

import numpy as np

from ..errors import InputError

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "rtp")
_CAMERA = re.compile(r"^/dev/video\d+$")

# Why a live run ended (LiveSummary.end, live_stats.json "end_reason"). The source's own:
SOURCE_ENDED = "source ended"
STALLED = "stalled"
BROKE_MID_FRAME = "broke mid-frame"
READ_ERROR = "read error"
# A connection closed by the other end between frames is how an HTTP/TCP stream ends.
_CLOSED = (errno.EIO, errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN)


def is_live_input(text: str | None) -> bool:
    """A stream URL of a known scheme, or a /dev/videoN camera."""
    if not text:
        return False
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    return scheme in STREAM_SCHEMES or bool(_CAMERA.match(text))


class LiveSource:
    """Base of the sources: iteration yields :meth:`first_frame` (if it was read) then the
    rest; ``end``/``end_detail`` are set when the frames stop. Subclasses give
    :meth:`_frames`, ``url``, ``fps`` and ``close``."""

    url: str
    fps: float | None
    end: str | None = None
    end_detail: str = ""
    damaged: int = 0  # packets cut short or undecodable, skipped (never segmented)

    def _frames(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def _ended(self, end: str, detail: str) -> None:
        if self.end is None:
            self.end, self.end_detail = end, detail

    def first_frame(self) -> np.ndarray:
        """Read (and keep, for iteration) the first frame; InputError saying why if the
        source ends or fails before one arrives."""
        if getattr(self, "_first", None) is None:
            self._iterator = self._frames()
            self._first = next(self._iterator, None)
            if self._first is None:
                raise InputError(f"{self.url} sent no frame: {self.end_detail or 'it ended at once'}")
        return self._first

    def __iter__(self) -> Iterator[np.ndarray]:
        if getattr(self, "_first", None) is not None:
            first, self._first = self._first, None
            yield first
            yield from self._iterator
        else:
            yield from self._frames()

    def close(self) -> None:
        raise NotImplementedError


class StreamSource(LiveSource):
    """A network stream decoded by PyAV. timeout: seconds to wait when opening and for
    each read before giving up (the stream then ends as :data:`STALLED`)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        try:
            import av
        except ImportError:
            raise InputError("live streams need PyAV: pip install av") from None
        self.url = url
        self.timeout = timeout
        options = {"rtsp_transport": "tcp"} if url.lower().startswith("rtsp") else {}
        if url.lower().startswith("udp"):
            options.update({"fifo_size": "1000000", "overrun_nonfatal": "1"})
        try:
            self._container = av.open(url, options=options, timeout=(timeout, timeout))
        except av.ExitError:
            raise InputError(f"cannot open the stream {url}: no answer within --stream-timeout {timeout:g} s") from None
        except (OSError, av.FFmpegError) as exc:
            raise InputError(f"cannot open the stream {url}: {exc}".splitlines()[0]) from None
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"the stream {url} has no video")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else None

    def _frames(self) -> Iterator[np.ndarray]:
        """Decoded frames until the stream ends; skipped: packets flagged corrupt (cut
        short by the network) and packets that do not decode."""
        import av

        last_cut = False
        try:
            for packet in self._container.demux(self._stream):
                if packet.is_corrupt:
                    self.damaged += 1
                    last_cut = True
                    continue
                try:
                    frames = packet.decode()
                except av.InvalidDataError:
                    self.damaged += 1
                    last_cut = True
                    continue
                last_cut = False
                for frame in frames:
                    yield frame.to_ndarray(format="rgb24")
            self._ended(SOURCE_ENDED, "the source ended")
        except av.ExitError:  # PyAV's read timeout
            self._ended(STALLED, f"the source stalled: no data for --stream-timeout {self.timeout:g} s")
        except (OSError, av.FFmpegError) as exc:
            if getattr(exc, "errno", None) in _CLOSED:
                self._ended(SOURCE_ENDED, "the source ended (connection closed)")
            else:
                self._ended(READ_ERROR, f"reading the source failed: {exc}".splitlines()[0])
        if last_cut:  # the last packet was cut short: the stream ended mid-frame
            self.end = BROKE_MID_FRAME
            self.end_detail = "the stream broke mid-frame (the partial frame was not segmented)"
        yield from self._flush()

    def _flush(self) -> Iterator[np.ndarray]:
        """Frames the decoder still holds (frame threading decodes a few behind)."""
        import av

        try:
            frames = self._stream.codec_context.decode(None)
        except (OSError, av.FFmpegError):
            return
        for frame in frames:
            yield frame.to_ndarray(format="rgb24")

    def close(self) -> None:
        self._container.close()


class CameraSource(LiveSource):
    """A camera read through OpenCV (V4L2 on Linux): ``/dev/videoN`` or an index."""

    def __init__(self, camera: int | str) -> None:
        import cv2

        self.url = camera if isinstance(camera, str) else f"camera {camera}"
        self._capture = cv2.VideoCapture(camera, cv2.CAP_V4L2) if hasattr(cv2, "CAP_V4L2") else cv2.VideoCapture(camera)
        if not self._capture.isOpened():
            raise InputError(f"cannot open {self.url}: no such camera, or it is busy (check ls /dev/video*)")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 else None

    def _frames(self) -> Iterator[np.ndarray]:
        import cv2

        while True:
            ok, frame = self._capture.read()  # V4L2 gives up after its own timeout
            if not ok or frame is None:
                self._ended(SOURCE_ENDED, f"{self.url} sent no more frames")
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._capture.release()


def open_live(input_text: str | None = None, camera: int | None = None, timeout: float = 10.0) -> LiveSource:
    """The source of ``--input URL|/dev/videoN`` or ``--camera N``."""
    if camera is not None:
        if camera < 0:
            raise InputError(f"--camera must be 0 or more, got {camera}")
        return CameraSource(camera)
    if input_text is None or not is_live_input(input_text):
        raise InputError(f"{input_text!r} is not a live source: give a {'/'.join(STREAM_SCHEMES[:4])}... URL or /dev/videoN")
    if _CAMERA.match(input_text):
        return CameraSource(input_text)
    return StreamSource(input_text, timeout)
