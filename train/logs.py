"""Rank-0 logging: a CSV of training rows, a CSV of validation rows, and TensorBoard."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

TRAIN_FIELDS = ["step", "epoch", "loss", "cross_entropy", "dice", "lr", "max_gap", "seconds",
                "clips_per_second"]


class RunLog:
    """Appends rows to ``<dir>/train_log.csv`` / ``<dir>/validation.csv`` and writes the
    same scalars to TensorBoard under ``<dir>/tensorboard`` (when tensorboard is installed)."""

    def __init__(self, directory: str | Path, tensorboard: bool = True) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.train_csv = self.directory / "train_log.csv"
        self.validation_csv = self.directory / "validation.csv"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is a declared dependency; tolerate its absence
                self.writer = None
            else:
                self.writer = SummaryWriter(str(self.directory / "tensorboard"))

    @staticmethod
    def _append(path: Path, fields: list[str], row: dict[str, Any]) -> None:
        new = not path.exists()
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            if new:
                writer.writeheader()
            writer.writerow({k: row.get(k, "") for k in fields})

    def train_row(self, row: dict[str, Any]) -> None:
        self._append(self.train_csv, TRAIN_FIELDS, row)
        if self.writer is not None:
            for key in ("loss", "cross_entropy", "dice", "lr", "max_gap", "clips_per_second"):
                self.writer.add_scalar(f"train/{key}", row[key], row["step"])

    def validation_row(self, step: int, scores: dict[str, float]) -> None:
        fields = ["step"] + sorted(scores)
        self._append(self.validation_csv, fields, {"step": step, **scores})
        if self.writer is not None:
            for key, value in scores.items():
                self.writer.add_scalar(f"validation/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
