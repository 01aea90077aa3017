"""What one DAVIS sequence's evaluation opens and gives: its frames and first mask, and its
J and F (:class:`SequenceResult`), and the dataset means (:class:`EvalResult`).

Shared by the one-session-per-sequence loop (:mod:`runtime.evaluation`) and the batched
one (:mod:`runtime.evaluation_streams`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stmae.atomic import atomic_write_text

from .errors import InputError
from .io.frames import FrameFolder
from .io.mask_io import read_mask
from .metrics import ObjectScore, evaluate_objects


@dataclass(frozen=True)
class SequenceResult:
    """Scores of one sequence: J and F are means over its objects, in [0, 1]."""

    name: str
    objects: tuple[ObjectScore, ...]
    frames: int
    seconds: float

    @property
    def J(self) -> float:
        return float(np.mean([o.J for o in self.objects]))

    @property
    def F(self) -> float:
        return float(np.mean([o.F for o in self.objects]))

    @property
    def JF(self) -> float:
        return (self.J + self.F) / 2


@dataclass(frozen=True)
class EvalResult:
    """Per-sequence results and dataset means over all objects (the DAVIS global score)."""

    sequences: tuple[SequenceResult, ...]

    def _objects(self) -> list[ObjectScore]:
        return [o for s in self.sequences for o in s.objects]

    @property
    def J(self) -> float:
        return float(np.mean([o.J for o in self._objects()]))

    @property
    def F(self) -> float:
        return float(np.mean([o.F for o in self._objects()]))

    @property
    def JF(self) -> float:
        return (self.J + self.F) / 2

    def summary_line(self) -> str:
        return f"J&F {self.JF:.4f}  J {self.J:.4f}  F {self.F:.4f}"

    def csv_text(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["sequence", "J", "F", "J&F"])
        for s in self.sequences:
            writer.writerow([s.name, f"{s.J:.4f}", f"{s.F:.4f}", f"{s.JF:.4f}"])
        return buf.getvalue()

    def write_csv(self, path: str | Path) -> None:
        """Write the per-sequence CSV (sequence, J, F, J&F) atomically."""
        atomic_write_text(path, self.csv_text())


class named_sequence:
    """Prefix an InputError's message with the sequence it is about."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if isinstance(exc, InputError) and not str(exc).startswith(f"sequence {self.name!r}"):
            raise InputError(f"sequence {self.name!r}: {exc}") from None
        return False


def open_sequence(name: str, frames_dir: Path, gt_dir: Path, out: Path | None, max_frames: int | None):
    """(frames, names to score, first mask, palette) of a sequence; checks that every
    frame has an annotation and makes ``out/<name>/``."""
    frames = FrameFolder(frames_dir)
    names = frames.names[:max_frames] if max_frames else frames.names
    missing = [n for n in names if not (gt_dir / f"{n}.png").is_file()]
    if missing:
        raise InputError(
            f"sequence {name!r}: no annotation for {len(missing)} frame(s) (e.g. {gt_dir / missing[0]}.png); "
            f"evaluation needs one per frame"
        )
    first_mask, palette = read_mask(gt_dir / f"{names[0]}.png")
    if out is not None:
        (out / name).mkdir(parents=True, exist_ok=True)
    return frames, names, first_mask, palette


def score_sequence(name: str, predictions: list, truths: list, seconds: float) -> SequenceResult:
    """J and F of one sequence's predicted label maps against its annotations."""
    try:
        scores = evaluate_objects(predictions, truths)
    except ValueError as exc:
        raise InputError(f"sequence {name!r}: {exc}") from None
    if not scores:
        raise InputError(f"sequence {name!r}: the first annotation has no object")
    return SequenceResult(name, tuple(scores), len(predictions), seconds)
