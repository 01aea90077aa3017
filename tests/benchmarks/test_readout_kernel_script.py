"""benchmarks/readout_kernel.py: refuses to run without a GPU with one line and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: the script would run the benchmark")
def test_without_cuda_it_exits_2_with_one_line():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/readout_kernel.py"), "--quick"],
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "needs a CUDA GPU" in proc.stderr
