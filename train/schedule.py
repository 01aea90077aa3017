"""Learning-rate schedule (warm-up, step decay) and the growing frame-gap schedule."""

from __future__ import annotations

from .config import DataConfig, ScheduleConfig


class StepDecay:
    """lr multiplier at a step: linear warm-up over ``warmup_steps``, then x ``factor``
    after each step in ``decay_at``. A plain object, so LambdaLR can save its state."""

    def __init__(self, cfg: ScheduleConfig) -> None:
        self.warmup_steps = cfg.warmup_steps
        self.decay_at = list(cfg.decay_at)
        self.factor = cfg.decay_factor

    def __call__(self, step: int) -> float:
        scale = 1.0
        if self.warmup_steps and step < self.warmup_steps:
            scale = (step + 1) / self.warmup_steps
        return scale * self.factor ** sum(step >= s for s in self.decay_at)


class GapSchedule:
    """Largest gap between consecutive clip frames at an epoch: grows linearly from
    ``gap_start`` (epoch 0) to ``gap_end`` (epoch ``total_epochs - 1``)."""

    def __init__(self, cfg: DataConfig, total_epochs: int) -> None:
        self.start, self.end = cfg.gap_start, cfg.gap_end
        self.total_epochs = max(1, total_epochs)

    def __call__(self, epoch: int) -> int:
        a = min(1.0, epoch / max(1, self.total_epochs - 1))
        return int(round(self.start + (self.end - self.start) * a))
