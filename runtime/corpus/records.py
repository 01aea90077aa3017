"""The output folder of a corpus run: who owns it, which videos are done, partial output.

Layout of ``OUT``::

    OUT/.stmae-corpus.json        marks OUT as written by the toolkit (and its settings)
    OUT/.stmae-corpus.lock        held (flock) by the run writing into OUT; holds its pid
    OUT/<video>/<frame>.png       the masks of each video (each file written atomically)
    OUT/.records/<video>.json     written after the video's last mask: it is done
    OUT/run_summary.json          the last run's summary

A video folder without a record is unfinished: its PNGs (and temp files) are cleared
before it is redone. A record whose fingerprint (model hash + settings) differs from the
run's is refused unless ``--overwrite``. :func:`locked` keeps a second run out of ``OUT``
while one writes into it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from stmae.atomic import atomic_write_text

from ..errors import InputError
from ..io.mask_io import existing_masks

MARKER = ".stmae-corpus.json"
LOCK = ".stmae-corpus.lock"
RECORDS = ".records"
SUMMARY = "run_summary.json"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON at ``path`` atomically (:mod:`stmae.atomic`: temp file in the
    folder, fsync, rename, umask permissions)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def owned(out: Path) -> bool:
    """Whether ``out`` holds a corpus run's marker."""
    return (out / MARKER).is_file()


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold ``OUT/.stmae-corpus.lock`` (an exclusive ``flock``, released when the run ends
    or its process dies) for the run; InputError naming the holder's pid if another run
    holds it. The lock file stays (removing a lock file races with its next holder)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    path = out / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise InputError(
                f"--out {out} is being written by another corpus run (pid {holder}); wait for it to end "
                f"(then rerun to finish what is left), or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)


def claim_output(out: Path, fingerprint: dict, overwrite: bool) -> None:
    """Mark ``out`` (already through the output gate, see :func:`runtime.corpus.run.check_corpus_output`)
    as this run's; refuse, without ``overwrite``, one made with other settings or another
    model."""
    marker = out / MARKER
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))["fingerprint"]
        except (OSError, ValueError, KeyError):
            previous = None
        if previous != fingerprint and not overwrite:
            raise InputError(
                f"--out {out} holds results of other settings or another model ({_diff(previous, fingerprint)}); "
                f"pass --overwrite to redo its videos, or choose another --out"
            )
    (out / RECORDS).mkdir(parents=True, exist_ok=True)
    write_json(marker, {"fingerprint": fingerprint, "updated_at": utc_now()})


def _diff(previous: dict | None, current: dict) -> str:
    if not isinstance(previous, dict):
        return "unreadable marker"
    keys = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
    return "differs in " + ", ".join(keys)


def record_path(out: Path, name: str) -> Path:
    return out / RECORDS / f"{name}.json"


def read_record(out: Path, name: str) -> dict | None:
    try:
        return json.loads(record_path(out, name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_done(out: Path, name: str, fingerprint: dict) -> bool:
    """A record exists, it has this run's fingerprint, and its masks are all there."""
    record = read_record(out, name)
    if record is None or record.get("fingerprint") != fingerprint:
        return False
    return len(existing_masks(out / name)) == record.get("frames")


def write_record(out: Path, name: str, record: dict) -> None:
    write_json(record_path(out, name), record)


def _is_temp(name: str) -> bool:
    """Temp files of the toolkit's atomic writers (``.x.png.tmp``, ``.x.stmae-tmp-...``)."""
    return name.endswith(".tmp") or ".stmae-tmp-" in name


def clear_video(out: Path, name: str) -> None:
    """Remove a video's record, masks and temp files (only what the toolkit writes)."""
    record_path(out, name).unlink(missing_ok=True)
    folder = out / name
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.is_file() and (path.suffix.lower() == ".png" or _is_temp(path.name)):
            path.unlink(missing_ok=True)
    if not any(folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)
