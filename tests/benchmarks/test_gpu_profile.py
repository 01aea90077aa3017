"""benchmarks/gpu_profile.py: on the CPU (--device cpu --tiny) it runs end to end in steady
state and prints every section; without CUDA the GPU run is refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runtime.bench.stage_profile import HOST_STAGES, STAGES

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_profile.py"


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}, cwd=REPO)


def test_tiny_cpu_profile_prints_every_section(tmp_path):
    proc = _run("--device", "cpu", "--tiny", "--streams", "1", "--results-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "No GPU: CUDA events are replaced by perf_counter" in out
    for section in ("## Steady state", "## Device time per stage of one captured step",
                    "## Host time per frame by stage", "costliest CPU operators"):
        assert section in out
    for stage in (*STAGES, *HOST_STAGES, "captured step (whole graph)"):
        assert f"| {stage} |" in out
    (md,) = tmp_path.glob("gpu_profile_cpu_tiny_*.md")
    assert md.read_text() == out[: out.index("results: ")]
    result = json.loads(md.with_suffix(".json").read_text())
    (run,) = result["runs"]
    # Steady state: the window is full (the first frame and 20 working frames).
    assert run["memory_frames"] == run["memory_slots"] == 21
    assert all(run["stages"]["ms"][s] > 0 for s in STAGES) and run["stages"]["captured_step_ms"] > 0
    assert all(run["host"]["ms_per_stream_frame"][s] >= 0 for s in HOST_STAGES)
    assert run["host"]["ms_per_stream_frame"]["submit"] > 0
    assert 0 < len(run["kernels"]["rows"]) <= 30 and result["tf32"] is False


def test_cpu_without_tiny_is_refused_in_one_line(tmp_path):
    proc = _run("--device", "cpu", "--results-dir", str(tmp_path), timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "--tiny" in proc.stderr and not list(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: the default run would profile it")
def test_gpu_run_without_cuda_is_refused_in_one_line(tmp_path):
    proc = _run("--results-dir", str(tmp_path), timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "needs a CUDA GPU" in proc.stderr
