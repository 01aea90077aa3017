"""Frame decoding and mask writing overlapped with compute, through bounded queues.

- :class:`Prefetcher` decodes the next frames in a background thread while the current
  one is segmented: at most ``depth`` decoded frames wait in its queue.
- :class:`BackgroundWriter` runs write jobs (PNG encoding, overlay video) in one
  background thread, in submission order: at most ``depth`` jobs wait; ``submit`` blocks
  when the queue is full, so memory stays flat however long the video.

OpenCV's decoders and PIL's PNG encoder release the GIL, so the threads really overlap the
network's work. An error in a background thread is raised in the caller's thread (at the
next item, ``submit`` or ``close``); nothing is dropped silently.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")

_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _check_depth(depth: int) -> int:
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"queue depth must be a positive integer, got {depth!r}")
    return depth


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put ``item``, giving up (False) once ``stop`` is set."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class Prefetcher(Generic[T]):
    """Iterate ``source`` with up to ``depth`` items produced ahead in a background thread.

    Use as an iterator inside ``with``: leaving the block (normally or on an error) stops
    the thread. An exception raised by ``source`` is re-raised by ``__next__``.
    """

    def __init__(self, source: Iterable[T], depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=_check_depth(depth))
        self._stop = threading.Event()
        self._source = source
        self._thread = threading.Thread(target=self._produce, name="stmae-prefetch", daemon=True)
        self._done = False
        self._thread.start()

    def _produce(self) -> None:
        try:
            for item in self._source:
                if not _put(self._queue, item, self._stop):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            _put(self._queue, _Failure(exc), self._stop)
            return
        _put(self._queue, _END, self._stop)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._done = True
            raise item.exc
        return item

    def close(self) -> None:
        """Stop producing and wait for the thread."""
        self._stop.set()
        self._done = True
        self._thread.join()

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class BackgroundWriter:
    """Run jobs (callables without arguments) in order in one background thread.

    ``submit`` blocks while ``depth`` jobs are waiting. ``close`` waits for every job and
    raises the first error a job raised (``submit`` raises it too, as soon as it is known);
    ``abort`` drops the waiting jobs and stops.
    """

    def __init__(self, depth: int = 4) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=_check_depth(depth))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._consume, name="stmae-writer", daemon=True)
        self._thread.start()

    def _consume(self) -> None:
        while True:
            job = self._queue.get()
            if job is _END:
                return
            if self._error is not None or self._stop.is_set():
                continue  # drain: after an error or an abort nothing more is written
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, job: Callable[[], None]) -> None:
        self._raise_error()
        if not self._thread.is_alive():
            raise RuntimeError("the writer is closed")
        self._queue.put(job)

    def close(self) -> None:
        """Wait until every submitted job ran; raise the first job error."""
        if self._thread.is_alive():
            self._queue.put(_END)
            self._thread.join()
        self._raise_error()

    def abort(self) -> None:
        """Drop the jobs not yet run and stop (errors are not raised)."""
        self._stop.set()
        if self._thread.is_alive():
            self._queue.put(_END)
            self._thread.join()
