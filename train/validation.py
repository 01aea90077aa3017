"""Validation during training: J&F on named DAVIS-layout sequences through the runtime.

There is no second inference path: the network is wrapped in the runtime's
:class:`runtime.backends.torch_backend.TorchBackend` and scored by
:func:`runtime.evaluation.evaluate_sequences` (a fresh :class:`runtime.session.VideoSession`
per sequence, DAVIS protocol), exactly as ``stmae-eval`` does.
"""

from __future__ import annotations

from typing import Callable

import torch

from runtime.backends.torch_backend import TorchBackend
from runtime.config import SessionConfig
from runtime.evaluation import EvalResult, evaluate_sequences
from stmae.network import STMAE

from .config import ValidationConfig


def scores_of(result: EvalResult) -> dict[str, float]:
    """{'J&F', 'J', 'F'} dataset means plus 'J&F/<sequence>' per sequence."""
    scores = {"J&F": result.JF, "J": result.J, "F": result.F}
    scores.update({f"J&F/{s.name}": s.JF for s in result.sequences})
    return scores


def evaluate_network(net: STMAE, device: torch.device, cfg: ValidationConfig) -> EvalResult:
    """Score ``net`` (put in eval mode by the backend) on ``cfg.sequences``; fp32."""
    backend = TorchBackend(net, device, "fp32")
    return evaluate_sequences(
        backend, cfg.root, list(cfg.sequences), cfg.resolution,
        session_config=SessionConfig(size=cfg.size),
        max_frames=cfg.max_frames or None,
    )


def make_validator(cfg: ValidationConfig) -> Callable[[STMAE, torch.device], dict[str, float]]:
    """A ``validate(net, device) -> scores`` callable for :func:`train.loop.train`."""

    def validate(net: STMAE, device: torch.device) -> dict[str, float]:
        return scores_of(evaluate_network(net, device, cfg))

    return validate
