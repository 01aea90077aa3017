"""``stmae-train export-weights``: a training checkpoint -> a shippable model-only file.

A training checkpoint (``<run>/checkpoints/last.pth``) holds the optimizer, scheduler and
RNG state besides the network (~6x the network's size). The file users run
(``stmae-segment --checkpoint``) needs only ``network`` + ``config`` + ``processing_size``;
float16 storage halves it again. :func:`train.state.export_model_only` writes that file
(keeping the run's ``train_config`` and step as provenance); this module adds the checks
a command line needs around it.

Refusals (``OutputError`` / ``CheckpointError`` / ``ValueError``, one line each, nothing
written): the output is the source; the output exists and is not a toolkit checkpoint
(``--overwrite`` replaces only a file with ``format: stmae``); the output's folder cannot be
written; a processing size (``--processing-size``, else the source's) that the runtime would
refuse. A tensor whose values do not fit the storage dtype (float16 tops out at 65504) is
stored in float32 instead, and said so, so that the file written always loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from stmae.checkpoint import FORMAT_NAME, CheckpointError, read_checkpoint_file
from runtime.io.gate import FILE, check_output

from .config import check_mem_every, check_processing_size

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ExportedWeights:
    """What a weights command wrote. kept_float32: {tensor stored in float32 because its
    values do not fit ``dtype``: its largest absolute value} (empty: all in ``dtype``)."""

    path: Path
    size_bytes: int
    step: int | None
    processing_size: int | None
    dtype: str
    kept_float32: dict[str, float] = field(default_factory=dict)
    mem_every: int | None = None

    def kept_note(self) -> str | None:
        """One line on the tensors kept in float32, or None when there are none."""
        if not self.kept_float32:
            return None
        name, largest = max(self.kept_float32.items(), key=lambda item: item[1])
        more = f" and {len(self.kept_float32) - 1} more" if len(self.kept_float32) > 1 else ""
        return (f"kept {len(self.kept_float32)} tensor(s) in float32 because their values do not fit {self.dtype} "
                f"({name}{more}, largest |value| {largest:.4g}); the file loads as usual")


def check_target(sources: list[Path], target: Path, overwrite: bool) -> None:
    """The output gate (:func:`runtime.io.gate.check_output`) for a weights file: refuse an
    --out that is or lies inside one of ``sources``, a folder, a file this toolkit did not
    write (even with --overwrite), an existing file without --overwrite, or unwritable."""
    owned = False
    if target.is_file():
        try:
            owned = read_checkpoint_file(target).get("format") == FORMAT_NAME
        except CheckpointError:
            owned = False
    check_output(target, "--out", {"CHECKPOINT" if len(sources) == 1 else f"CHECKPOINT {i + 1}": s
                                   for i, s in enumerate(sources)},
                 tool="stmae-train", kind=FILE, earlier=[target] if target.exists() else [], owned=owned,
                 overwrite=overwrite, noun="a checkpoint", owner="this toolkit")


def export_weights(source: str | Path, target: str | Path, dtype: str = "float16",
                   processing_size: int | None = None, overwrite: bool = False,
                   mem_every: int | None = None) -> ExportedWeights:
    """Write the network of ``source`` (a training or model-only checkpoint) to ``target``
    in ``dtype`` storage (float32 | float16 | bfloat16), atomically. processing_size: the
    shorter side the network should run at (default: the one ``source`` records);
    mem_every: the memory interval to record (default: the one ``source`` records, if any)."""
    from .state import export_model_only

    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"--dtype {dtype} is not one of {', '.join(STORAGE_DTYPES)}")
    if processing_size is not None:  # an argument: refused before anything is read or probed
        check_processing_size(processing_size, "--processing-size", "give the shorter side in pixels")
    if mem_every is not None:
        check_mem_every(mem_every)
    source, target = Path(source), Path(target)
    check_target([source], target, overwrite)
    written = export_model_only(source, target, storage_dtype=STORAGE_DTYPES[dtype],
                                processing_size=processing_size, mem_every=mem_every)
    return ExportedWeights(target, target.stat().st_size, written.entries.get("trained_steps"),
                           written.entries.get("processing_size"), dtype, written.kept_float32,
                           written.entries.get("mem_every"))
