"""The Python client of ``stmae-serve``: HTTP (httpx) for sessions and single frames,
WebSocket (websockets) for frame streams.

    from runtime.serve.client import ServeClient

    with ServeClient("http://127.0.0.1:8000", token="T") as client:
        session = client.open_session(first_jpeg, first_mask_png)   # frame 0
        with client.stream(session["session_id"]) as stream:
            stream.send(next_jpeg)                                # frame 1
            for result in stream.results(2):                       # frames 0 and 1, in order
                print(result.frame_index, result.labels.shape)

Every refusal of the server raises :class:`ServeClientError` (status, code, message);
a server that cannot be reached raises it with status 0.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np

UNREACHABLE = 0  # ServeClientError.status of a server that did not answer


class ServeClientError(Exception):
    """A refusal (HTTP status and the server's code and message), or ``status`` 0 when
    the server could not be reached."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code}, HTTP {status})" if status else message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Result:
    """One frame's result: index, labels (H, W) uint8 (the session's label values),
    objects known, latency on the server (ms), the server's recent frames/s."""

    frame_index: int
    labels: np.ndarray
    objects: tuple[int, ...]
    latency_ms: float
    fps: float | None = None


def labels_from_png(data: bytes) -> np.ndarray:
    """A result PNG (palette label map) -> (H, W) uint8 labels."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        if img.mode not in ("P", "L"):
            raise ServeClientError(502, "bad_result", f"the server sent a {img.mode} image, not a label map")
        return np.array(img, dtype=np.uint8)


def _error_of(response) -> ServeClientError:
    try:
        body = response.json()["error"]
        return ServeClientError(response.status_code, str(body["code"]), str(body["message"]))
    except (ValueError, KeyError, TypeError):
        text = response.text.strip().splitlines()[0] if response.text.strip() else response.reason_phrase
        return ServeClientError(response.status_code, f"http_{response.status_code}", text)


class ServeClient:
    """A connection to one server (``url`` such as http://127.0.0.1:8000; ``token``: its
    bearer token, or None; ``timeout``: seconds for any request)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        import httpx

        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> "ServeClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs):
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServeClientError(UNREACHABLE, "unreachable", f"cannot reach {self.url}: {exc or type(exc).__name__}"
                                   f"; check --url and that the server runs") from None
        if response.status_code >= 400:
            raise _error_of(response)
        return response

    # ---- HTTP -------------------------------------------------------------------------------
    def info(self) -> dict:
        """The model served and the limits (``GET /v1/info``)."""
        return self._request("GET", "/v1/info").json()

    def ready(self) -> bool:
        import httpx

        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def open_session(self, frame: bytes, mask: bytes) -> dict:
        """Open a session: the first frame (JPEG/PNG bytes) and its mask (PNG label map).
        Returns {"session_id", "width", "height", "objects", "frame_index": 0}."""
        files = {"frame": ("frame", frame, "application/octet-stream"), "mask": ("mask.png", mask, "image/png")}
        return self._request("POST", "/v1/sessions", files=files).json()

    def push(self, session_id: str, frame: bytes, mask: bytes | None = None) -> int:
        """Send the next frame (with a mask adding or replacing objects); its index."""
        if mask is None:
            response = self._request("POST", f"/v1/sessions/{session_id}/frames", content=frame,
                                     headers={"Content-Type": "application/octet-stream"})
        else:
            files = {"frame": ("frame", frame, "application/octet-stream"), "mask": ("mask.png", mask, "image/png")}
            response = self._request("POST", f"/v1/sessions/{session_id}/frames", files=files)
        return int(response.json()["frame_index"])

    def result(self, session_id: str, index: int, timeout_s: float = 10.0) -> Result:
        """Frame ``index``'s result, waiting up to ``timeout_s`` on the server."""
        response = self._request("GET", f"/v1/sessions/{session_id}/masks/{index}", params={"timeout_s": timeout_s})
        objects = tuple(int(v) for v in response.headers.get("X-Objects", "").split(",") if v)
        return Result(int(response.headers["X-Frame-Index"]), labels_from_png(response.content), objects,
                      float(response.headers.get("X-Latency-Ms", "nan")))

    def close_session(self, session_id: str) -> dict:
        """Close the session; its statistics."""
        return self._request("DELETE", f"/v1/sessions/{session_id}").json()

    # ---- WebSocket --------------------------------------------------------------------------
    def stream(self, session_id: str) -> "Stream":
        """A WebSocket stream of the session (a context manager)."""
        return Stream(self, session_id)


class Stream:
    """Frames out, results in, in frame order (``/v1/sessions/{sid}/stream``). Closing
    it with :meth:`finish` ends the session after its queued frames; leaving the block
    without it (an error) disconnects, which closes the session at once."""

    def __init__(self, client: ServeClient, session_id: str) -> None:
        from websockets.sync.client import connect

        url = "ws" + client.url[len("http"):] + f"/v1/sessions/{session_id}/stream"
        headers = {"Authorization": f"Bearer {client.token}"} if client.token else None
        try:
            self._connection = connect(url, additional_headers=headers, max_size=None, open_timeout=client.timeout,
                                       close_timeout=client.timeout)
            self._ws = self._connection.__enter__()
        except OSError as exc:
            raise ServeClientError(UNREACHABLE, "unreachable", f"cannot open the stream at {url}: {exc}") from None
        self.timeout = client.timeout
        self.session_id = session_id

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, frame: bytes, mask: bytes | None = None) -> None:
        """Send the next frame (and a mask applying to it)."""
        if mask is not None:
            self._ws.send(json.dumps({"type": "mask"}))
            self._ws.send(mask)
        self._ws.send(frame)

    def receive(self) -> Result:
        """The next result (in frame order); ServeClientError for an error message."""
        from websockets.exceptions import ConnectionClosed

        try:
            text = self._ws.recv(timeout=self.timeout)
            if isinstance(text, bytes):
                raise ServeClientError(502, "protocol", "the server sent a binary message where a result was due")
            meta = json.loads(text)
            if meta.get("type") == "error":
                code = str(meta.get("code"))
                raise ServeClientError(_STATUS.get(code, 400), code, str(meta.get("message")))
            png = self._ws.recv(timeout=self.timeout)
        except TimeoutError:
            raise ServeClientError(504, "timeout", f"no result from the server within {self.timeout:g} s") from None
        except ConnectionClosed as exc:
            raise ServeClientError(502, "closed", f"the server closed the stream ({exc})") from None
        return Result(int(meta["frame_index"]), labels_from_png(png), tuple(meta.get("objects", ())),
                      float(meta.get("latency_ms", float("nan"))), meta.get("fps"))

    def results(self, count: int):
        """The next ``count`` results."""
        for _ in range(count):
            yield self.receive()

    def finish(self) -> None:
        """End the session once its queued frames are done (their results still come)."""
        self._ws.send(json.dumps({"type": "close"}))

    def close(self) -> None:
        self._connection.__exit__(None, None, None)


# the HTTP status a stream error's code stands for (as the HTTP routes answer it)
_STATUS = {"bad_input": 400, "unauthorized": 401, "unknown_session": 404, "session_closed": 409, "closing": 409,
           "too_large": 413, "queue_full": 429, "too_many_sessions": 429, "draining": 503, "timeout": 504,
           "step_failed": 500}
