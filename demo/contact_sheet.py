"""A contact sheet: evenly spaced frames, ground truth beside prediction, with a legend.

Each shown frame is a pair of tiles, the frame with the ground-truth masks blended in
(left, when the clip has ground truth) and with the predicted masks (right); ``pairs``
pairs per row. With ground truth, the prediction tile also marks its errors with diagonal
stripes: **missed** pixels (an object's pixels predicted as background: false negatives)
in magenta and **false** pixels (predicted as an object they are not: false positives) in
cyan; void pixels (255) are neither. A legend under the grid gives every object's colour,
the two error colours (drawn as in the tiles) and which side is which
(:func:`legend_items`). Written atomically (temp file, then rename).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from runtime.io.mask_io import VOID_LABEL, davis_palette
from runtime.io.overlay import blend
from stmae.atomic import AtomicPath

_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)
# RGB. No DAVIS palette colour has a channel at 255, so these never look like an object.
MISSED = (255, 0, 255)  # magenta: the object's pixels the prediction left as background
FALSE = (0, 255, 255)   # cyan: pixels predicted as an object they are not
_STRIPE_PERIOD, _STRIPE_WIDTH = 6, 2
_LEGEND_ROW, _SWATCH = 22, 18


def error_masks(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """prediction, truth (H, W) uint8 label maps -> (missed, false), (H, W) bool each:
    missed = an object in ``truth`` predicted as background; false = predicted as an object
    that ``truth`` does not have there (background or another object). Void is neither."""
    counted = truth != VOID_LABEL
    missed = counted & (truth > 0) & (prediction == 0)
    false = counted & (prediction > 0) & (prediction != truth)
    return missed, false


def _stripes(height: int, width: int) -> np.ndarray:
    """(height, width) bool: diagonal stripes, the pattern errors are drawn with."""
    yy, xx = np.mgrid[0:height, 0:width]
    return (yy + xx) % _STRIPE_PERIOD < _STRIPE_WIDTH


def _colour(palette, label: int) -> tuple[int, int, int]:
    return tuple(int(c) for c in np.asarray(palette).reshape(-1, 3)[label])


def legend_items(labels: list[int], palette, has_truth: bool) -> list[tuple[str, tuple[int, int, int], bool]]:
    """The legend's entries, in order: (text, RGB colour, striped) for each object label and,
    with ground truth, the missed and false pixels (striped, as the tiles draw them)."""
    items = [(f"object {label}", _colour(palette, label), False) for label in labels]
    if has_truth:
        items += [("missed (object predicted as background)", MISSED, True),
                  ("false (predicted as an object it is not)", FALSE, True)]
    return items


def _caption(tile: np.ndarray, text: str) -> None:
    # A black halo drawn as the same thin text shifted by one pixel: OpenCV widens each
    # glyph's advance with the stroke thickness, so a thick outline would not line up.
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            if dx or dy:
                cv2.putText(tile, text, (6 + dx, 18 + dy), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _BLACK, 1, cv2.LINE_AA)
    cv2.putText(tile, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _WHITE, 1, cv2.LINE_AA)


def _tile(frame: np.ndarray, labels: np.ndarray, palette, width: int, height: int, text: str,
          truth: np.ndarray | None = None) -> np.ndarray:
    """One tile: ``labels`` blended into ``frame`` with outlines and, given ``truth``, the
    errors of ``labels`` against it striped in MISSED / FALSE."""
    tile = cv2.resize(blend(frame, labels, palette, alpha=0.55), (width, height), interpolation=cv2.INTER_AREA)
    # Object outlines keep the masks readable where colours are close to the frame's.
    for label in np.unique(labels):
        if label == 0:
            continue
        m = cv2.resize((labels == label).astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(tile, contours, -1, _colour(palette, int(label)), 1, cv2.LINE_AA)
    if truth is not None:
        stripes = _stripes(height, width)
        for mask, colour in zip(error_masks(labels, truth), (MISSED, FALSE)):
            small = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
            tile[small & stripes] = colour
    _caption(tile, text)
    return tile


def _legend(width: int, labels: list[int], palette, has_truth: bool, note: str) -> np.ndarray:
    """The legend strip (rows of swatches and names, wrapped to ``width``, then a line
    saying which side is which and ``note``)."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
    placed, x, row = [], 8, 0
    for text, colour, striped in legend_items(labels, palette, has_truth):
        span = _SWATCH + 6 + cv2.getTextSize(text, font, scale, 1)[0][0] + 24
        if x > 8 and x + span > width:
            x, row = 8, row + 1
        placed.append((x, row, text, colour, striped))
        x += max(span, 120)
    strip = np.full((56 + _LEGEND_ROW * row, width, 3), 255, np.uint8)
    for x, row_index, text, colour, striped in placed:
        top = 10 + _LEGEND_ROW * row_index
        if striped:  # drawn as in the tiles: stripes of the colour (over white here)
            box = strip[top:top + _SWATCH - 2, x:x + _SWATCH + 1]
            box[_stripes(*box.shape[:2])] = colour
            cv2.rectangle(strip, (x, top), (x + _SWATCH, top + _SWATCH - 2), colour, 1)
        else:
            cv2.rectangle(strip, (x, top), (x + _SWATCH, top + _SWATCH - 2), colour, -1)
        cv2.putText(strip, text, (x + _SWATCH + 6, top + 14), font, scale, _BLACK, 1, cv2.LINE_AA)
    sides = "each pair: ground truth (left) | prediction (right)" if has_truth else "prediction (no ground truth)"
    cv2.putText(strip, f"{sides}   {note}".strip(), (8, strip.shape[0] - 10), font, 0.45, _BLACK, 1, cv2.LINE_AA)
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
        pair.append(_tile(frames[i], predictions[i], palette, tile_width, th, f"frame {i}: prediction",
                          truth=None if truth is None else truth[i]))
        cell = np.concatenate(pair, axis=1)
        cells.append(np.pad(cell, ((2, 2), (2, 2), (0, 0)), constant_values=255))
    per_row = pairs if truth is not None else 2 * pairs
    while len(cells) % per_row:
        cells.append(np.full_like(cells[0], 255))
    rows = [np.concatenate(cells[r : r + per_row], axis=1) for r in range(0, len(cells), per_row)]
    grid = np.concatenate(rows, axis=0)
    present = sorted({int(v) for m in ([predictions[0]] + list(truth or [])) for v in np.unique(m)
                      if v and v != VOID_LABEL})
    sheet = np.concatenate([grid, _legend(grid.shape[1], present, palette, truth is not None, note)], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with AtomicPath(path) as target:
        if not cv2.imwrite(str(target.tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
    return indices
