"""The exporter the runtime's CPU default calls: an fp32 ONNX export of a checkpoint, with
the parity gate, into a folder the runtime chose (its cache; see :mod:`runtime.fast_path`).

The runtime does not import this package (``export`` sits above ``runtime``); it finds this
function through the ``stmae.exporters`` entry point declared in ``pyproject.toml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .config import ExportConfig
from .exporter import run_export


def export_fp32(checkpoint: Path, out_dir: Path, log: Callable[[str], None]) -> None:
    """Export ``checkpoint`` to ``out_dir`` (which must not exist yet) at fp32 for ONNX
    Runtime's CPU provider, verified against PyTorch on the exporter's synthetic clip.
    The plugin contract of :func:`runtime.fast_path.cached_export`: a checkpoint that cannot
    be read raises ValueError (``stmae.checkpoint.CheckpointError``, the user's error); an
    export that fails or is refused by the parity gate raises RuntimeError
    (``export.exporter.ExportError``), and the runtime then falls back to PyTorch."""
    run_export(ExportConfig(checkpoint=Path(checkpoint), out_dir=Path(out_dir), precision="fp32"), log=log)
