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

Many small files (a video's masks) are made durable as a group instead of one fsync each:
:func:`atomic_write` with ``group=`` a :class:`GroupCommit` writes the temp file without
fsync, and the group, every ``every`` files and at :meth:`GroupCommit.commit`, flushes their
data (one ``syncfs`` per file system on Linux, else one fsync per file), renames them over
their targets and fsyncs each folder once. A target is renamed only after its data is on
disk, so it never holds a half-written or empty file, even after a power loss.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import sys
import threading
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


_SYNCFS: list = []  # [libc.syncfs or None], looked up once


def _syncfs(fd: int) -> bool:
    """Flush every file's data and metadata on the file system of ``fd`` (Linux
    ``syncfs(2)``: one journal commit for all of them); False where it does not exist."""
    if not _SYNCFS:
        function = None
        if sys.platform.startswith("linux"):
            import ctypes

            function = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
        _SYNCFS.append(function)
    if _SYNCFS[0] is None:
        return False
    if _SYNCFS[0](fd) != 0:
        import ctypes

        code = ctypes.get_errno()
        raise OSError(code, f"syncfs failed: {os.strerror(code)}")
    return True


class GroupCommit:
    """Atomic files made durable together (group commit), for writers of many small files.

    :func:`atomic_write` with ``group=self`` leaves each file as a closed temp file, not
    fsync'ed, and hands it here (:meth:`add`). Every ``every`` files, and at
    :meth:`commit`, the pending files are flushed: their data is synced (one ``syncfs`` per
    file system on Linux, else one fsync per file), each is renamed over its target, then
    each folder is fsync'ed once so the renames survive a power loss. Until then the
    target keeps its earlier content (or does not exist), so it never holds a half-written
    or empty file, even after a power loss; a crash loses the files handed in since the
    last flush (their temp files, named by :func:`temp_path_for`, are what
    :func:`remove_stale_temps` removes). Write a record that says "these files are
    complete" only after :meth:`commit` returned.

    A failed flush removes its temp files and is raised by :meth:`add` and :meth:`commit`
    for every folder it held files of, until :meth:`discard` forgets that folder.
    Thread-safe: writer threads add, any thread commits.
    """

    def __init__(self, every: int = 64) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.every = every
        self._pending: list[tuple[Path, Path]] = []  # (temp file, target)
        self._failed: dict[Path, BaseException] = {}
        self._lock = threading.Lock()  # the pending list and failures
        self._flush_lock = threading.Lock()  # one flush at a time; commit waits for a running one
        self.flushes = 0

    def add(self, tmp: Path, path: Path) -> None:
        """Take the closed temp file ``tmp`` of target ``path``; flush if ``every`` files wait."""
        folder = path.parent
        with self._lock:
            failed = self._failed.get(folder)
            if failed is None:
                self._pending.append((tmp, path))
                full = len(self._pending) >= self.every
        if failed is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise failed
        if full:
            self._flush()
            self._raise_failure(folder)

    def commit(self, folder: str | Path | None = None) -> None:
        """Make every file handed in so far durable and put it in place; raise if a flush
        lost files of ``folder`` (of any folder if None)."""
        self._flush()
        self._raise_failure(None if folder is None else Path(folder))

    def discard(self, folder: str | Path | None = None) -> None:
        """Remove the temp files waiting for ``folder`` (all if None) and forget its
        failures; waits for a flush in progress, so nothing of that folder is renamed
        into place after this returns."""
        folder = None if folder is None else Path(folder)
        with self._flush_lock, self._lock:
            keep = []
            for tmp, path in self._pending:
                if folder is None or path.parent == folder:
                    with contextlib.suppress(OSError):
                        tmp.unlink()
                else:
                    keep.append((tmp, path))
            self._pending = keep
            for key in [k for k in self._failed if folder is None or k == folder]:
                del self._failed[key]

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _raise_failure(self, folder: Path | None) -> None:
        with self._lock:
            failed = next(iter(self._failed.values()), None) if folder is None else self._failed.get(folder)
        if failed is not None:
            raise failed

    def _flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            done = 0
            try:
                _sync_data([tmp for tmp, _ in batch])
                for tmp, path in batch:
                    os.replace(tmp, path)
                    done += 1
                for folder in dict.fromkeys(path.parent for _, path in batch):
                    fsync_dir(folder)
                self.flushes += 1
            except BaseException as exc:
                for tmp, path in batch[done:]:
                    with contextlib.suppress(OSError):
                        tmp.unlink()
                with self._lock:
                    for _, path in batch:
                        self._failed.setdefault(path.parent, exc)
                if not isinstance(exc, Exception):
                    raise


def _sync_data(files: list[Path]) -> None:
    """Put the data of ``files`` on disk: one syncfs per file system, else fsync each."""
    devices: dict[int, Path] = {}
    for path in files:
        devices.setdefault(os.stat(path.parent).st_dev, path.parent)
    for folder in devices.values():
        fd = os.open(folder, os.O_RDONLY)
        try:
            synced = _syncfs(fd)
        finally:
            os.close(fd)
        if not synced:
            for path in files:
                _fsync_file(path)
            return


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None,
                 durable: bool = False, group: GroupCommit | None = None) -> Iterator[IO]:
    """Open a temp file beside ``path`` for writing; on a clean exit it is flushed,
    fsync'ed and renamed over ``path`` (``durable``: the folder is fsync'ed too); on an
    exception it is removed and ``path`` is left as it was. With ``group``, the closed
    temp file goes to the :class:`GroupCommit` instead, which syncs and renames it with
    others (``path`` changes at the group's next flush)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = temp_path_for(path)
    fd = _create(tmp)
    try:
        with os.fdopen(fd, mode, encoding=encoding if mode == "w" else None,
                       newline="" if mode == "w" else None) as fh:
            yield fh
            if group is None:
                fh.flush()
                os.fsync(fh.fileno())
        if group is None:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if group is not None:
        group.add(tmp, path)
    elif durable:
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
