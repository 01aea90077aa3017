"""``--mem-every auto``: run a network with the memory interval recorded for it.

Where the interval comes from, in order: a toolkit checkpoint's ``mem_every`` entry
(:mod:`stmae.checkpoint`, chosen on held-out video when the model was shipped), an
export's manifest (``mem_every``, recorded at export time from its checkpoint), else the
published schedule: every 5th frame. Nothing here imports torch at module level, so
command lines can resolve it before heavy work starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import DEFAULT_MEM_EVERY
from .sizing import AUTO, parse_auto_int


@dataclass(frozen=True)
class ResolvedMemEvery:
    """every: frames between memory writes (>= 1); source: where it came from, for the
    summary line (e.g. 'auto: the checkpoint's own')."""

    every: int
    source: str

    def text(self) -> str:
        return f"mem every {self.every} ({self.source})"


parse_mem_every = parse_auto_int  # --mem-every: :func:`resolve_mem_every` refuses what is not >= 1


def check_mem_every(requested: int | str) -> int | str:
    """``requested`` if it is 'auto' or a whole number >= 1; else InputError (one line)."""
    if requested == AUTO:
        return requested
    from stmae.checkpoint_peek import valid_recorded

    if not valid_recorded("mem_every", requested):
        from .errors import InputError

        raise InputError(f"--mem-every {requested}: expected 'auto' or a whole number of frames >= 1")
    return requested


def checkpoint_mem_every(checkpoint: str | Path) -> ResolvedMemEvery:
    """The interval a checkpoint records, else the published 5."""
    from .recorded import checkpoint_entry

    every = checkpoint_entry(checkpoint, "mem_every")
    if every is not None:
        return ResolvedMemEvery(every, "auto: the checkpoint's own")
    return ResolvedMemEvery(DEFAULT_MEM_EVERY, f"auto: the checkpoint records none, published {DEFAULT_MEM_EVERY}")


def export_mem_every(export_dir: str | Path) -> ResolvedMemEvery:
    """The interval an export's manifest records, else the published 5."""
    from .recorded import export_entry

    every = export_entry(export_dir, "mem_every")
    if every is not None:
        return ResolvedMemEvery(every, "auto: the export's manifest")
    return ResolvedMemEvery(DEFAULT_MEM_EVERY, f"auto: the export records none, published {DEFAULT_MEM_EVERY}")


def resolve_mem_every(requested: int | str, checkpoint: str | Path | None = None,
                      export_dir: str | Path | None = None) -> ResolvedMemEvery:
    """``requested`` as given (an int) or, for 'auto', from the export folder when one is
    used, else from the checkpoint, else 5. InputError for a value :func:`check_mem_every`
    refuses."""
    if check_mem_every(requested) != AUTO:
        return ResolvedMemEvery(int(requested), "--mem-every")
    if export_dir is not None:
        return export_mem_every(export_dir)
    if checkpoint is not None:
        return checkpoint_mem_every(checkpoint)
    return ResolvedMemEvery(DEFAULT_MEM_EVERY, f"auto: published {DEFAULT_MEM_EVERY}")
