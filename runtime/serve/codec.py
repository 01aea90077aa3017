"""Uploaded bytes -> frames and label maps, label maps -> PNG bytes: the toolkit's own
readers (:mod:`runtime.io.frames`, :mod:`runtime.io.mask_io`) on in-memory files, with the
server's pixel cap read from the header before anything is decoded."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from ..io.frames import open_image, to_rgb8
from ..io.mask_io import decode_mask, encode_mask
from .errors import ServeError, bad_input, too_large

_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


def _check_header(data: bytes, what: str, max_pixels: int) -> None:
    if not data:
        raise bad_input(f"{what} is empty; send the JPEG or PNG bytes of the image")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Image.DecompressionBombError:
        raise too_large(f"{what} is too large to decode safely; send a smaller image") from None
    except _READ_ERRORS as exc:
        raise bad_input(f"{what} cannot be read as an image ({exc}); send JPEG or PNG bytes") from None
    if width * height > max_pixels:
        raise too_large(f"{what} is {width}x{height} ({width * height} pixels), above this server's limit of "
                        f"{max_pixels} pixels a frame; send smaller frames")


def decode_frame(data: bytes, what: str, max_pixels: int) -> np.ndarray:
    """JPEG/PNG bytes -> (H, W, 3) uint8 RGB; ServeError 400 (not an image) or 413 (over
    ``max_pixels``, read from the header first)."""
    _check_header(data, what, max_pixels)
    try:
        with open_image(io.BytesIO(data), what) as img:
            return to_rgb8(img, what)
    except InputError as exc:
        raise bad_input(str(exc)) from None
    except _READ_ERRORS as exc:
        raise bad_input(f"{what} cannot be decoded ({exc}); send JPEG or PNG bytes") from None


def decode_label_map(data: bytes, what: str, max_pixels: int) -> tuple[np.ndarray, list[int] | None]:
    """PNG bytes (palette or grey labels; 0 background, 255 void) -> (labels (H, W) uint8,
    palette or None), refused as :func:`runtime.io.mask_io.read_mask` refuses a file."""
    _check_header(data, what, max_pixels)
    try:
        return decode_mask(io.BytesIO(data), what)
    except InputError as exc:
        raise bad_input(str(exc)) from None


def encode_labels(labels: np.ndarray, palette: list[int] | None, level: int) -> bytes:
    """(H, W) uint8 labels -> palette PNG bytes (the bytes ``stmae-segment`` writes)."""
    return encode_mask(labels, palette, level)


__all__ = ["decode_frame", "decode_label_map", "encode_labels", "ServeError"]
