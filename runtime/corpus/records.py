"""The output folder of a corpus run: who owns it, which videos are done, partial output.

Layout of ``OUT``::

    OUT/.stmae-corpus.json        marks OUT as written by the toolkit (and its settings)
    OUT/<video>/<frame>.png       the masks of each video (each file written atomically)
    OUT/.records/<video>.json     written after the video's last mask: it is done
    OUT/run_summary.json          the last run's summary

A video folder without a record is unfinished: its PNGs (and temp files) are cleared
before it is redone. A record whose fingerprint (model hash + settings) differs from the
run's is refused unless ``--overwrite``.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stmae.atomic import atomic_write_text

from ..errors import InputError
from ..io.mask_io import existing_masks

MARKER = ".stmae-corpus.json"
RECORDS = ".records"
SUMMARY = "run_summary.json"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON at ``path`` atomically (:mod:`stmae.atomic`: temp file in the
    folder, fsync, rename, umask permissions)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def claim_output(out: Path, fingerprint: dict, overwrite: bool) -> None:
    """Create ``out`` (or reuse one this toolkit made); refuse a foreign non-empty folder
    and, without ``overwrite``, one made with other settings or another model."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    marker = out / MARKER
    if out.is_dir() and not marker.is_file() and any(out.iterdir()):
        raise InputError(
            f"--out {out} is not empty and was not written by a corpus run; choose a new or empty folder"
        )
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
