"""runtime.interrupt: the first Ctrl-C waits for a checkpoint between frames, a second one
(or a checkpoint that never comes within the grace time) raises at once."""

from __future__ import annotations

import os
import signal
import time

import pytest

from runtime import interrupt


@pytest.fixture(autouse=True)
def python_sigint():
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.02)  # the handler runs in the main thread at the next bytecode


def test_a_ctrl_c_waits_for_the_next_checkpoint():
    with interrupt.deferred_sigint(grace_s=30):
        interrupt.checkpoint()  # nothing pending: no-op
        _ctrl_c()
        assert interrupt.pending()
        for _ in range(1000):  # work between checkpoints goes on
            sum(range(100))
        with pytest.raises(KeyboardInterrupt):
            interrupt.checkpoint()
        assert not interrupt.pending()
        interrupt.checkpoint()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_raises_at_once():
    with interrupt.deferred_sigint(grace_s=30):
        _ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            _ctrl_c()
        assert not interrupt.pending()


def test_a_loop_without_checkpoints_is_interrupted_after_the_grace_time():
    with interrupt.deferred_sigint(grace_s=0.2):
        _ctrl_c()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            while time.monotonic() - start < 10:
                time.sleep(0.01)
        assert 0.15 < time.monotonic() - start < 5


def test_a_taken_interrupt_does_not_fire_again_later():
    with interrupt.deferred_sigint(grace_s=0.1):
        _ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            interrupt.checkpoint()
        time.sleep(0.4)  # the fallback timer of the taken interrupt stands down


def test_a_pending_ctrl_c_is_raised_when_the_block_ends():
    with pytest.raises(KeyboardInterrupt):
        with interrupt.deferred_sigint(grace_s=30):
            _ctrl_c()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and not interrupt.pending()


def test_a_caller_that_handles_sigint_keeps_its_handling():
    seen = []
    signal.signal(signal.SIGINT, lambda *a: seen.append(1))
    with interrupt.deferred_sigint():
        _ctrl_c()
        assert seen == [1] and not interrupt.pending()
