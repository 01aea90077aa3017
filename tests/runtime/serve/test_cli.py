"""``stmae-serve`` and ``stmae-serve client`` as commands: the client's folder is
stmae-segment's byte for byte, bad input is refused before any network, a server without
a token refuses to listen beyond loopback, and SIGTERM drains and exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest

from runtime.io.mask_io import existing_masks
from runtime.serve.cli import main

from ..conftest import subprocess_env
from .conftest import clip_on_disk, png

TOKEN = "cli-token"


def _one_line_error(err: str, prog: str = "stmae-serve client") -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and "Traceback" not in err, err
    return lines[0]


def test_client_writes_what_stmae_segment_writes(serve, clips, tmp_path, small_checkpoint, capsys):
    from runtime.cli import segment_main

    frames_dir, mask = clip_on_disk(tmp_path, clips[0], "clip")
    offline, remote = tmp_path / "offline", tmp_path / "remote"
    assert segment_main(["--checkpoint", str(small_checkpoint), "--backend", "torch", "--device", "cpu",
                         "--size", "-1", "--input", str(frames_dir), "--mask", str(mask), "--out", str(offline),
                         "--quiet"]) == 0
    with serve(token=TOKEN, queue_depth=3) as running:
        args = ["client", "--url", running.url, "--token", TOKEN, "--input", str(frames_dir), "--mask", str(mask),
                "--quiet"]
        assert main(args + ["--out", str(remote)]) == 0
        assert "6 frames, 2 objects, server http://127.0.0.1" in capsys.readouterr().out
        written = [p.name for p in existing_masks(remote)]
        assert written == [p.name for p in existing_masks(offline)] and len(written) == 6
        for name in written:
            assert (remote / name).read_bytes() == (offline / name).read_bytes(), name
        # the same refusals as stmae-segment: an earlier run's masks without --overwrite
        assert main(args + ["--out", str(remote)]) == 2
        assert "pass --overwrite" in _one_line_error(capsys.readouterr().err)
        assert main(args + ["--out", str(remote), "--overwrite"]) == 0
        capsys.readouterr()
        # a wrong token: exit 2, nothing created
        bad = ["client", "--url", running.url, "--token", "wrong", "--input", str(frames_dir), "--mask", str(mask),
               "--out", str(tmp_path / "never")]
        assert main(bad) == 2
        assert "token" in _one_line_error(capsys.readouterr().err)
        assert not (tmp_path / "never").exists()
    # bad input is refused before any network (no server listens at this URL)
    dead = ["client", "--url", "http://127.0.0.1:9", "--input", str(frames_dir), "--out", str(tmp_path / "x")]
    assert main(dead) == 2
    assert "no mask given" in _one_line_error(capsys.readouterr().err)
    assert main(dead[:-2] + ["--mask", str(frames_dir), "--out", str(tmp_path / "x")]) == 2
    capsys.readouterr()
    # a server that is not there: exit 1, one line
    assert main(dead + ["--mask", str(mask)]) == 1
    assert "cannot reach" in _one_line_error(capsys.readouterr().err)


def test_no_token_refuses_a_public_host(small_checkpoint, capsys, monkeypatch):
    monkeypatch.delenv("STMAE_SERVE_TOKEN", raising=False)
    assert main(["--checkpoint", str(small_checkpoint), "--host", "0.0.0.0", "--port", "0"]) == 2
    line = _one_line_error(capsys.readouterr().err, "stmae-serve")
    assert "no token" in line and "--token" in line


def test_sigterm_drains_in_flight_frames_and_exits_0(tmp_path, small_checkpoint, clips):
    clip = clips[0]
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.serve.cli", "--checkpoint", str(small_checkpoint), "--backend", "torch",
         "--device", "cpu", "--size", "-1", "--port", "0", "--token", TOKEN],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        line = proc.stdout.readline()
        assert "a bearer token is required" in line, line + proc.stderr.read() if proc.poll() is not None else line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=url, headers=auth, timeout=30) as http:
            files = {"frame": ("f.png", png(clip.frames[0])), "mask": ("m.png", png(clip.masks[0]))}
            sid = http.post("/v1/sessions", files=files).json()["session_id"]
            for t in (1, 2, 3):
                assert http.post(f"/v1/sessions/{sid}/frames", content=png(clip.frames[t])).status_code == 202
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while http.get("/readyz").status_code != 503:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            refused = http.post(f"/v1/sessions/{sid}/frames", content=png(clip.frames[4]))
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
            for t in range(4):  # the frames in flight are finished and delivered
                response = http.get(f"/v1/sessions/{sid}/masks/{t}")
                assert response.status_code == 200 and response.headers["X-Frame-Index"] == str(t)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
