"""Prefetcher and BackgroundWriter: order kept, queues bounded, errors never lost."""

from __future__ import annotations

import threading
import time

import pytest

from runtime.io.overlap import BackgroundWriter, Prefetcher


def test_prefetcher_yields_everything_in_order_and_stays_bounded():
    produced = []
    consumed = []
    ahead = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i

    with Prefetcher(source(), depth=3) as items:
        for item in items:
            time.sleep(0.001)  # a slow consumer: the producer must wait for it
            consumed.append(item)
            ahead.append(len(produced) - len(consumed))
    assert consumed == list(range(50))
    # at most depth items queued, one being put and one just taken
    assert max(ahead) <= 3 + 1


def test_prefetcher_raises_the_source_error_after_the_good_items():
    def source():
        yield 1
        yield 2
        raise ValueError("frame 3 is unreadable")

    got = []
    with pytest.raises(ValueError, match="frame 3 is unreadable"):
        with Prefetcher(source(), depth=2) as items:
            for item in items:
                got.append(item)
    assert got == [1, 2]


def test_prefetcher_stops_its_thread_when_the_consumer_leaves_early():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    with Prefetcher(endless(), depth=2) as items:
        assert next(items) == 0
    assert threading.active_count() == before


def test_writer_runs_jobs_in_order_and_blocks_when_full():
    done = []
    gate = threading.Event()
    writer = BackgroundWriter(depth=2)
    writer.submit(lambda: (gate.wait(5), done.append(0)))  # the thread is busy with this
    writer.submit(lambda: done.append(1))
    writer.submit(lambda: done.append(2))
    blocked = threading.Thread(target=writer.submit, args=(lambda: done.append(3),))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive(), "a full queue must make submit wait"
    gate.set()
    blocked.join(5)
    writer.close()
    assert done == [0, 1, 2, 3]


def test_writer_error_is_raised_and_later_jobs_are_not_run():
    done = []
    writer = BackgroundWriter(depth=4)

    def fail():
        raise OSError("disk full")

    writer.submit(fail)
    writer.submit(lambda: done.append("after"))
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    assert done == []
    with pytest.raises(OSError, match="disk full"):
        writer.submit(lambda: None)


def test_writer_abort_drops_waiting_jobs():
    done = []
    started, gate = threading.Event(), threading.Event()
    writer = BackgroundWriter(depth=4)
    writer.submit(lambda: (started.set(), gate.wait(5), done.append(0)))
    writer.submit(lambda: done.append(1))
    assert started.wait(5)
    aborter = threading.Thread(target=writer.abort)
    aborter.start()
    time.sleep(0.05)
    gate.set()
    aborter.join(5)
    assert done == [0]  # the running job finishes; the waiting one is dropped
    with pytest.raises(RuntimeError, match="the writer is closed"):
        writer.submit(lambda: None)


@pytest.mark.parametrize("depth", [0, -1, 1.5, True])
def test_bad_depths_are_refused(depth):
    with pytest.raises(ValueError, match="queue depth must be a positive integer"):
        BackgroundWriter(depth=depth)
