"""Every console script's --help answers without importing torch, ONNX Runtime or
ModelOpt (heavy imports live inside the commands), so it is instant."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "onnxruntime", "modelopt", "onnx", "tensorrt", "cv2")
# console script -> (module, function), as pyproject.toml's [project.scripts] lists them.
SCRIPTS = {
    "stmae-segment": ("runtime.cli", "segment_main"),
    "stmae-eval": ("runtime.cli", "eval_main"),
    "stmae-export": ("export.cli", "main"),
    "stmae-bench": ("runtime.bench.cli", "main"),
    "stmae-train": ("train.cli", "main"),
    "stmae-demo": ("demo.cli", "main"),
    "stmae-serve": ("runtime.serve.cli", "main"),
}


def test_the_table_matches_pyproject():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {name: f"{mod}:{fn}" for name, (mod, fn) in SCRIPTS.items()}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_imports_nothing_heavy(script):
    module, function = SCRIPTS[script]
    probe = (
        "import sys, importlib\n"
        f"main = getattr(importlib.import_module({module!r}), {function!r})\n"
        "try:\n    main(['--help'])\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "HEAVY []", done.stdout.strip().splitlines()[-1]
