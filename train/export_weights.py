"""``stmae-train export-weights``: a training checkpoint -> a shippable model-only file.

A training checkpoint (``<run>/checkpoints/last.pth``) holds the optimizer, scheduler and
RNG state besides the network (~6x the network's size). The file users run
(``stmae-segment --checkpoint``) needs only ``network`` + ``config`` + ``processing_size``;
float16 storage halves it again. :func:`train.state.export_model_only` writes that file
(keeping the run's ``train_config`` and step as provenance); this module adds the checks
a command line needs around it.

Refusals (``OutputError`` / ``CheckpointError``, both ValueErrors, one line each): the
output is the source; the output exists and is not a toolkit checkpoint (``--overwrite``
replaces only a file with ``format: stmae``); the output's folder cannot be written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from stmae.checkpoint import FORMAT_NAME, CheckpointError, read_checkpoint_file
from stmae.outputs import OutputError, probe_writable, refuse_alias

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ExportedWeights:
    path: Path
    size_bytes: int
    step: int | None
    processing_size: int | None
    dtype: str


def check_target(sources: list[Path], target: Path, overwrite: bool) -> None:
    """Refuse an --out that is one of ``sources``, a folder, a file this toolkit did not
    write (even with --overwrite), an existing file without --overwrite, or unwritable."""
    refuse_alias(target, "--out", {"CHECKPOINT" if len(sources) == 1 else f"CHECKPOINT {i + 1}": s
                                   for i, s in enumerate(sources)}, folder_output=False)
    if target.is_dir():
        raise OutputError(f"--out {target} is a folder; give the path of the .pth file to write")
    if target.exists():
        if not overwrite:
            raise OutputError(f"--out {target} exists; pass --overwrite to replace it, or choose another --out")
        try:
            owned = read_checkpoint_file(target).get("format") == FORMAT_NAME
        except CheckpointError:
            owned = False
        if not owned:
            raise OutputError(
                f"--out {target} is not a checkpoint this toolkit wrote, so --overwrite will not replace "
                "it; choose another --out"
            )
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"--out {target}: the folder {parent} does not exist; create it first")
    probe_writable(parent, "--out")


def export_weights(source: str | Path, target: str | Path, dtype: str = "float16",
                   processing_size: int | None = None, overwrite: bool = False) -> ExportedWeights:
    """Write the network of ``source`` (a training or model-only checkpoint) to ``target``
    in ``dtype`` storage (float32 | float16 | bfloat16), atomically. processing_size: the
    shorter side the network should run at (default: the one ``source`` records)."""
    from .state import export_model_only

    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"--dtype {dtype} is not one of {', '.join(STORAGE_DTYPES)}")
    source, target = Path(source), Path(target)
    check_target([source], target, overwrite)
    written = export_model_only(source, target, storage_dtype=STORAGE_DTYPES[dtype],
                                processing_size=processing_size)
    return ExportedWeights(target, target.stat().st_size, written.get("trained_steps"),
                           written.get("processing_size"), dtype)
