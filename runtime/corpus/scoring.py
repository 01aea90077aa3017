"""Score a corpus run's DAVIS predictions (``OUT/<seq>/<frame>.png``) against the
ground truth: the scoring half of ``stmae-eval`` when the segmentation ran as a corpus."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..evaluation import EvalResult, SequenceResult
from ..io.mask_io import existing_masks, read_mask
from ..metrics import evaluate_objects
from .records import read_record


def score_sequences(dataset_root: str | Path, resolution: str, names: list[str], out: str | Path) -> EvalResult:
    """J and F of each finished sequence: every written mask against the annotation of the
    same frame (DAVIS protocol: first and last frames excluded)."""
    out = Path(out)
    gt_root = Path(dataset_root) / "Annotations" / resolution
    results = []
    for name in names:
        predicted = existing_masks(out / name)
        predictions, truths = [], []
        for path in predicted:
            gt_path = gt_root / name / path.name
            if not gt_path.is_file():
                raise InputError(f"sequence {name!r}: no annotation {gt_path}; evaluation needs one per frame")
            predictions.append(read_mask(path)[0])
            truths.append(read_mask(gt_path)[0])
        try:
            scores = evaluate_objects(predictions, truths)
        except ValueError as exc:
            raise InputError(f"sequence {name!r}: {exc}") from None
        record = read_record(out, name) or {}
        results.append(SequenceResult(name, tuple(scores), len(predictions), float(record.get("seconds", 0.0))))
    return EvalResult(tuple(results))
