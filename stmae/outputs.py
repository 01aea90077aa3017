"""Guards for what the tools write: never over an input, never over what they did not write.

- :func:`refuse_alias`: an output path that is an input, lies inside an input folder, or
  (for folder outputs) holds an input, is refused. Paths are compared after resolving
  symlinks, ``..`` and ``~``; existing files are also compared by inode (hard links).
- Output records: a tool that writes a folder of results leaves ``.stmae-output.json`` in
  it (:func:`write_record`); ``--overwrite`` replaces only a folder (or files) that such a
  record says this tool wrote (:func:`written_by`). Export folders are recognized by their
  ``manifest.json`` and training runs by ``train_config.json`` instead.
- :func:`prepare_output_folder`: create the folder and prove it can be written (a small
  probe file) before any work starts, so a read-only or full disk is reported up front.

All refusals raise :class:`OutputError` (a ValueError): the tools print its message as one
line and exit with status 2.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
from pathlib import Path
from typing import Any, Mapping

from .atomic import atomic_write_text, temp_path_for

RECORD_NAME = ".stmae-output.json"
RECORD_FORMAT = "stmae-output-record"
_PROBE_BYTES = 64 * 1024


class OutputError(ValueError):
    """An output that cannot or must not be written; the message says why and what to do."""


def real_path(path: str | Path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_alias(output: str | Path, output_flag: str, inputs: Mapping[str, str | Path | None],
                 folder_output: bool = True) -> None:
    """Raise OutputError if ``output`` is one of ``inputs`` ({flag: path}), lies inside an
    input folder, or (``folder_output``) is a folder that holds an input."""
    out = real_path(output)
    for flag, given in inputs.items():
        if given is None or str(given) == "":
            continue
        inp = real_path(given)
        if out == inp or _same_file(out, inp):
            raise OutputError(
                f"{output_flag} {output} is the same path as {flag} {given}; an output never replaces "
                f"an input: choose another {output_flag}"
            )
        if inp in out.parents:
            raise OutputError(
                f"{output_flag} {output} is inside {flag} {given}; write outputs outside the inputs "
                f"(choose another {output_flag})"
            )
        if folder_output and out in inp.parents:
            raise OutputError(
                f"{output_flag} {output} holds {flag} {given}; an output folder must not contain an "
                f"input: choose another {output_flag}"
            )


def read_record(folder: str | Path) -> dict[str, Any] | None:
    """The output record of ``folder`` (None if there is none or it is not one)."""
    path = Path(folder) / RECORD_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == RECORD_FORMAT else None


def written_by(folder: str | Path, tool: str) -> bool:
    """Whether ``folder`` holds an output record of ``tool``."""
    record = read_record(folder)
    return record is not None and record.get("tool") == tool


def recorded_files(folder: str | Path, tool: str) -> set[str]:
    """Absolute paths of files outside ``folder`` that ``tool`` recorded writing (overlays)."""
    record = read_record(folder)
    if record is None or record.get("tool") != tool:
        return set()
    return {str(p) for p in record.get("files", []) if isinstance(p, str)}


def write_record(folder: str | Path, tool: str, files: list[str | Path] = (), **details: Any) -> None:
    """Mark ``folder`` as written by ``tool`` (atomically); ``files``: outputs of this run
    outside the folder (e.g. an overlay video), so a later ``--overwrite`` may replace them."""
    record = {
        "format": RECORD_FORMAT,
        "tool": tool,
        "written_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": sorted({str(real_path(f)) for f in files} | recorded_files(folder, tool)),
        **details,
    }
    atomic_write_text(Path(folder) / RECORD_NAME, json.dumps(record, indent=2, default=str) + "\n")


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written: a short count is followed by a write of
    the rest (on a nearly full disk that one fails with ENOSPC); a write that makes no
    progress is reported as a full disk."""
    view = memoryview(data)
    while view:
        count = os.write(fd, view)
        if count <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[count:]


def probe_writable(folder: str | Path, flag: str) -> None:
    """Write (every byte, checking each write's count), fsync and remove a 64 kB temp file
    in ``folder``; OutputError (one line: read-only, disk full, quota, permission) if that
    fails."""
    folder = Path(folder)
    probe = temp_path_for(folder / "write-probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            _write_all(fd, b"\0" * _PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        reason = {errno.EROFS: "the file system is read-only", errno.ENOSPC: "the disk is full",
                  errno.EDQUOT: "the disk quota is exceeded", errno.EACCES: "permission denied",
                  errno.EPERM: "permission denied"}.get(exc.errno, exc.strerror or str(exc))
        raise OutputError(f"{flag} {folder} cannot be written ({reason}); choose another {flag}") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def prepare_output_folder(folder: str | Path, flag: str, create: bool = True) -> Path:
    """Check (and create, with ``create``) an output folder and prove it is writable.

    Raises OutputError if ``folder`` is a file, cannot be created or cannot be written."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{flag} {folder} is a file, not a folder; choose a folder path for {flag}")
    if not folder.exists():
        base = _nearest_existing(folder.parent)
        if not base.is_dir():
            raise OutputError(f"{flag} {folder}: {base} is a file, so the folder cannot be created")
        if not create:
            probe_writable(base, flag)
            return folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{flag} {folder} cannot be created ({exc.strerror or exc}); choose another {flag}") from None
        try:
            probe_writable(folder, flag)
        except OutputError:  # a refusal leaves nothing behind: remove the folders just made
            for made in (folder, *folder.parents):
                if made == base:
                    break
                with contextlib.suppress(OSError):
                    made.rmdir()
            raise
        return folder
    probe_writable(folder, flag)
    return folder
