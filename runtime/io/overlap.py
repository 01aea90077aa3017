"""Frame decoding and mask writing overlapped with compute, through bounded queues.

- :class:`Prefetcher` decodes the next frames in a background thread while the current
  one is segmented: at most ``depth`` decoded frames wait in its queue.
- :class:`BackgroundWriter` runs write jobs (PNG encoding, overlay video) in one
  background thread, in submission order: at most ``depth`` jobs wait; ``submit`` blocks
  when the queue is full, so memory stays flat however long the video.
- :class:`Ahead` computes ``fn(item)`` for the next items of a sequence in a thread pool
  shared by several sequences (frames decoded ahead, ``ahead`` per video), in order.
- :class:`WriterPool` runs write jobs in several threads, in any order, grouped by a key
  (a video): at most ``depth`` jobs wait or run; a key's first error is raised by its next
  ``submit`` and by :meth:`WriterPool.wait`, which returns once all its jobs ran.

OpenCV's decoders and PIL's PNG encoder release the GIL, so the threads really overlap the
network's work. An error in a background thread is raised in the caller's thread (at the
next item, ``submit`` or ``close``); nothing is dropped silently.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Callable, Generic, Hashable, Iterable, Iterator, TypeVar

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


class Ahead(Generic[T]):
    """Iterate ``fn(item)`` for ``item`` in ``items``, in order, with up to ``ahead``
    results computed in front of the consumer on ``pool`` (shared: several ``Ahead`` can
    use one pool, each keeping its own ``ahead`` in flight). An exception raised by ``fn``
    is re-raised by ``__next__`` at its item; :meth:`close` drops the work not started."""

    def __init__(self, items: Iterable, fn: Callable[..., T], pool: Executor, ahead: int = 2) -> None:
        self._items, self._fn, self._pool = iter(items), fn, pool
        self._ahead = _check_depth(ahead)
        self._futures: deque[Future] = deque()
        self._fill()

    def _fill(self) -> None:
        while len(self._futures) < self._ahead:
            item = next(self._items, _END)
            if item is _END:
                return
            self._futures.append(self._pool.submit(self._fn, item))

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if not self._futures:
            raise StopIteration
        future = self._futures.popleft()
        try:
            result = future.result()
        except BaseException:
            self.close()
            raise
        self._fill()
        return result

    def close(self) -> None:
        for future in self._futures:
            future.cancel()
        self._futures.clear()
        self._items = iter(())


class WriterPool:
    """Write jobs (callables without arguments) run by ``threads`` threads, grouped by key.

    ``submit(key, job)`` blocks while ``depth`` jobs wait or run, and raises the key's
    first job error (after an error the key's later jobs are skipped). :meth:`wait` waits
    for a key's jobs and raises its first error; :meth:`drop` waits and forgets the
    errors; :meth:`close` waits for all and raises the first error; :meth:`abort` drops
    the jobs not started and waits for the running ones. Jobs of a key complete in any
    order: whoever needs all of them done (a record written last) calls :meth:`wait`.
    """

    def __init__(self, threads: int = 2, depth: int = 8) -> None:
        self._pool = ThreadPoolExecutor(_check_depth(threads), thread_name_prefix="stmae-writer")
        self._slots = threading.BoundedSemaphore(_check_depth(depth))
        self._lock = threading.Lock()
        self._futures: dict[Hashable, list[Future]] = {}
        self._errors: dict[Hashable, BaseException] = {}
        self._closed = False

    def _run(self, key: Hashable, job: Callable[[], None]) -> None:
        try:
            with self._lock:
                failed = key in self._errors or self._closed
            if not failed:
                job()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            with self._lock:
                self._errors.setdefault(key, exc)
        finally:
            self._slots.release()

    def _raise(self, key: Hashable) -> None:
        with self._lock:
            error = self._errors.get(key)
        if error is not None:
            raise error

    def submit(self, key: Hashable, job: Callable[[], None]) -> None:
        self._raise(key)
        if self._closed:
            raise RuntimeError("the writer pool is closed")
        self._slots.acquire()
        try:
            future = self._pool.submit(self._run, key, job)
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            futures = self._futures.setdefault(key, [])
            futures[:] = [f for f in futures if not f.done()]
            futures.append(future)

    def _wait(self, key: Hashable) -> BaseException | None:
        with self._lock:
            futures = self._futures.pop(key, [])
        for future in futures:
            if not future.cancelled():
                future.result()  # _run catches the job's errors
        with self._lock:
            return self._errors.pop(key, None)

    def wait(self, key: Hashable) -> None:
        """Return once every job of ``key`` ran; raise the first error one raised."""
        error = self._wait(key)
        if error is not None:
            raise error

    def drop(self, key: Hashable) -> None:
        """Wait for the jobs of ``key`` and forget their errors."""
        self._wait(key)

    def close(self) -> None:
        """Wait for every job; raise the first error of any key."""
        with self._lock:
            keys = list(self._futures)
        errors = [self._wait(key) for key in keys]
        self._closed = True
        self._pool.shutdown(wait=True)
        with self._lock:
            errors += list(self._errors.values())
            self._errors.clear()
        error = next((e for e in errors if e is not None), None)
        if error is not None:
            raise error

    def abort(self) -> None:
        """Drop the jobs not started, wait for the running ones; errors are not raised."""
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._futures.clear()
            self._errors.clear()
