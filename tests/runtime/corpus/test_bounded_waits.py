"""Every wait of the corpus runners is bounded: a local worker that never builds its
backend, or ignores SIGTERM when stopped; a Ray address (probed with a TCP connect on
loopback, ``ray.init`` in a bounded thread) and the line naming the cluster joined. Ray
itself is faked here (its real cluster is in test_ray.py)."""

from __future__ import annotations

import multiprocessing as mp
import signal
import socket
import time
from pathlib import Path

import pytest

from runtime.corpus import local_pool, ray_runner
from runtime.corpus.dispatch import RunnerError, WorkList
from runtime.corpus.jobs import VideoJob
from runtime.corpus.local_pool import LocalPool, _Slot

from .conftest import make_setup


def _sleep_ignoring_sigterm(conn) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn.send(("armed",))
    time.sleep(120)


def _forked_slot() -> _Slot:
    """A worker slot whose process ignores SIGTERM and never says it is ready (a worker
    stuck in a driver call). Forked: the child only sleeps."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_sleep_ignoring_sigterm, args=(child,), daemon=True)
    process.start()
    child.close()
    assert parent.recv() == ("armed",)  # SIGTERM is ignored from here on
    return _Slot(process, parent)


@pytest.mark.timeout(120)
def test_a_worker_that_never_builds_its_backend_ends_the_run(small_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(local_pool, "START_SECONDS", 1.0)
    monkeypatch.setattr(local_pool, "JOIN_SECONDS", 0.5)
    pool = LocalPool(make_setup(small_checkpoint, tmp_path / "out"), workers=1)
    started: list[_Slot] = []
    monkeypatch.setattr(pool, "_start", lambda: started.append(_forked_slot()) or started[-1])
    work = WorkList([VideoJob("a", tmp_path / "a", tmp_path / "a.png")], retries=0, on_result=lambda r: None)
    with pytest.raises(RunnerError, match=r"a worker process did not build its backend within 1 s .*then rerun"):
        pool.run(work)
    assert len(started) == 1 and not started[0].process.is_alive()  # stopped, though it ignores SIGTERM


@pytest.mark.timeout(120)
def test_stopping_a_worker_that_ignores_sigterm_kills_it(small_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(local_pool, "JOIN_SECONDS", 0.5)
    slot = _forked_slot()
    LocalPool(make_setup(small_checkpoint, tmp_path / "out"), workers=1)._stop([slot])
    assert not slot.process.is_alive() and slot.process.exitcode == -signal.SIGKILL


# ---- Ray: the address, probed first; the cluster joined, named ------------------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on leaving: nothing listens there


class _FakeRay:
    """What connect() uses of the ray module: a one-node, 2-CPU cluster."""

    def __init__(self, address: str) -> None:
        self.address, self.inits = address, []

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs) -> None:
        self.inits.append(kwargs)

    def cluster_resources(self) -> dict:
        return {"CPU": 2.0, "memory": 1e9}

    def nodes(self) -> list[dict]:
        return [{"Alive": True, "Resources": {"CPU": 2.0}}]

    def get_runtime_context(self):
        return type("Context", (), {"gcs_address": self.address})()


def test_an_address_nothing_answers_at_is_refused_without_calling_ray(monkeypatch):
    port = _closed_port()
    fake = _FakeRay(f"127.0.0.1:{port}")
    with pytest.raises(RunnerError, match=rf"--ray 127.0.0.1:{port}: cannot connect to a Ray cluster: nothing "
                                          rf"answers at 127.0.0.1:{port} \(Connection refused") as caught:
        ray_runner.connect(fake, f"127.0.0.1:{port}")
    assert caught.value.user_error and fake.inits == []  # Ray would retry that address without end
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(RunnerError, match=r"--ray auto \(RAY_ADDRESS=.*start one with: ray start --head"):
        ray_runner.connect(fake, "auto")
    with pytest.raises(RunnerError, match="is not a Ray address"):
        ray_runner.connect(fake, "nonsense")


def test_joining_a_cluster_says_which_one(capsys):
    with socket.socket() as listener:  # something answers on loopback: the probe passes
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        fake = _FakeRay(address)
        assert ray_runner.connect(fake, address) is True
    assert [kw["address"] for kw in fake.inits] == [address]
    err = capsys.readouterr().err.strip()
    assert err == f"--ray {address}: joined the Ray cluster at {address}: 1 node(s), 2 CPU core(s), 0 GPU(s)"


def test_ray_init_that_never_returns_is_bounded(monkeypatch):
    monkeypatch.setattr(ray_runner, "CONNECT_SECONDS", 0.5)
    fake = _FakeRay("x")
    fake.init = lambda **kwargs: time.sleep(30)  # a GCS port that accepts but never answers
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(RunnerError, match=rf"--ray {address}: no answer from a Ray cluster within 0.5 s"):
            ray_runner.connect(fake, address)


def test_an_actor_no_node_can_hold_is_refused_up_front(small_checkpoint, tmp_path):
    runner = ray_runner.RayRunner(make_setup(small_checkpoint, Path(tmp_path)), "local", None, cpus_per_actor=4)
    with pytest.raises(RunnerError, match=r"--cpus-per-actor 4: no node of the Ray cluster has 4 CPU cores \(the "
                                          r"largest has 2, 2 in all\).*pass --cpus-per-actor 2 or less"):
        runner._actor_class(_FakeRay("x"))
