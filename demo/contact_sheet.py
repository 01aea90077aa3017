"""A contact sheet: evenly spaced frames, ground truth beside prediction, with a legend.

Each shown frame is a pair of tiles, the frame with the ground-truth masks blended in
(left, when the clip has ground truth) and with the predicted masks (right); ``pairs``
pairs per row; a legend under the grid names every object's colour and says which side
is which. Written atomically (temp file, then rename).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from runtime.io.mask_io import davis_palette
from runtime.io.overlay import blend
from stmae.atomic import AtomicPath

_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)


def _caption(tile: np.ndarray, text: str) -> None:
    # A black halo drawn as the same thin text shifted by one pixel: OpenCV widens each
    # glyph's advance with the stroke thickness, so a thick outline would not line up.
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            if dx or dy:
                cv2.putText(tile, text, (6 + dx, 18 + dy), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _BLACK, 1, cv2.LINE_AA)
    cv2.putText(tile, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _WHITE, 1, cv2.LINE_AA)


def _tile(frame: np.ndarray, labels: np.ndarray, palette, width: int, height: int, text: str) -> np.ndarray:
    tile = cv2.resize(blend(frame, labels, palette, alpha=0.55), (width, height), interpolation=cv2.INTER_AREA)
    # Object outlines keep the masks readable where colours are close to the frame's.
    for label in np.unique(labels):
        if label == 0:
            continue
        m = cv2.resize((labels == label).astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        colour = tuple(int(c) for c in np.asarray(palette).reshape(-1, 3)[int(label)])
        cv2.drawContours(tile, contours, -1, colour, 1, cv2.LINE_AA)
    _caption(tile, text)
    return tile


def _legend(width: int, labels: list[int], palette, has_truth: bool, note: str) -> np.ndarray:
    strip = np.full((56, width, 3), 255, np.uint8)
    x = 8
    for label in labels:
        colour = tuple(int(c) for c in np.asarray(palette).reshape(-1, 3)[label])
        cv2.rectangle(strip, (x, 10), (x + 18, 26), colour, -1)
        cv2.putText(strip, f"object {label}", (x + 24, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _BLACK, 1, cv2.LINE_AA)
        x += 120
    sides = "each pair: ground truth (left) | prediction (right)" if has_truth else "prediction (no ground truth)"
    cv2.putText(strip, f"{sides}   {note}".strip(), (8, 46), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _BLACK, 1, cv2.LINE_AA)
    return strip


def contact_sheet(frames: list[np.ndarray], predictions: list[np.ndarray], path: Path,
                  truth: list[np.ndarray] | None = None, count: int = 8, pairs: int = 2,
                  tile_width: int = 320, palette: list[int] | None = None, note: str = "") -> list[int]:
    """frames (H, W, 3) uint8 RGB, predictions / truth (H, W) uint8 label maps -> PNG at
    ``path``. Shows ``count`` evenly spaced frames; returns their indices. ``note``: text
    for the legend line (e.g. the J&F)."""
    if not frames or len(frames) != len(predictions):
        raise ValueError(f"need one prediction per frame, got {len(frames)} frames and {len(predictions)} masks")
    if truth is not None and len(truth) != len(frames):
        raise ValueError(f"need one ground-truth mask per frame, got {len(truth)} for {len(frames)} frames")
    palette = palette if palette is not None else davis_palette()
    count = min(count, len(frames))
    indices = sorted({int(round(i)) for i in np.linspace(0, len(frames) - 1, count)})
    h, w = frames[0].shape[:2]
    th = max(1, round(h * tile_width / w))
    cells = []
    for i in indices:
        pair = []
        if truth is not None:
            pair.append(_tile(frames[i], truth[i], palette, tile_width, th, f"frame {i}: ground truth"))
        pair.append(_tile(frames[i], predictions[i], palette, tile_width, th, f"frame {i}: prediction"))
        cell = np.concatenate(pair, axis=1)
        cells.append(np.pad(cell, ((2, 2), (2, 2), (0, 0)), constant_values=255))
    per_row = pairs if truth is not None else 2 * pairs
    while len(cells) % per_row:
        cells.append(np.full_like(cells[0], 255))
    rows = [np.concatenate(cells[r : r + per_row], axis=1) for r in range(0, len(cells), per_row)]
    grid = np.concatenate(rows, axis=0)
    present = sorted({int(v) for m in ([predictions[0]] + list(truth or [])) for v in np.unique(m) if v})
    sheet = np.concatenate([grid, _legend(grid.shape[1], present, palette, truth is not None, note)], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with AtomicPath(path) as target:
        if not cv2.imwrite(str(target.tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
    return indices
