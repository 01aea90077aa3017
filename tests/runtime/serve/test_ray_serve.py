"""stmae-serve on Ray Serve (runtime/serve/ray_launch.py, ray_replicas.py, ray_router.py):
local Ray on the CPU, engine replicas over the small test checkpoint, 48x64 clips. Sessions
are pinned to replicas; a killed replica fails its own session with a clear error, the other session
finishes with stmae-segment's masks, and a new session goes to a healthy replica. The
command (``stmae-serve --ray local``) serves what stmae-segment writes and drains on SIGTERM;
its bad --ray options are one-line refusals."""

from __future__ import annotations

import functools
import logging
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from runtime.serve.cli import main

from ..conftest import subprocess_env
from .conftest import clip_on_disk, http_front, offline_masks, png

serve_api = pytest.importorskip("ray.serve", reason="the Ray Serve test needs ray[serve] (pip install -e .)")

pytestmark = pytest.mark.timeout(240)


def test_both_hubs_answer_every_call_the_server_makes():
    """The app and the server talk to a local SessionHub or the Ray router alike: every
    ``hub.X`` they use is in the ServingHub protocol and on both classes."""
    import re
    from pathlib import Path

    from runtime.serve import app, server, streams
    from runtime.serve.hub import SessionHub
    from runtime.serve.hub_api import ServingHub
    from runtime.serve.ray_router import RayHub

    used = set()
    for module in (app, server, streams):
        used |= set(re.findall(r"\bhub\.([a-z_]+)", Path(module.__file__).read_text(encoding="utf-8")))
    assert {"open_encoded", "wait_result", "add_listener", "begin_drain"} <= used
    declared = set(ServingHub.__annotations__) | {n for n in vars(ServingHub) if not n.startswith("_")}
    assert used <= declared, f"calls missing from ServingHub: {sorted(used - declared)}"
    for cls in (SessionHub, RayHub):
        instance_attributes = {"config", "session_config", "model_info", "observer", "draining", "failure"}
        missing = {n for n in declared - instance_attributes if not hasattr(cls, n)}
        assert not missing, f"{cls.__name__} lacks {sorted(missing)}"


