"""Atomic writes: a file appears whole at its path, or the earlier file stays untouched.

Every writer of the toolkit (masks, checkpoints, manifests, reports, CSVs, charts, overlay
videos, engines) goes through this module:

- the data goes to a temp file in the target's folder (same file system, so the final
  ``os.replace`` is atomic), named ``.<name>.stmae-tmp-<pid>-<token><ext>``: hidden,
  recognizable, and keeping the extension (OpenCV/PIL writers choose the format by it);
- the temp file is created with mode 0o666 and the process umask applied by the kernel
  (no ``mkstemp`` 0600 surprise), flushed and fsync'ed, then renamed over the target;
- on any failure (exception, KeyboardInterrupt) the temp file is removed;
- after ``kill -9`` a temp file can stay behind: :func:`remove_stale_temps` deletes those
  whose process is gone (the tools call it on their output folders), and
  :func:`is_temp_name` lets folder listings ignore them.

Use :func:`atomic_write` (a file object), :func:`atomic_write_bytes` /
:func:`atomic_write_text`, or :class:`AtomicPath` for writers that need a path.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import IO, Iterator

TEMP_MARK = ".stmae-tmp-"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.stmae-tmp-(?P<pid>\d+)-[0-9a-f]+(?P<ext>\.[^.]*)?$")


def temp_path_for(path: str | Path) -> Path:
    """A fresh temp path beside ``path``: ``.<name>.stmae-tmp-<pid>-<token><suffix>``."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of this module's temp names (to be ignored in listings)."""
    return _TEMP_RE.match(name) is not None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(folder: str | Path, name: str | None = None) -> list[Path]:
    """Delete temp files (and temp folders) in ``folder`` left by processes that no longer
    run; only those of target ``name`` if given. Returns what was removed."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_RE.match(entry.name)
        if not match or (name is not None and match["name"] != name) or _pid_alive(int(match["pid"])):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            continue
    return removed


def fsync_dir(folder: str | Path) -> None:
    """fsync a folder so a rename in it survives a power loss (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create(tmp: Path) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    return os.open(tmp, flags, 0o666)  # the kernel applies the umask


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None,
                 durable: bool = False) -> Iterator[IO]:
    """Open a temp file beside ``path`` for writing; on a clean exit it is flushed,
    fsync'ed and renamed over ``path`` (``durable``: the folder is fsync'ed too); on an
    exception it is removed and ``path`` is left as it was."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = temp_path_for(path)
    fd = _create(tmp)
    try:
        with os.fdopen(fd, mode, encoding=encoding if mode == "w" else None,
                       newline="" if mode == "w" else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = False) -> None:
    with atomic_write(path, "wb", durable=durable) as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str, durable: bool = False) -> None:
    with atomic_write(path, "w", encoding="utf-8", durable=durable) as fh:
        fh.write(text)


class AtomicPath:
    """For writers that need a path (OpenCV, PIL, matplotlib, video writers): write to
    ``.tmp`` (same folder, same extension), then :meth:`commit` (fsync + rename) or
    :meth:`abort` (remove). As a context manager it commits on a clean exit and aborts on
    an exception."""

    def __init__(self, path: str | Path, durable: bool = False) -> None:
        self.path = Path(path)
        self.tmp = temp_path_for(self.path)
        os.close(_create(self.tmp))  # reserve the name with umask permissions
        self.durable = durable
        self._done = False

    def commit(self) -> Path:
        if self._done:
            raise RuntimeError(f"{self.path}: already committed or aborted")
        try:
            _fsync_file(self.tmp)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True
        if self.durable:
            fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        self._done = True
        with contextlib.suppress(OSError):
            self.tmp.unlink()

    def __enter__(self) -> "AtomicPath":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def make_temp_dir(target: str | Path) -> Path:
    """A new temp folder beside folder ``target`` (umask permissions), for outputs that are
    built whole and then renamed into place (export folders)."""
    tmp = temp_path_for(target)
    tmp.mkdir(mode=0o777)
    return tmp
