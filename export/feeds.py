"""Graph input feeds on disk, read back one at a time (calibration memory bounded by design).

A feed is one graph call's inputs, ``{input name: float32 array}`` (the key encoder's
``image`` (1, 3, H, W); the mask autoencoder's ``image``, ``f16`` (1, C16, H/16, W/16),
``f8``, ``f4`` and ``coarse`` (1, N, H/16, W/16)). The mask autoencoder's feed of one
853x480 frame of the published architecture is about 51 MB, so the export never holds the
feeds of a whole clip: :class:`FeedSpool` writes each feed to its own ``.npz`` file as it is
recorded, and every consumer (AutoCast's reference run, the int8 calibrators, the int8
layout timing) reads them back one at a time. Memory: one feed; disk: every feed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

Feed = dict[str, np.ndarray]


class FeedSpool:
    """Feeds in ``folder`` (created), one uncompressed ``feed_NNNNN.npz`` per feed, in order.

    Indexing and iterating load one feed at a time; ``len`` is the number of feeds written."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=False)
        self._count = 0

    def append(self, feed: Feed) -> None:
        """Write one feed ({name: array}) after the others."""
        np.savez(self.folder / f"feed_{self._count:05d}.npz", **feed)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> Feed:
        """Feed ``index`` as {name: array}, read from disk now."""
        if not 0 <= index < self._count:
            raise IndexError(f"feed {index} of {self._count}")
        with np.load(self.folder / f"feed_{index:05d}.npz") as data:
            return {name: data[name] for name in data.files}

    def __iter__(self) -> Iterator[Feed]:
        for index in range(self._count):
            yield self[index]


class FeedReader:
    """An ONNX Runtime ``CalibrationDataReader`` over a :class:`FeedSpool` (or a list of
    feeds): ``get_next`` loads the next feed, so the calibrators hold one at a time."""

    def __init__(self, feeds: FeedSpool | list[Feed]) -> None:
        if not len(feeds):
            raise ValueError("int8 calibration needs at least one input feed")
        self._feeds = feeds
        self._it = iter(self._feeds)

    def get_next(self) -> Feed | None:
        return next(self._it, None)

    def get_first(self) -> Feed:
        """The first feed without advancing (ModelOpt's quantizer asks for it)."""
        return self._feeds[0]

    def rewind(self) -> None:
        self._it = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)
