"""Learning-rate schedule (warm-up, step decay) and the growing frame-gap and clip-length
schedules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import DataConfig, ScheduleConfig

if TYPE_CHECKING:
    import torch


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


class FrameSchedule(GapSchedule):
    """Frames per clip at an epoch: ``num_frames`` throughout when ``frames_start`` is 0,
    else growing linearly from ``frames_start`` (epoch 0) to ``num_frames`` (epoch
    ``total_epochs - 1``), rounded like the gap schedule. Every clip of an epoch has the
    same length, so a batch (one epoch's clips) stacks."""

    def __init__(self, cfg: DataConfig, total_epochs: int) -> None:
        super().__init__(cfg, total_epochs)
        self.start, self.end = cfg.frames_start or cfg.num_frames, cfg.num_frames


def follow_config_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, cfg: ScheduleConfig,
                           base_lr: float) -> None:
    """After ``scheduler.load_state_dict`` on resume: keep the checkpoint's step count but
    use this run's schedule and learning rate. LambdaLR saves its lambda object's
    attributes and ``base_lrs``, so a resume would otherwise silently keep the old
    ``--decay-at``/``--warmup``/``--lr`` whatever the flags now say."""
    scheduler.lr_lambdas = [StepDecay(cfg) for _ in scheduler.optimizer.param_groups]
    scheduler.base_lrs = [base_lr for _ in scheduler.optimizer.param_groups]
    step = scheduler.last_epoch
    lrs = [base * fn(step) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs
