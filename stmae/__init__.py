"""STMAE: the network, its checkpoints and data formats.

This package imports none of the toolkit's other packages (export, runtime, train).

The names below load on first use (PEP 562), so that the light modules of this package
(``stmae.atomic``, ``stmae.outputs``) and the command lines' input checks that use them do
not wait for torch: a refused command answers in well under a second.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "aggregate": "aggregate",
    "CheckpointError": "checkpoint", "LoadedCheckpoint": "checkpoint", "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "PRESETS": "config", "ModelConfig": "config", "preset": "config",
    "STMAE": "network",
    "normalize_image": "preprocess", "pad_to_multiple": "preprocess", "padding_for": "preprocess", "unpad": "preprocess",
    "read_memory": "readout",
    "ClipSpec": "synthetic", "SyntheticClip": "synthetic", "generate_clip": "synthetic",
}

__all__ = [
    "STMAE", "ModelConfig", "PRESETS", "preset", "aggregate", "read_memory",
    "load_checkpoint", "save_checkpoint", "CheckpointError", "LoadedCheckpoint",
    "normalize_image", "pad_to_multiple", "padding_for", "unpad",
    "ClipSpec", "SyntheticClip", "generate_clip", "__version__",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
