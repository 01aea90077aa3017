"""Validation during training: J&F on named DAVIS-layout sequences through the runtime.

Under DDP every rank scores its share of the sequences (rank r takes sequences r, r+W,
...) and the results are gathered, so no rank waits at a barrier while another validates
alone (NCCL's collective timeout is 10 minutes by default; a long validation on rank 0
used to run into it).

There is no second inference path: the network is wrapped in the runtime's
:class:`runtime.backends.torch_backend.TorchBackend` and scored by
:func:`runtime.evaluation.evaluate_sequences` (a fresh :class:`runtime.engine.session.VideoSession`
per sequence, DAVIS protocol), exactly as ``stmae-eval`` does.
"""

from __future__ import annotations

from typing import Sequence

import torch

from runtime.backends.torch_backend import TorchBackend
from runtime.config import SessionConfig
from runtime.evaluation import EvalResult, SequenceResult, evaluate_sequences
from stmae.network import STMAE

from .config import ValidationConfig


def scores_of(result: EvalResult) -> dict[str, float]:
    """{'J&F', 'J', 'F'} dataset means plus 'J&F/<sequence>' per sequence."""
    scores = {"J&F": result.JF, "J": result.J, "F": result.F}
    scores.update({f"J&F/{s.name}": s.JF for s in result.sequences})
    return scores


def evaluate_network(
    net: STMAE, device: torch.device, cfg: ValidationConfig, sequences: Sequence[str] | None = None
) -> EvalResult:
    """Score ``net`` (put in eval mode by the backend) on ``sequences`` (default: all of
    ``cfg.sequences``); fp32."""
    backend = TorchBackend(net, device, "fp32")
    names = list(cfg.sequences if sequences is None else sequences)
    if not names:
        return EvalResult(())
    return evaluate_sequences(
        backend, cfg.root, names, cfg.resolution,
        session_config=SessionConfig(size=cfg.size),
        max_frames=cfg.max_frames or None,
    )


class Validator:
    """Validation for :func:`train.loop.train`: ``shard(net, device, rank, world)`` scores
    this rank's sequences; ``scores(results)`` turns every rank's results into the logged
    scores; ``validator(net, device)`` does both in one process."""

    def __init__(self, cfg: ValidationConfig) -> None:
        self.cfg = cfg

    def shard(self, net: STMAE, device: torch.device, rank: int = 0, world: int = 1) -> list[SequenceResult]:
        return list(evaluate_network(net, device, self.cfg, self.cfg.sequences[rank::world]).sequences)

    def scores(self, results: Sequence[SequenceResult]) -> dict[str, float]:
        order = {name: i for i, name in enumerate(self.cfg.sequences)}
        return scores_of(EvalResult(tuple(sorted(results, key=lambda s: order[s.name]))))

    def __call__(self, net: STMAE, device: torch.device) -> dict[str, float]:
        return self.scores(self.shard(net, device))


def make_validator(cfg: ValidationConfig) -> Validator:
    """The :class:`Validator` of ``cfg``, for :func:`train.loop.train`."""
    return Validator(cfg)
