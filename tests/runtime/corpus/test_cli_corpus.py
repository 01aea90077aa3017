"""Corpus command lines: stmae-eval on workers scores like the sequential stmae-eval;
input layouts; bad input gives one line and exit status 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runtime.cli import eval_main, segment_main
from runtime.corpus.jobs import discover_jobs
from runtime.errors import InputError
from tests.runtime.test_cli import davis_subset


def test_eval_on_workers_scores_like_the_sequential_eval(davis, small_checkpoint, tmp_path, capsys):
    data = davis_subset(davis, tmp_path / "d", count=4)
    common = ["--checkpoint", str(small_checkpoint), "--dataset", str(data), "--split", "mini",
              "--resolution", "240p", "--size", "64", "--device", "cpu", "--quiet"]
    assert eval_main([*common, "--out", str(tmp_path / "seq")]) == 0
    sequential = capsys.readouterr().out.strip().splitlines()
    assert eval_main([*common, "--out", str(tmp_path / "par"), "--workers", "1"]) == 0
    parallel = capsys.readouterr().out.strip().splitlines()
    assert sequential[-1].startswith("J&F ") and sequential[-1] in parallel
    assert (tmp_path / "seq" / "results.csv").read_text() == (tmp_path / "par" / "results.csv").read_text()
    assert any(line.startswith("2 videos: 2 done, 0 skipped") for line in parallel)


def test_davis_and_youtube_vos_layouts(davis, tmp_path):
    data = davis_subset(davis, tmp_path / "d", count=3)
    jobs = discover_jobs(data)
    assert [j.name for j in jobs] == ["bear", "boat"]
    assert jobs[0].first_mask == (data / "Annotations" / "240p" / "bear" / "00000.png").resolve()
    with pytest.raises(InputError, match="--resolution 480p"):
        discover_jobs(data, resolution="480p")
    # YouTube-VOS: JPEGImages/<video>/ and Annotations/<video>/ (all given masks).
    yt = tmp_path / "ytvos"
    shutil.copytree(data / "JPEGImages" / "240p", yt / "JPEGImages")
    shutil.copytree(data / "Annotations" / "240p", yt / "Annotations")
    jobs = discover_jobs(yt)
    assert [j.name for j in jobs] == ["bear", "boat"] and jobs[1].masks_dir == (yt / "Annotations" / "boat").resolve()
    assert jobs[1].first_mask is None


def test_folder_of_videos_layout(tmp_path):
    videos, masks = tmp_path / "videos", tmp_path / "masks"
    (videos / "dog").mkdir(parents=True)
    (videos / "cat.mp4").write_bytes(b"")
    (videos / "notes.txt").write_text("ignored")
    (masks / "dog").mkdir(parents=True)
    (masks / "cat.png").write_bytes(b"")
    jobs = discover_jobs(videos, masks)
    assert [(j.name, j.first_mask is not None, j.masks_dir is not None) for j in jobs] == [
        ("cat", True, False), ("dog", False, True)]
    (videos / "dog.avi").write_bytes(b"")
    with pytest.raises(InputError, match="two videos are named 'dog'"):
        discover_jobs(videos, masks)
    (videos / "dog.avi").unlink()
    (videos / "emu.mkv").write_bytes(b"")
    with pytest.raises(InputError, match="emu.mkv has no mask: expected .*emu.png"):
        discover_jobs(videos, masks)


@pytest.mark.parametrize("extra, message", [
    (["--workers", "2", "--ray", "local"], "give --workers N or --ray ADDRESS, not both"),
    (["--workers", "-1"], "--workers must be 0 or more"),
    (["--max-frames", "0"], "--max-frames must be at least 1"),
])
def test_bad_corpus_options(tmp_path, capsys, small_checkpoint, extra, message):
    videos = tmp_path / "videos"
    (videos / "a").mkdir(parents=True)
    (tmp_path / "masks").mkdir()
    code = segment_main(["--videos", str(videos), "--masks-dir", str(tmp_path / "masks"), "--out", str(tmp_path / "o"),
                         "--checkpoint", str(small_checkpoint), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_videos_without_masks_folder(tmp_path, capsys, small_checkpoint):
    (tmp_path / "videos" / "a").mkdir(parents=True)
    code = segment_main(["--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "o"),
                         "--checkpoint", str(small_checkpoint)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--masks-dir MASKS" in err and len(err.splitlines()) == 1


def test_cli_imports_neither_ray_nor_av():
    import subprocess
    import sys

    from tests.runtime.conftest import subprocess_env

    code = "import sys, runtime.cli; print(sorted(m for m in ('ray', 'av') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_ray_auto_without_a_cluster_says_how_to_start_one(corpus, small_checkpoint, tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install ray)")
    if ray.is_initialized():
        pytest.skip("a Ray session is running in this process")
    # Isolated from any Ray running on this host (another test's, a stray 'ray start'):
    # 'auto' goes where RAY_ADDRESS points, here a loopback port nothing listens on.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "no-ray-here"))  # no cluster file to find
    videos, masks = corpus
    code = segment_main(["--videos", str(videos), "--masks-dir", str(masks), "--out", str(tmp_path / "o"),
                         "--checkpoint", str(small_checkpoint), "--ray", "auto", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cannot connect to a Ray cluster (start one with: ray start --head)" in err, err
    assert f"nothing answers at 127.0.0.1:{port}" in err and len(err.splitlines()) == 1


def test_single_video_max_frames_and_live_only_options(tiny_video, small_checkpoint, tmp_path, capsys):
    frames, mask, _ = tiny_video
    common = ["--input", str(frames), "--mask", str(mask), "--checkpoint", str(small_checkpoint), "--device", "cpu",
              "--size", "-1", "--quiet"]
    assert segment_main([*common, "--out", str(tmp_path / "o"), "--max-frames", "3"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").glob("*.png")) == ["00000.png", "00001.png", "00002.png"]
    capsys.readouterr()
    code = segment_main([*common, "--out", str(tmp_path / "o2"), "--realtime"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--realtime and --duration are for live sources" in err and len(err.splitlines()) == 1
