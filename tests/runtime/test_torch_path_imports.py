"""The torch path (engine, session, CUDA graphs, GPU decode, stmae-eval --streams,
stmae-bench --streams) imports and runs with onnxruntime, ModelOpt and TensorRT absent, as
on the GPU test machine: each is blocked (sys.modules[name] = None makes importing it
fail) in a fresh interpreter that then runs a tiny multi-stream bench."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from .conftest import subprocess_env

REPO = Path(__file__).resolve().parents[2]


def test_torch_path_without_onnxruntime_modelopt_tensorrt(tmp_path, seeded_small_checkpoint):
    code = textwrap.dedent(f"""
        import sys
        for name in ("onnxruntime", "modelopt", "tensorrt"):
            sys.modules[name] = None
        import runtime.engine.stream_engine, runtime.engine.session, runtime.engine.schedule, runtime.engine.device_step
        import runtime.engine.cuda_graphs, runtime.engine.gpu_decode, runtime.evaluation_streams
        import runtime.bench.cli, runtime.bench.streams
        from runtime.backends import create_backend
        try:
            import onnxruntime
        except ImportError:
            pass
        else:
            raise SystemExit("onnxruntime was not blocked")
        create_backend("torch", checkpoint={str(seeded_small_checkpoint)!r}, device="cpu")
        code = runtime.bench.cli.main(["--checkpoint", {str(seeded_small_checkpoint)!r}, "--sizes", "32",
                                       "--frames", "4", "--warmup", "1", "--streams", "2", "--threads", "1",
                                       "--out", {str(tmp_path / "r")!r}])
        assert code == 0, code
        loaded = sorted(m for m in ("onnxruntime", "modelopt", "tensorrt") if sys.modules.get(m) is not None)
        assert not loaded, loaded
        print("torch path ok")
    """)
    env = {**subprocess_env(), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch path ok" in proc.stdout
