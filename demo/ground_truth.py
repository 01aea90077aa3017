"""Ground truth for your own video (``stmae-demo --input ... --gt DIR``), DAVIS layout: DIR
holds one PNG label map per frame, named like the frames (``00000.png`` ... for a video
file; the frame's name for a folder of frames), as ``Annotations/<resolution>/<sequence>/``.

DAVIS annotates every frame, and J&F averages over every frame but the first and last, so a
folder that lacks any frame's annotation is refused before the model runs (a score over the
annotated frames only would not be the DAVIS score). Annotations of frames the input does
not have are not read (e.g. the first frames of a sequence copied out)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.errors import InputError
from runtime.io.mask_io import existing_masks, read_mask


def ground_truth_paths(gt_dir: Path, names: list[str]) -> list[Path]:
    """The annotation of each frame of ``names`` (frame names, in order) in ``gt_dir``.
    Raises InputError (one line) if ``gt_dir`` is not a folder or lacks any of them."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise InputError(f"--gt {gt_dir} is not a folder; give the folder of per-frame PNG annotations "
                         f"(DAVIS: Annotations/<resolution>/<sequence>)")
    by_name = {p.stem: p for p in existing_masks(gt_dir)}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise InputError(
            f"--gt {gt_dir} has no annotation for {len(missing)} of the {len(names)} frames (first: "
            f"{missing[0]}.png); J&F needs one PNG label map per frame, named like the frames, as DAVIS gives"
        )
    return [by_name[name] for name in names]


def read_ground_truth(paths: list[Path], size: tuple[int, int]) -> list[np.ndarray]:
    """Read each annotation (:func:`runtime.io.mask_io.read_mask`: palette or greyscale,
    binary 0/255 as 0/1, 255 void otherwise) -> (H, W) uint8 label maps; ``size``: the
    frames' (H, W), which each must have (InputError otherwise)."""
    masks = []
    for path in paths:
        labels = read_mask(path)[0]
        if labels.shape != tuple(size):
            raise InputError(
                f"annotation {path} is {labels.shape[1]}x{labels.shape[0]} but the frames are "
                f"{size[1]}x{size[0]}; --gt must hold the annotations of these very frames"
            )
        masks.append(labels)
    return masks
