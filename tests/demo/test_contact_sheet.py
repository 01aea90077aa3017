"""The contact sheet's legend names each object with its colour and the colours of missed
(false negative) and false (false positive) pixels, drawn in the tiles exactly so."""

from __future__ import annotations

import cv2
import numpy as np

from demo.contact_sheet import FALSE, MISSED, contact_sheet, error_masks, legend_items
from runtime.io.mask_io import davis_palette

H, W, TILE = 48, 64, 64


def _clip(errors: bool) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    frames = [rng.integers(90, 170, (H, W, 3), dtype=np.uint8) for _ in range(3)]
    truth = np.zeros((H, W), np.uint8)
    truth[8:30, 4:24], truth[20:44, 36:60] = 1, 2
    truth[0:4, 0:4] = 255  # void: never an error
    pred = truth.copy()
    pred[0:4, 0:4] = 0
    if errors:
        pred[8:30, 14:24] = 0   # half of object 1 missed
        pred[20:44, 26:36] = 2  # object 2 spills onto the background
    return frames, [truth] * 3, [pred] * 3


def _sheet(tmp_path, errors: bool, with_truth: bool = True) -> tuple[np.ndarray, int]:
    frames, truth, pred = _clip(errors)
    path = tmp_path / "sheet.png"
    contact_sheet(frames, pred, path, truth=truth if with_truth else None, tile_width=TILE)
    sheet = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    rows = 2 if with_truth else 1  # 3 frames, 2 pairs (or 4 single tiles) a row
    return sheet, rows * (round(H * TILE / W) + 4)


def _has(region: np.ndarray, colour) -> bool:
    return bool(np.all(region == np.array(colour, np.uint8), axis=-1).any())


def test_legend_names_objects_and_error_colours_as_drawn(tmp_path):
    palette = davis_palette()
    items = legend_items([1, 2], palette, has_truth=True)
    texts = [text for text, _, _ in items]
    assert texts[:2] == ["object 1", "object 2"]
    assert any(t.startswith("missed") for t in texts) and any(t.startswith("false") for t in texts)
    colours = {text.split()[0]: colour for text, colour, _ in items}
    assert colours["missed"] == MISSED and colours["false"] == FALSE
    assert items[0][1] == tuple(palette[3:6]) and items[1][1] == tuple(palette[6:9])  # the masks' colours
    assert len({colour for _, colour, _ in items}) == 4  # four distinct colours

    sheet, grid_height = _sheet(tmp_path, errors=True)
    grid, legend = sheet[:grid_height], sheet[grid_height:]
    for text, colour, _ in items:  # every swatch is in the legend, in its exact colour
        assert _has(legend, colour), text
    # The errors are drawn in the tiles in the legend's colours ...
    assert _has(grid, MISSED) and _has(grid, FALSE)


def test_errors_are_drawn_only_where_the_prediction_is_wrong(tmp_path):
    sheet, grid_height = _sheet(tmp_path, errors=False)
    grid = sheet[:grid_height]
    assert not _has(grid, MISSED) and not _has(grid, FALSE)  # a perfect prediction: no error drawn
    frames, truth, pred = _clip(errors=True)
    missed, false = error_masks(pred[0], truth[0])
    assert missed.sum() == 22 * 10 and false.sum() == 24 * 10 and not (missed[0:4, 0:4] | false[0:4, 0:4]).any()
    # Without ground truth there are no errors to show, and the legend says so.
    assert [t for t, _, _ in legend_items([1, 2], davis_palette(), has_truth=False)] == ["object 1", "object 2"]
    sheet, _ = _sheet(tmp_path, errors=True, with_truth=False)
    assert not _has(sheet, MISSED) and not _has(sheet, FALSE)
