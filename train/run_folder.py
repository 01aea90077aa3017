"""The run folder of a training run: checked before anything is written.

A run folder is recognized by what training writes into it (``train_config.json``, the
logs, ``checkpoints/``). A fresh run (no ``--resume``) into a folder that already holds a
run is refused, so its checkpoint, config and logs are never replaced or mixed; the
folder must not be, or lie inside, an input (data roots, checkpoints); it is created and
proven writable up front. :func:`check_resume_matches` refuses a resume whose checkpoint
holds another network than the one the run builds, before any tensor is copied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from stmae.checkpoint import CheckpointError
from stmae.config import ModelConfig, PRESETS
from runtime.io.gate import check_output
from stmae.outputs import OutputError

from .config import TrainConfig

RUN_FILES = ("train_config.json", "train_log.csv", "validation.csv", "checkpoints", "tensorboard")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A --config JSON file as a dict; ValueError with one line for anything else."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--config {path} is a folder; give the JSON file, e.g. {path / 'train_config.json'}")
    if not path.is_file():
        raise ValueError(f"--config {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--config {path} is not readable JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"--config {path} holds a JSON {type(data).__name__}; a training config is a JSON object "
            f"(as written to <output>/train_config.json)"
        )
    for section in ("data", "optim", "schedule", "validation"):
        if section in data and not isinstance(data[section], dict):
            raise ValueError(f"--config {path}: '{section}' must be a JSON object, got {type(data[section]).__name__}")
    return data


def check_run_folder(cfg: TrainConfig, resume: str | Path | None, resume_requested: bool = False,
                     create: bool = True) -> Path:
    """The output gate (:func:`runtime.io.gate.check_output`): refuse an output that is,
    lies inside or holds an input (it may hold its own ``--resume`` checkpoint, which is no
    input of the gate), is a file, or cannot be written; create it. Then refuse, without a
    resume, a folder that already holds a run. ``create=False``: the same checks, creating
    nothing (before the training videos are listed). Raises ValueError (one line)."""
    out = Path(cfg.output_dir)
    inputs: dict[str, str | Path | None] = {"--init-checkpoint": cfg.init_checkpoint or None,
                                            "--val-root": cfg.validation.root or None}
    inputs.update({f"--davis {root}": root for root in cfg.data.davis_roots})
    inputs.update({f"--youtube {root}": root for root in cfg.data.youtube_roots})
    try:
        check_output(out, "--output", inputs, tool="stmae-train", create=create)
    except OutputError as exc:
        raise ValueError(str(exc)) from None
    present = [name for name in RUN_FILES if (out / name).exists()]
    if present and resume is None:
        hint = ("it has no checkpoints/last.pth to resume: choose a new --output" if resume_requested
                else "continue it with --resume auto, or choose a new --output")
        raise ValueError(f"--output {out} already holds a training run ({present[0]}); {hint}")
    return out


def _describe(config: Mapping[str, Any]) -> str:
    for name, preset in PRESETS.items():
        if preset.to_dict() == dict(config):
            return f"the '{name}' preset"
    return "a custom network (" + ", ".join(f"{k}={v}" for k, v in dict(config).items()) + ")"


def check_resume_matches(resume: str | Path, saved: Mapping[str, Any], built: ModelConfig, cfg: TrainConfig) -> None:
    """Raise CheckpointError (one line) if the checkpoint's network is not the one built."""
    try:
        saved_config = ModelConfig.from_dict(dict(saved))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"--resume {resume} has an invalid 'config': {exc}") from None
    if saved_config == built:
        return
    asked = f"--init-checkpoint {cfg.init_checkpoint}" if cfg.init_checkpoint else f"--model {cfg.model}"
    raise CheckpointError(
        f"--resume {resume} holds {_describe(saved_config.to_dict())} but this run builds "
        f"{_describe(built.to_dict())} ({asked}); resume with the run's own settings: "
        f"--config <run>/train_config.json"
    )
