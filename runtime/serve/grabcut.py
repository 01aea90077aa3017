"""GrabCut proposals for the browser page's box tool (``POST /v1/grabcut``).

The user drags a box around an object; OpenCV's GrabCut (Gaussian mixture colour models
of the box's inside and outside, refined by a graph cut) proposes the object's pixels,
which the user then corrects with the brush and eraser. Optional hint strokes (1 = surely
the object, 2 = surely background) constrain the cut.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

DEFAULT_ITERATIONS = 5
MAX_ITERATIONS = 10
HINT_UNKNOWN, HINT_FOREGROUND, HINT_BACKGROUND = 0, 1, 2


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``"x0,y0,x1,y1"`` (integer pixels) as a tuple; InputError if it is not four integers."""
    parts = str(text).split(",")
    try:
        if len(parts) != 4:
            raise ValueError
        return tuple(int(p.strip()) for p in parts)  # type: ignore[return-value]
    except ValueError:
        raise InputError(f"box {text!r} is not four integers; give it as 'x0,y0,x1,y1' in pixels "
                         f"(x1, y1 exclusive)") from None


def check_box(box, height: int, width: int) -> tuple[int, int, int, int]:
    """The box as ints if it lies inside a ``height`` x ``width`` frame and leaves some of
    the frame outside it (GrabCut learns the background there); InputError otherwise."""
    try:
        x0, y0, x1, y1 = (int(v) for v in box)
    except (TypeError, ValueError):
        raise InputError(f"box {box!r} is not four integers; give it as (x0, y0, x1, y1) in pixels") from None
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise InputError(f"box {x0},{y0},{x1},{y1} does not lie inside the {width}x{height} frame; "
                         f"give 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height} (x1, y1 exclusive)")
    if (x1 - x0) < 2 or (y1 - y0) < 2:
        raise InputError(f"box {x0},{y0},{x1},{y1} is smaller than 2x2 pixels; drag a box around the object")
    return x0, y0, x1, y1


def propose(frame_rgb: np.ndarray, box: tuple[int, int, int, int], hint: np.ndarray | None = None,
            iterations: int = DEFAULT_ITERATIONS) -> np.ndarray:
    """GrabCut's object proposal inside ``box``.

    frame_rgb: (H, W, 3) uint8; box: (x0, y0, x1, y1) pixels, x1/y1 exclusive; hint: None
    or (H, W) uint8 with 0 = unknown, 1 = object, 2 = background (strokes the user drew;
    they override the box, so an object stroke outside the box counts too); iterations:
    1..MAX_ITERATIONS. Returns (H, W) uint8: 1 = object, 0 = background. InputError for a
    bad frame, box, hint or iteration count.
    """
    import cv2  # OpenCV loads only where a proposal is asked for

    frame = np.asarray(frame_rgb)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or min(frame.shape[:2]) < 2:
        raise InputError(f"frame must be an RGB image (H, W, 3) uint8 of at least 2x2 pixels, "
                         f"got {frame.dtype} {frame.shape}")
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = check_box(box, height, width)
    if not isinstance(iterations, int) or isinstance(iterations, bool) or not 1 <= iterations <= MAX_ITERATIONS:
        raise InputError(f"iterations must be an integer from 1 to {MAX_ITERATIONS}, got {iterations!r}")

    mask = np.full((height, width), cv2.GC_BGD, dtype=np.uint8)
    mask[y0:y1, x0:x1] = cv2.GC_PR_FGD
    if hint is not None:
        hint = np.asarray(hint)
        if hint.shape != (height, width) or hint.dtype != np.uint8:
            raise InputError(f"hint must be a ({height}, {width}) uint8 map like the frame, "
                             f"got {hint.dtype} {hint.shape}")
        if hint.max(initial=0) > HINT_BACKGROUND:
            raise InputError("hint values must be 0 (unknown), 1 (object) or 2 (background); "
                             f"got {int(hint.max())}")
        mask[hint == HINT_FOREGROUND] = cv2.GC_FGD
        mask[hint == HINT_BACKGROUND] = cv2.GC_BGD
    background = np.isin(mask, (cv2.GC_BGD, cv2.GC_PR_BGD))
    if not background.any():
        raise InputError(f"box {x0},{y0},{x1},{y1} covers the whole {width}x{height} frame; leave some "
                         f"background outside it (or mark background with a hint)")
    if background.all():
        raise InputError("the hint marks the whole box as background; nothing is left to propose")

    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    cv2.grabCut(np.ascontiguousarray(frame), mask, None, bgd_model, fgd_model, iterations,
                cv2.GC_INIT_WITH_MASK)
    return np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
