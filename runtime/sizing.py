"""``--size auto``: run a network at the resolution it was trained or evaluated at.

Where the size comes from, in order: a toolkit checkpoint's ``processing_size`` entry
(:mod:`stmae.checkpoint`), an export's manifest (``processing_size``, recorded at export
time from its checkpoint), else 480 (the published models' 480p). Nothing here imports
torch at module level, so command lines can resolve sizes before heavy work starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

AUTO = "auto"
# The published models were trained and evaluated on 480p frames (kept equal to
# stmae.checkpoint.PUBLISHED_PROCESSING_SIZE, which imports torch).
PUBLISHED_SIZE = 480


@dataclass(frozen=True)
class ResolvedSize:
    """size: shorter side in pixels (-1: frames as they are); source: where it came from,
    for the summary line (e.g. 'auto: the checkpoint's own')."""

    size: int
    source: str

    def text(self) -> str:
        return f"size {self.size} ({self.source})" if self.size != -1 else f"size as is ({self.source})"


def parse_size(value: str) -> int | str:
    """argparse type of ``--size``: 'auto', -1 or a number of pixels >= 16."""
    import argparse

    if value.strip().lower() == AUTO:
        return AUTO
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto', -1 or pixels >= 16, got {value!r}") from None
    if size != -1 and size < 16:
        raise argparse.ArgumentTypeError(f"expected 'auto', -1 or pixels >= 16, got {value!r}")
    return size


def checkpoint_size(checkpoint: str | Path) -> ResolvedSize:
    """The size a checkpoint records, else the published 480."""
    from stmae.checkpoint import checkpoint_processing_size

    size = checkpoint_processing_size(checkpoint)
    if size is not None:
        return ResolvedSize(size, "auto: the checkpoint's own")
    return ResolvedSize(PUBLISHED_SIZE, "auto: the checkpoint records none, published 480p")


def export_size(export_dir: str | Path) -> ResolvedSize:
    """The size an export's manifest records, else the published 480."""
    from .export_manifest import load_manifest

    manifest = load_manifest(export_dir, verify_hashes=False)
    if manifest.processing_size is not None:
        return ResolvedSize(manifest.processing_size, "auto: the export's manifest")
    return ResolvedSize(PUBLISHED_SIZE, "auto: the export records none, published 480p")


def resolve_size(requested: int | str, checkpoint: str | Path | None = None,
                 export_dir: str | Path | None = None) -> ResolvedSize:
    """``requested`` as given (an int) or, for 'auto', from the export folder when one is
    used, else from the checkpoint, else 480."""
    if requested != AUTO:
        return ResolvedSize(int(requested), "--size")
    if export_dir is not None:
        return export_size(export_dir)
    if checkpoint is not None:
        return checkpoint_size(checkpoint)
    return ResolvedSize(PUBLISHED_SIZE, "auto: published 480p")
