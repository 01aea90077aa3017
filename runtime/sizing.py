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


def parse_auto_int(value: str) -> int | str:
    """argparse type of ``--size`` and ``--mem-every``: 'auto' or a whole number; anything
    else is kept as given, and the resolver refuses it (and numbers out of range) with one
    line, as every other bad option (argparse's own refusal prints the usage)."""
    text = value.strip()
    if text.lower() == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        return value


parse_size = parse_auto_int  # --size: :func:`resolve_size` refuses what is neither -1 nor >= 16


def check_size(requested: int | str) -> int | str:
    """``requested`` if it is 'auto', -1 or pixels >= 16; else InputError (one line)."""
    if requested == AUTO:
        return requested
    if isinstance(requested, bool) or not isinstance(requested, int) or (requested != -1 and requested < 16):
        from .errors import InputError

        raise InputError(f"--size {requested}: expected 'auto', -1 (frames as they are) or pixels >= 16")
    return requested


def checkpoint_size(checkpoint: str | Path) -> ResolvedSize:
    """The size a checkpoint records, else the published 480."""
    from .recorded import checkpoint_entry

    size = checkpoint_entry(checkpoint, "processing_size")
    if size is not None:
        return ResolvedSize(size, "auto: the checkpoint's own")
    return ResolvedSize(PUBLISHED_SIZE, "auto: the checkpoint records none, published 480p")


def export_size(export_dir: str | Path) -> ResolvedSize:
    """The size an export's manifest records, else the published 480."""
    from .recorded import export_entry

    size = export_entry(export_dir, "processing_size")
    if size is not None:
        return ResolvedSize(size, "auto: the export's manifest")
    return ResolvedSize(PUBLISHED_SIZE, "auto: the export records none, published 480p")


def resolve_size(requested: int | str, checkpoint: str | Path | None = None,
                 export_dir: str | Path | None = None) -> ResolvedSize:
    """``requested`` as given (an int) or, for 'auto', from the export folder when one is
    used, else from the checkpoint, else 480. InputError for a size :func:`check_size`
    refuses."""
    if check_size(requested) != AUTO:
        return ResolvedSize(int(requested), "--size")
    if export_dir is not None:
        return export_size(export_dir)
    if checkpoint is not None:
        return checkpoint_size(checkpoint)
    return ResolvedSize(PUBLISHED_SIZE, "auto: published 480p")
