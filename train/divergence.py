"""Non-finite training: stop before a NaN/Inf loss or weights reach a checkpoint.

Every step's loss is checked on every rank (the decision is all-reduced, so all ranks stop
together), and the weights are checked before each save. A run that diverges stops with
:class:`TrainingDiverged`; the last checkpoint written before stays as it was.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the CLI imports this module early
    import torch


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN/Inf; the message names the step and the
    checkpoint that was kept."""


def non_finite_tensors(module: "torch.nn.Module") -> list[str]:
    """Names of floating parameters and buffers holding NaN or Inf."""
    import torch

    bad = []
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad.append(name)
    return bad


def diverged_message(what: str, step: int, lr: float, kept: Path | None, kept_step: int | None) -> str:
    if kept is not None:
        kept_text = f"the last good checkpoint {kept} (step {kept_step}) was kept unchanged"
    else:
        kept_text = "no checkpoint was written by this run"
    lr_text = f"{lr:.3g}" if math.isfinite(lr) else str(lr)
    return (
        f"{what} at step {step} (lr {lr_text}); training stopped and did not save: {kept_text}; "
        f"lower --lr, set --grad-clip, or check the data"
    )
