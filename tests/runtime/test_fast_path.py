"""The CPU default (runtime.fast_path): --checkpoint on a CPU runs ONNX Runtime on an fp32
export made once, cached by the checkpoint's sha256, shared by processes, and rebuilt when
it does not verify; --backend torch and CUDA keep PyTorch; the summary says which ran."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.fast_path import BackendChoice, cached_export, choose_backend, find_exporter
from runtime.io.mask_io import read_mask
from stmae.checkpoint import save_checkpoint
from stmae.config import preset
from stmae.network import STMAE
from tests.runtime.conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
SEGMENT = "import sys; from runtime.cli import segment_main; sys.exit(segment_main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def sized_checkpoint(tmp_path_factory) -> Path:
    """A small-preset checkpoint that records processing size 48 (its export verifies on
    48-pixel clips: seconds, not the minute a 480p verification takes on 2 cores) and
    memory interval 2."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("fast_path") / "sized.pth"
    save_checkpoint(path, STMAE(preset("small")), processing_size=48, mem_every=2)
    return path


@pytest.fixture(scope="module")
def real_export(sized_checkpoint, tmp_path_factory) -> Path:
    """One real fp32 export of ``sized_checkpoint`` (by the registered exporter)."""
    exporter = find_exporter()
    assert exporter is not None, "the stmae.exporters entry point is not installed (pip install -e .)"
    out = tmp_path_factory.mktemp("real_export") / "export"
    exporter(sized_checkpoint, out, lambda _m: None)
    return out


def _copying_exporter(source: Path, calls: list, delay: float = 0.0):
    def export(checkpoint: Path, out_dir: Path, log) -> None:
        calls.append(Path(checkpoint))
        time.sleep(delay)
        shutil.copytree(source, out_dir)

    return export


def test_the_exporter_is_found_through_the_entry_point_not_an_import():
    exporter = find_exporter()
    assert exporter is not None and exporter.__module__ == "export.cached"
    source = (ROOT / "runtime" / "fast_path.py").read_text()
    assert "import export" not in source and "from export" not in source


def test_the_export_carries_the_checkpoints_recorded_defaults(real_export):
    from runtime.export_manifest import load_manifest
    from runtime.mem_interval import resolve_mem_every
    from runtime.sizing import resolve_size

    manifest = load_manifest(real_export)
    assert (manifest.processing_size, manifest.mem_every) == (48, 2)
    assert resolve_mem_every("auto", export_dir=real_export).text() == "mem every 2 (auto: the export's manifest)"
    assert resolve_size("auto", export_dir=real_export).size == 48


def test_export_is_made_once_then_reused(sized_checkpoint, real_export, tmp_path):
    calls: list = []
    exporter = _copying_exporter(real_export, calls)
    folder, reused = cached_export(sized_checkpoint, lambda _m: None, exporter, root=tmp_path)
    assert not reused and calls == [sized_checkpoint]
    assert folder.parent == tmp_path / "exports" and folder.name.endswith("-fp32")
    again, reused = cached_export(sized_checkpoint, lambda _m: None, exporter, root=tmp_path)
    assert again == folder and reused and len(calls) == 1
    assert [p.name for p in (tmp_path / "exports").iterdir() if p.is_dir()] == [folder.name]  # no staging left


def test_a_cached_export_that_does_not_verify_is_made_again(sized_checkpoint, real_export, tmp_path):
    calls: list = []
    exporter = _copying_exporter(real_export, calls)
    folder, _ = cached_export(sized_checkpoint, lambda _m: None, exporter, root=tmp_path)
    graph = next(folder.glob("*.onnx"))
    graph.write_bytes(graph.read_bytes()[:-10])  # truncated by a full disk, say
    messages: list[str] = []
    again, reused = cached_export(sized_checkpoint, messages.append, exporter, root=tmp_path)
    assert again == folder and not reused and len(calls) == 2
    assert any("does not verify" in m for m in messages)


def test_another_checkpoint_gets_its_own_export(sized_checkpoint, real_export, tmp_path):
    other = tmp_path / "other.pth"
    other.write_bytes(sized_checkpoint.read_bytes() + b"")  # same bytes: same entry
    calls: list = []
    exporter = _copying_exporter(real_export, calls)
    a, _ = cached_export(sized_checkpoint, lambda _m: None, exporter, root=tmp_path)
    b, reused = cached_export(other, lambda _m: None, exporter, root=tmp_path)
    assert a == b and reused
    torch.manual_seed(5)
    different = tmp_path / "different.pth"
    save_checkpoint(different, STMAE(preset("small")), processing_size=48)
    with pytest.raises(RuntimeError, match="no valid fp32 export"):  # a copy of A's export is not B's
        cached_export(different, lambda _m: None, exporter, root=tmp_path)
    assert [p.name for p in (tmp_path / "exports").iterdir() if p.is_dir()] == [a.name]


