"""A contact sheet: every k-th frame with its masks blended in, in a grid, as one PNG."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from runtime.overlay import blend
from stmae.atomic import AtomicPath


def contact_sheet(frames: list[np.ndarray], masks: list[np.ndarray], path: Path, tiles: int = 12, columns: int = 4, tile_width: int = 320, palette: list[int] | None = None) -> list[int]:
    """Write ``tiles`` evenly spaced frames (RGB uint8) with their label maps blended in,
    ``columns`` per row, each resized to ``tile_width`` wide and captioned with its index.
    Returns the frame indices shown. Written atomically."""
    if not frames or len(frames) != len(masks):
        raise ValueError(f"need one mask per frame, got {len(frames)} frames and {len(masks)} masks")
    count = min(tiles, len(frames))
    indices = sorted({int(round(i)) for i in np.linspace(0, len(frames) - 1, count)})
    h, w = frames[0].shape[:2]
    th = max(1, round(h * tile_width / w))
    cells = []
    for i in indices:
        tile = cv2.resize(blend(frames[i], masks[i], palette, alpha=0.55), (tile_width, th), interpolation=cv2.INTER_AREA)
        cv2.putText(tile, f"frame {i}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(tile, f"frame {i}", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        cells.append(tile)
    while len(cells) % columns:
        cells.append(np.full_like(cells[0], 255))
    rows = [np.concatenate(cells[r : r + columns], axis=1) for r in range(0, len(cells), columns)]
    sheet = np.concatenate(rows, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with AtomicPath(path) as target:
        if not cv2.imwrite(str(target.tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
    return indices
