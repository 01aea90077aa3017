"""STMAE: the network, its checkpoints and data formats.

This package imports none of the toolkit's other packages (export, runtime, train).
"""

from .aggregate import aggregate
from .checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint, save_checkpoint
from .config import PRESETS, ModelConfig, preset
from .network import STMAE
from .preprocess import normalize_image, pad_to_multiple, padding_for, unpad
from .readout import read_memory
from .synthetic import ClipSpec, SyntheticClip, generate_clip

__version__ = "0.1.0"

__all__ = [
    "STMAE", "ModelConfig", "PRESETS", "preset", "aggregate", "read_memory",
    "load_checkpoint", "save_checkpoint", "CheckpointError", "LoadedCheckpoint",
    "normalize_image", "pad_to_multiple", "padding_for", "unpad",
    "ClipSpec", "SyntheticClip", "generate_clip", "__version__",
]
