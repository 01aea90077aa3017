"""Progress output: a tqdm bar on a terminal, periodic plain lines elsewhere.

When stderr is not a terminal (a log file, CI, a pipe), a redrawn bar floods the log with
carriage-return updates; :class:`PeriodicLines` prints one line every ``interval``
seconds instead (and one at the end). Both offer what the command lines use: ``update``,
``set_description``, ``close``, ``n`` and use as a context manager.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

# Seconds between two progress lines when stderr is not a terminal.
LINE_INTERVAL_S = 10.0


class PeriodicLines:
    """'<desc>: 40/82 frame (12.3 frame/s)' every ``interval`` seconds and at close."""

    def __init__(self, total: int | None = None, unit: str = "it", desc: str | None = None,
                 interval: float = LINE_INTERVAL_S, file: TextIO | None = None, disable: bool = False) -> None:
        self.total, self.unit, self.desc = total, unit, desc
        self.interval, self.disable = interval, disable
        self.file = file if file is not None else sys.stderr
        self.n = 0
        self._start = self._last = time.monotonic()
        self._closed = False

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        head = f"{self.desc}: " if self.desc else ""
        return f"{head}{done} {self.unit} ({self.n / elapsed:.1f} {self.unit}/s, {elapsed:.0f} s)"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.disable and now - self._last >= self.interval:
            self._last = now
            print(self._line(), file=self.file, flush=True)

    def set_description(self, desc: str, refresh: bool = True) -> None:  # noqa: ARG002 (tqdm's signature)
        self.desc = desc

    def close(self) -> None:
        if not self._closed and not self.disable and self.n:
            print(self._line(), file=self.file, flush=True)
        self._closed = True

    def __enter__(self) -> "PeriodicLines":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int | None = None, unit: str = "it", desc: str | None = None,
                 disable: bool = False, file: TextIO | None = None):
    """A tqdm bar when ``file`` (default stderr) is a terminal, else :class:`PeriodicLines`."""
    file = file if file is not None else sys.stderr
    if not getattr(file, "isatty", lambda: False)():
        return PeriodicLines(total=total, unit=unit, desc=desc, file=file, disable=disable)
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, disable=disable, desc=desc, dynamic_ncols=True, file=file)
