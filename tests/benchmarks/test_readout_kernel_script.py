"""benchmarks/readout_kernel.py: refuses to run without a GPU with one line and exit 2;
its memory layout and floor arithmetic (importable on the CPU)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks/readout_kernel.py"


def _module():
    spec = importlib.util.spec_from_file_location("readout_kernel_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: the script would run the benchmark")
def test_without_cuda_it_exits_2_with_one_line():
    proc = _run("--quick")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "needs a CUDA GPU" in proc.stderr


def test_bad_options_exit_2_with_one_line(capsys):
    bench = _module()
    for args, message in ((["--quick", "--repeats", "0"], "--repeats must be at least 1"),
                          (["--peak-tflops", "-1"], "--peak-tflops must be positive"),
                          (["--repeats", "x"], "invalid int value")):
        with pytest.raises(SystemExit) as exit_:
            bench.main(args)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.strip().count("\n") == 0 and message in err, err
        assert err.startswith("readout_kernel: error: ")


def test_floor_and_the_engines_memory_layout():
    bench = _module()
    # The floor: 2 x 1024 x 1620 x 34020 = 113 GFLOP, 0.156 ms at 726 TFLOP/s.
    assert bench.floor_ms(1024, 1620, 34020, 726) == pytest.approx(0.1555, abs=1e-4)
    query, keys, values, valid, lengths, positions = bench.make_case(
        2, 8, 1, torch.bfloat16, torch.device("cpu"), memory_frames=4, valid_frames=3, query_hw=(3, 5))
    assert query.shape == (2, 8, 15) and keys.shape == (2, 8, 4 * 16) and keys.stride(1) % 16 == 0
    assert valid.shape == (2, 64) and int(valid[0].sum()) == 4 * 15 and not valid[0, 15] and valid[0, 16]
    assert lengths.tolist() == [48, 48] and lengths.dtype == torch.int32 and positions == 45
    assert torch.equal(keys.view(2, 8, 4, 16)[..., 15:], torch.zeros(2, 8, 4, 1, dtype=torch.bfloat16))
    *_, valid1, lengths1, _ = bench.make_case(1, 8, 1, torch.float16, torch.device("cpu"), memory_frames=2,
                                              query_hw=(3, 5), align=1)
    assert valid1 is None and lengths1 is None
    quick = bench.shapes(quick=True)
    assert [(s["streams"], s["channels"], s["dtype"]) for s in quick] == [(1, 1024, torch.bfloat16),
                                                                          (16, 1024, torch.bfloat16)]