def test_concurrent_runs_export_once(sized_checkpoint, real_export, tmp_path):
    calls: list = []
    exporter = _copying_exporter(real_export, calls, delay=0.5)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(
        cached_export(sized_checkpoint, lambda _m: None, exporter, root=tmp_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(calls) == 1 and sorted(r[1] for r in results) == [False, True, True]


def test_choose_backend_rules(sized_checkpoint, monkeypatch, tmp_path):
    log: list[str] = []
    assert choose_backend("torch", "cpu", str(sized_checkpoint), None, log.append) == BackendChoice("torch", None, "--backend")
    assert choose_backend("auto", "cuda:0", str(sized_checkpoint), None, log.append).name == "torch"
    assert choose_backend("auto", "cpu", None, str(tmp_path), log.append) == BackendChoice("onnxruntime", tmp_path, "--export-dir")
    monkeypatch.setattr("runtime.fast_path.find_exporter", lambda: None)
    choice = choose_backend("auto", "cpu", str(sized_checkpoint), None, log.append)
    assert choice.name == "torch" and "no exporter" in choice.reason and "not installed" in log[-1]

    def refusing(checkpoint, out_dir, log):
        raise RuntimeError("parity gate: mean IoU 0.41 < 0.99")

    monkeypatch.setattr("runtime.fast_path.find_exporter", lambda: refusing)
    monkeypatch.setenv("STMAE_CACHE_DIR", str(tmp_path / "cache"))
    choice = choose_backend("auto", "cpu", str(sized_checkpoint), None, log.append)
    assert choice == BackendChoice("torch", None, "export refused") and "parity gate" in log[-1]


def _segment(tmp_path, tiny_video, out: str, *extra: str, env: dict | None = None):
    frames, mask, _ = tiny_video
    return subprocess.run(
        [sys.executable, "-c", SEGMENT, "--input", str(frames), "--mask", str(mask),
         "--out", str(tmp_path / out), "--device", "cpu", "--quiet", *extra],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)


def test_segment_defaults_to_the_cached_onnx_export_on_the_cpu(sized_checkpoint, tiny_video, tmp_path):
    env = {k: v for k, v in subprocess_env().items() if k != "STMAE_BACKEND"}
    env["STMAE_CACHE_DIR"] = str(tmp_path / "cache")
    ckpt = ("--checkpoint", str(sized_checkpoint))
    first = _segment(tmp_path, tiny_video, "a", *ckpt, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "backend onnxruntime (cached fp32 export, made now)" in first.stdout
    assert "exporting it to ONNX (fp32" in first.stderr
    second = _segment(tmp_path, tiny_video, "b", *ckpt, env=env)
    assert second.returncode == 0 and "backend onnxruntime (cached fp32 export, reused)" in second.stdout
    assert "exporting" not in second.stderr
    torch_run = _segment(tmp_path, tiny_video, "c", *ckpt, "--backend", "torch", env=env)
    assert torch_run.returncode == 0 and "backend torch (--backend)" in torch_run.stdout
    names = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert len(names) == 6 and names == sorted(p.name for p in (tmp_path / "c").glob("*.png"))
    agree = [np.mean(read_mask(tmp_path / "a" / n)[0] == read_mask(tmp_path / "c" / n)[0]) for n in names]
    assert min(agree) > 0.99  # fp32 ONNX Runtime against PyTorch: the export's parity, per frame
    # the user's environment can pin the default
    pinned = _segment(tmp_path, tiny_video, "d", *ckpt, env={**env, "STMAE_BACKEND": "torch"})
    assert pinned.returncode == 0 and "backend torch ($STMAE_BACKEND)" in pinned.stdout
    bogus = _segment(tmp_path, tiny_video, "e", *ckpt, env={**env, "STMAE_BACKEND": "tensorflow"})
    assert bogus.returncode == 2 and bogus.stderr.strip().count("\n") == 0 and "STMAE_BACKEND" in bogus.stderr
    assert not (tmp_path / "e").exists()
