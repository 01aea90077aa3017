"""benchmarks/gpu_check.sh: valid bash whose step timeouts fit 8 minutes, refusing a
machine without CUDA in one line; its final table from stmae-bench --streams reports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runtime.bench.cli import main as bench_main

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def test_script_is_valid_and_fits_eight_minutes():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    limits = [int(m) for m in re.findall(r"^\s*step \w+ (\d+) ", text, flags=re.M)]
    # environment, CUDA tests, readout kernel, profile, published, small, compiled
    assert len(limits) == 7
    assert sum(limits) + 5 * len(limits) <= 480, limits  # each may overrun by its 5 s kill grace
    assert "PYTHONPATH=." in text and "--streams 1 4 16" in text
    for path in re.findall(r"tests/[\w/]+\.py", text):  # the CUDA tests it runs exist
        assert (REPO / path).is_file(), path
    assert "tests/runtime/engine/test_decode.py" in text
    assert "benchmarks/readout_kernel.py --quick" in text and "benchmarks/gpu_profile.py --streams 1 16" in text
    assert "benchmarks/results/" in text  # the profile is kept with the GPU's name and the date
    assert text.count("--pipeline both") == 2 and "--decoder cpu --pipeline both" in text
    for precision in ("fp32", "bf16"):
        assert f"torch:{precision}" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_script_refuses_without_cuda(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "needs a CUDA GPU" in proc.stderr


def test_final_table_from_reports(tmp_path, seeded_small_checkpoint, capsys):
    out = tmp_path / "check"
    assert bench_main(["--checkpoint", str(seeded_small_checkpoint), "--sizes", "32", "--frames", "4",
                       "--warmup", "1", "--streams", "2", "--threads", "1", "--out", str(out / "small")]) == 0
    (out / "steps.jsonl").write_text('{"step": "bench_small", "exit": 0}\n')
    (out / "readout_kernel.log").write_text("device: X\n| streams | C |\n| 1 | 1024 |\nnoise\n")
    (out / "profile").mkdir()
    (out / "profile" / "gpu_profile_x_2026-01-01.md").write_text("# Engine profile: X\n\n## Steady state\n")
    capsys.readouterr()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_table.py"), str(out)],
                          capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "### small" in proc.stdout and "engine fp32 eager, network" in proc.stdout
    assert "bench_small: exit 0" in proc.stdout and "TF32: off" in proc.stdout
    assert "host overhead ms per stream-frame" in proc.stdout
    assert "| 1 | 1024 |" in proc.stdout and "noise" not in proc.stdout
    assert "### Engine profile: X" in proc.stdout and "#### Steady state" in proc.stdout
    summary = json.loads((out / "gpu_check.json").read_text())
    # baseline, sessions, engine network, engine end to end serial and pipelined
    assert len(summary["reports"]["small"]["rows"]) == 5
    assert (out / "gpu_check.md").read_text() == proc.stdout
