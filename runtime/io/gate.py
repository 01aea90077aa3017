"""The one gate every entry point's output goes through, before any work starts.

:func:`check_output` runs, in this order and for every tool (``stmae-segment`` single video,
``--videos``, ``--workers``, ``--ray``, ``--streams`` and live sources; ``stmae-eval`` with and
without ``--workers/--ray/--streams``; ``stmae-bench`` with and without ``--streams``;
``stmae-demo``; ``stmae-train`` and its weights sub-commands):

1. **aliases** (:func:`check_aliases`): the output is none of the inputs, lies inside none,
   and (a folder output) holds none, after resolving ``~``, ``..``, symlinks and hard links
   (``stmae-train --output`` may hold its own ``--resume`` checkpoint: that is no input);
2. **kind**: a folder output that is a file, or a file output that is a folder, is refused;
3. **ownership**: what the output already holds from an earlier run (``earlier``) is replaced
   only if the tool's own record is there (``owned``), and, for tools with ``--overwrite``,
   only with it;
4. **the write probe** (:func:`stmae.outputs.probe_writable`): the folder is created and a
   64 kB file is written (every ``os.write`` count checked), fsync'ed and removed, so a
   read-only or full disk is refused up front;
5. stale temp files of dead processes are removed.

Every refusal is an :class:`stmae.outputs.OutputError` (exit status 2, one line).

:func:`begin_run` / :func:`finish_run` keep a run's record (``<out>/.stmae-output.json``)
listing what the run writes (``outputs``, relative to the folder): ``--overwrite`` (or a
re-run of a tool that replaces its own output) removes exactly the files the earlier run's
record lists, and only those, before writing, so old and new outputs never mix.

:func:`check_sizes` and :func:`check_batch_pixels` are the size and pixel caps of every
count that sizes an allocation (``MAX_SIZE`` pixels a side, ``STMAE_MAX_PIXELS`` pixels a
frame, or a batch of frames stepped together), checked before anything is allocated.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from stmae.atomic import atomic_write_text, is_temp_name, remove_stale_temps
from stmae.outputs import (
    RECORD_NAME, OutputError, prepare_output_folder, probe_writable, read_record, real_path, refuse_alias,
    write_record,
)

from ..config import MAX_SIZE
from ..errors import InputError

FOLDER, FILE = "folder", "file"
PathLike = str | Path


def check_aliases(out: PathLike, flag: str, inputs: Mapping[str, PathLike | None], *,
                  folder_output: bool = True) -> None:
    """Refuse an output equal to or inside any input, or (``folder_output``) holding one.
    Raises OutputError."""
    refuse_alias(out, flag, inputs, folder_output=folder_output)


def _example(paths: list[Path], out: Path) -> str:
    first = paths[0]
    with contextlib.suppress(ValueError):
        return str(first.relative_to(out))
    return first.name


def _count(paths: list[Path]) -> str:
    n = len(paths)
    return f"{n} mask(s)" if all(p.suffix.lower() == ".png" for p in paths) else f"{n} file(s)"


def check_output(
    out: PathLike,
    flag: str,
    inputs: Mapping[str, PathLike | None],
    *,
    tool: str,
    kind: str = FOLDER,
    earlier: Iterable[PathLike] = (),
    owned: bool = False,
    overwrite: bool | None = None,
    noun: str = "files",
    owner: str | None = None,
    create: bool = True,
) -> Path:
    """The gate (see the module docstring). out: the output (a folder, or a file with
    ``kind=FILE``); inputs: {flag: path} of every input; earlier: files in the output that
    this run would replace (with the files the earlier run's record lists, if there is one);
    owned: the output holds ``tool``'s own record (or marker);
    overwrite: the ``--overwrite`` flag (None: the tool has none and a re-run replaces its
    own output); noun: what ``tool`` writes, for the messages ("masks", "results");
    owner: who writes the record, for the messages (default ``tool``);
    create: create the folder (False: only probe the nearest existing folder).
    Returns ``out`` as a Path. Raises OutputError."""
    out = Path(out)
    check_aliases(out, flag, inputs, folder_output=kind == FOLDER)
    if kind == FOLDER and out.exists() and not out.is_dir():
        raise OutputError(f"{flag} {out} is a file, not a folder; choose a folder path for {flag}")
    if kind == FILE and out.is_dir():
        raise OutputError(f"{flag} {out} is a folder; give the path of the file to write")
    # what the earlier run's record lists counts too: --overwrite replaces that run's whole output
    earlier = sorted({Path(p) for p in earlier} | set(earlier_outputs(out, tool) if kind == FOLDER else []))
    owner = owner or tool
    if kind == FILE and earlier and not owned:
        raise OutputError(f"{flag} {out} exists and is not {noun} that {owner} wrote, so --overwrite will not replace "
                          f"it; it was left untouched: choose another {flag}")
    if kind == FILE and earlier and overwrite is False:
        raise OutputError(f"{flag} {out} exists; pass --overwrite to replace it, or choose another {flag}")
    if earlier and not owned:
        hint = "--overwrite replaces" if overwrite is not None else "a re-run replaces"
        raise OutputError(
            f"{flag} {out} already has {_count(earlier)} (e.g. {_example(earlier, out)}) but no {tool} record "
            f"(not written by {owner}): {hint} only {noun} that {owner} wrote, so they were left untouched; "
            f"choose another {flag}"
        )
    if earlier and overwrite is False:
        raise OutputError(
            f"{flag} {out} already has {_count(earlier)} (e.g. {_example(earlier, out)}) of an earlier {tool} "
            f"run; pass --overwrite to replace that run's output, or choose another {flag}"
        )
    if kind == FOLDER:
        prepare_output_folder(out, flag, create=create)
        if create and out.is_dir():
            remove_stale_temps(out)
        return out
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{flag} {out}: the folder {parent} does not exist; create it first")
    probe_writable(parent, flag)
    remove_stale_temps(parent, out.name)
    return out


def folder_entries(out: PathLike, ignore: Iterable[str] = ()) -> list[Path]:
    """What a folder holds besides the toolkit's record, temp files and ``ignore`` names
    (for tools whose output must be a new, empty or own folder)."""
    out = Path(out)
    if not out.is_dir():
        return []
    skip = {RECORD_NAME, *ignore}
    return sorted(p for p in out.iterdir() if p.name not in skip and not is_temp_name(p.name))


def earlier_outputs(out: PathLike, tool: str, candidates: Iterable[PathLike] = ()) -> list[Path]:
    """The files the earlier run of ``tool`` in ``out`` wrote and that are still there: the
    ``outputs`` its record lists (paths relative to ``out``; anything resolving outside
    ``out`` is ignored). A record that lists none (written before outputs were listed, or by
    a run whose outputs were not known up front): ``candidates``, the files the caller's
    ownership check accepted as the tool's."""
    out = Path(out)
    record = read_record(out)
    if record is None or record.get("tool") != tool:
        return []
    listed = record.get("outputs")
    if not isinstance(listed, list):
        return sorted({Path(p) for p in candidates if Path(p).is_file()})
    root = real_path(out)
    found = []
    for rel in listed:
        if not isinstance(rel, str) or not rel:
            continue
        path = out / rel
        if root not in real_path(path).parents or not (path.is_file() or path.is_symlink()):
            continue
        found.append(path)
    return sorted(set(found))


def begin_run(out: PathLike, tool: str, *, outputs: Iterable[str] | None, candidates: Iterable[PathLike] = (),
              files: Iterable[PathLike | None] = (), **details: Any) -> list[Path]:
    """Replace the earlier run of ``tool`` in ``out``: remove exactly the files its record
    lists (:func:`earlier_outputs`), then record this run (``outputs``: the files it will
    write, relative to ``out``, or None when not known up front; ``files``: its outputs
    outside ``out``, e.g. an overlay). Call after :func:`check_output` accepted ``out``.
    Returns the removed files."""
    out = Path(out)
    removed = []
    for path in earlier_outputs(out, tool, candidates):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
        parent = path.parent
        while parent != out and out in parent.parents:  # folders the earlier run made, now empty
            with contextlib.suppress(OSError):
                parent.rmdir()
            parent = parent.parent
    write_record(out, tool, files=[f for f in files if f], status="running",
                 outputs=sorted(set(outputs)) if outputs is not None else None, **details)
    return removed


def finish_run(out: PathLike, tool: str, outputs: Iterable[str]) -> None:
    """Record the files this run of ``tool`` wrote into ``out`` (relative paths), so the
    next ``--overwrite`` removes exactly those."""
    out = Path(out)
    record = read_record(out)
    if record is None or record.get("tool") != tool:
        return
    record.update(status="complete", outputs=sorted(set(outputs)))
    atomic_write_text(out / RECORD_NAME, json.dumps(record, indent=2, default=str) + "\n")


def check_sizes(flag: str, sizes: Iterable[int], allow_as_is: bool = False) -> tuple[int, ...]:
    """Refuse a processing size outside 16..MAX_SIZE pixels (-1, frames as they are, only
    with ``allow_as_is``), before anything is drawn or allocated at that size."""
    sizes = tuple(sizes)
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or not (
                16 <= size <= MAX_SIZE or (allow_as_is and size == -1)):
            raise InputError(f"{flag} must be {'-1 or ' if allow_as_is else ''}16..{MAX_SIZE} pixels, got {size!r}; "
                             f"give a smaller size")
    return sizes


def check_batch_pixels(count: int, height: int, width: int, what: str, fix: str) -> None:
    """Refuse ``count`` frames of ``height`` x ``width`` held and stepped together when
    they exceed ``STMAE_MAX_PIXELS`` (the cap of one frame applies to the batch a step
    takes), before anything is allocated."""
    from .frames import max_pixels  # frames imports OpenCV and PIL

    limit = max_pixels()
    total = count * height * width
    if total > limit:
        raise InputError(
            f"{what}: {count} x {width}x{height} frames = {total / 1e6:.0f} Mpx in one step, above the limit of "
            f"{limit / 1e6:.0f} Mpx; {fix}, or raise the limit with STMAE_MAX_PIXELS"
        )
