"""Ctrl-C at safe points.

Python raises ``KeyboardInterrupt`` in the main thread at whatever bytecode it is running.
Raised inside a ``queue.Queue`` operation (between its ``Condition.wait`` and the
re-acquisition of the queue's lock) it can leave the queue's lock and waiters
inconsistent: a wake-up is lost. That hung ``stmae-segment --videos`` on Ctrl-C: the main
thread joined the mask-writer thread forever while the writer waited on a queue that
already held its stop marker (reproduced once in 43 interrupted runs on a loaded 2-core
machine, with py-spy showing both threads; ``benchmarks/sigint_stress.py``).

:func:`deferred_sigint` (entered by every CLI command, in the main thread) makes the
first SIGINT only set a flag, and :func:`checkpoint` (called by the frame loops between
frames) raises ``KeyboardInterrupt`` there, where no queue operation is in flight. So
that a loop without checkpoints stays interruptible, the interrupt is raised as before
(asynchronously) if no checkpoint takes it within ``grace_s``; a second Ctrl-C raises at
once.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import threading
from typing import Iterator

_lock = threading.Lock()
_state = {"active": False, "pending": False, "generation": 0}


def checkpoint() -> None:
    """Raise KeyboardInterrupt if a deferred Ctrl-C is waiting (call between frames)."""
    if _state["pending"]:
        with _lock:
            if not _state["pending"]:
                return
            _state["pending"] = False
            _state["generation"] += 1  # the fallback timer of this interrupt stands down
        raise KeyboardInterrupt


def pending() -> bool:
    """Whether a deferred Ctrl-C waits for a checkpoint."""
    return bool(_state["pending"])


@contextlib.contextmanager
def deferred_sigint(grace_s: float = 2.0) -> Iterator[None]:
    """Within the block, SIGINT waits for :func:`checkpoint` (at most ``grace_s`` seconds,
    then it is raised wherever the main thread is); a second SIGINT raises at once. Does
    nothing outside the main thread, or when SIGINT is not Python's default handler (a
    caller that handles it keeps its handling)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler or _state["active"]:
        yield
        return

    def fallback(generation: int) -> None:
        with _lock:
            due = _state["pending"] and _state["generation"] == generation and _state["active"]
        if due:
            _thread.interrupt_main()  # runs the handler again: the "second Ctrl-C" path

    def handler(signum, frame):
        with _lock:
            if not _state["pending"]:
                _state["pending"] = True
                timer = threading.Timer(grace_s, fallback, args=(_state["generation"],))
                timer.daemon = True
                timer.start()
                return
            _state["pending"] = False
            _state["generation"] += 1
        raise KeyboardInterrupt

    with _lock:
        _state.update(active=True, pending=False)
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        with _lock:
            was_pending = _state["pending"]
            _state.update(active=False, pending=False)
            _state["generation"] += 1
        if was_pending:  # a Ctrl-C the block never reached a checkpoint for
            raise KeyboardInterrupt
