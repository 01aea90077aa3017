"""What a checkpoint or an export records for running its network: ``processing_size``
(``--size auto``, :mod:`runtime.sizing`) and ``mem_every`` (``--mem-every auto``,
:mod:`runtime.mem_interval`). Nothing here imports torch unless the checkpoint's metadata
cannot be read without it."""

from __future__ import annotations

from pathlib import Path

def checkpoint_entry(checkpoint: str | Path, key: str) -> int | None:
    """``key`` as a checkpoint records it (None: not recorded). Read by the torch-free peek
    when the file allows, else by :mod:`stmae.checkpoint`, which raises CheckpointError
    (one line) for a value it refuses. KeyError for a key that is not a recorded entry."""
    from stmae.checkpoint_peek import UNKNOWN, peek_entry

    value = peek_entry(checkpoint, key)
    if value is UNKNOWN:
        from stmae.checkpoint import checkpoint_entry as read

        value = read(checkpoint, key)
    return value


def export_entry(export_dir: str | Path, key: str) -> int | None:
    """``key`` as an export's manifest records it (None: not recorded)."""
    from stmae.checkpoint_peek import RECORDED

    from .export_manifest import load_manifest

    if key not in RECORDED:
        raise KeyError(f"{key!r} is not one of {sorted(RECORDED)}")
    return getattr(load_manifest(export_dir, verify_hashes=False), key)