@pytest.mark.parametrize("argv, words", [
    (["--replicas", "2"], "--replicas needs --ray"),
    (["--ray", "local", "--replicas", "0"], "--replicas must be a positive integer"),
    (["--ray", "local", "--cpus-per-replica", "0"], "--cpus-per-replica must be a positive integer"),
    (["--ray", "127.0.0.1:1"], "cannot connect to a Ray cluster"),
])
def test_bad_ray_options_are_one_line_refusals(argv, words, small_checkpoint, capsys):
    import ray

    if ray.is_initialized():
        pytest.skip("an earlier test left Ray running in this process; these refusals need none")
    assert main(["--checkpoint", str(small_checkpoint), "--backend", "torch", "--device", "cpu", "--size", "-1",
                 "--port", "0", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stmae-serve: error: ") and words in lines[0], lines
    assert not ray.is_initialized()


def test_command_on_local_ray_equals_segment_and_drains(tmp_path, small_checkpoint, clips):
    """``stmae-serve --ray local --replicas 1``: the client's masks are stmae-segment's, /v1/info
    names the replicas, SIGTERM drains and exits 0 (and ends the Ray it started)."""
    import httpx

    frames_dir, mask = clip_on_disk(tmp_path, clips[0], "clip")
    offline = offline_masks(small_checkpoint, frames_dir, mask, tmp_path / "offline")
    server = subprocess.Popen(
        [sys.executable, "-m", "runtime.serve.cli", "--checkpoint", str(small_checkpoint), "--backend", "torch",
         "--device", "cpu", "--size", "-1", "--port", "0", "--ray", "local", "--replicas", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        line = server.stdout.readline()  # the startup line, once the replica has loaded the model
        assert line.startswith("stmae-serve: serving"), (line, server.poll())
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        assert httpx.get(url + "/v1/info", timeout=30).json()["model"]["replicas"] == 1
        out = tmp_path / "remote"
        client = subprocess.run([sys.executable, "-m", "runtime.serve.cli", "client", "--url", url, "--input",
                                 str(frames_dir), "--mask", str(mask), "--out", str(out), "--quiet"],
                                capture_output=True, text=True, timeout=120, env=subprocess_env())
        assert client.returncode == 0, client.stderr
        from runtime.io.mask_io import existing_masks, read_mask

        served = [read_mask(path)[0] for path in existing_masks(out)]
        assert len(served) == 6 and all(np.array_equal(a, b) for a, b in zip(served, offline))
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=90) == 0
        assert "1 engine replica(s) on Ray" in server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)


@pytest.fixture(scope="module")
def local_ray():
    """Local Ray: 2 CPU cores, a 100 MB object store; ended with the module."""
    import ray

    if ray.is_initialized():
        pytest.skip("Ray is already running in this process; the test needs its own local instance")
    try:
        ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - the reason is the skip's message
        pytest.skip(f"local Ray cannot start here: {type(exc).__name__}: {exc}".splitlines()[0])
    try:
        yield ray
    finally:
        serve_api.shutdown()
        ray.shutdown()


@contextmanager
def ray_front(hub):
    """The HTTP/WebSocket front over a RayHub (conftest.http_front); yields its URL."""
    with http_front(hub) as (url, _server):
        yield url


def _kill(ray, hub, replica: int) -> str:
    """Kill the replica's actor (as a crash would); returns the incarnation killed."""
    handle = hub.replicas[replica].handle
    ray.kill(handle.actor.remote().result(timeout_s=30), no_restart=True)
    return hub.replicas[replica].incarnation


def test_two_replicas_one_killed(local_ray, tmp_path, small_checkpoint, clips):
    from runtime.backends.factory import create_backend
    from runtime.config import SessionConfig
    from runtime.serve.client import ServeClient, ServeClientError
    from runtime.serve.config import ServeConfig
    from runtime.serve.ray_launch import launch

    expected = []
    for i, clip in enumerate(clips):
        frames_dir, mask = clip_on_disk(tmp_path, clip, f"clip{i}")
        expected.append(offline_masks(small_checkpoint, frames_dir, mask, tmp_path / f"out{i}"))

    def backend_for(device: str):
        return functools.partial(create_backend, "torch", checkpoint=str(small_checkpoint), device=device)

    hub = launch("local", backend_for, SessionConfig(size=-1), ServeConfig(port=0, max_wait_ms=0.0),
                 {"name": "small.pth"}, replicas=2, cpus_per_replica=1, device="cpu")
    try:
        with torch.inference_mode(False), ray_front(hub) as url, ServeClient(url, timeout=60) as client:
            assert client.info()["model"]["replicas"] == 2
            a, b = (client.open_session(png(c.frames[0]), png(c.masks[0]))["session_id"] for c in clips)
            (ra, _), (rb, inc_b) = hub.replica_of(a), hub.replica_of(b)
            assert ra != rb, "the two sessions were not spread over the two replicas"
            got_a = [client.result(a, 0).labels]
            got_b = [client.result(b, 0).labels]
            for t in (1, 2):
                client.push(a, png(clips[0].frames[t]))
                client.push(b, png(clips[1].frames[t]))
                got_a.append(client.result(a, t).labels)
                got_b.append(client.result(b, t).labels)
            for t in range(3):
                assert np.array_equal(got_b[t], expected[1][t]), f"session b, frame {t}"

            assert _kill(local_ray, hub, rb) == inc_b
            # On a loaded machine Ray may take longer than the call's timeout to report the
            # death: the server then answers 503 replica_unavailable ("retry later"), as a
            # client retrying on that code sees; once the death is known, replica_lost.
            deadline = time.monotonic() + 60
            while True:
                with pytest.raises(ServeClientError) as lost:
                    client.push(b, png(clips[1].frames[3]))
                if lost.value.code != "replica_unavailable" or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
            assert (lost.value.status, lost.value.code) == (503, "replica_lost")
            assert "open a new session" in lost.value.message

            # the other session goes on, over a WebSocket stream (results relayed from its replica)
            with client.stream(a) as stream:
                for t in range(3, 6):
                    stream.send(png(clips[0].frames[t]))
                    got_a.append(stream.receive().labels)
            for t in range(6):
                assert np.array_equal(got_a[t], expected[0][t]), f"session a, frame {t} differs from stmae-segment"

            with pytest.raises(ServeClientError) as again:  # still lost, and said so, on every route
                client.result(b, 2)
            assert again.value.code == "replica_lost"

            c = client.open_session(png(clips[1].frames[0]), png(clips[1].masks[0]))["session_id"]
            rc, inc_c = hub.replica_of(c)
            assert inc_c != inc_b, "a new session went to the killed replica"
            got_c = [client.result(c, 0).labels]
            for t in range(1, 6):
                client.push(c, png(clips[1].frames[t]))
                got_c.append(client.result(c, t).labels)
            for t in range(6):
                assert np.array_equal(got_c[t], expected[1][t]), f"new session, frame {t}"
            assert client.close_session(c)["frames"] == 6
            with pytest.raises(ServeClientError) as closed:  # its replica still answers for it
                client.push(c, png(clips[1].frames[0]))
            assert (closed.value.status, closed.value.code) == (409, "session_closed")

            # Ray Serve restarts the killed replica: the new incarnation refuses the old session
            # itself (it never had it), so a call routed there can never return wrong masks
            deadline = time.monotonic() + 60
            while hub.replicas[rb].incarnation == inc_b and time.monotonic() < deadline:
                time.sleep(0.2)
            assert hub.replicas[rb].incarnation != inc_b, "Ray Serve did not restart the killed replica"
            reply = hub.replicas[rb].handle.push.remote(inc_b, b, png(clips[1].frames[3]), None).result(timeout_s=30)
            assert reply == ("lost",)
            assert client.ready()
    finally:
        hub.stop()
