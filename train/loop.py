"""The training loop: DDP one-shot cycle training with exact resume.

One process per device (torchrun) or a single process. Rank 0 alone logs and saves; every
rank seeds its RNGs with ``seed + rank``; the data order comes from a resumable
distributed sampler and each clip's randomness from (seed, epoch, index), so a resumed run
replays exactly the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from stmae.atomic import atomic_write_text
from stmae.checkpoint import check_state_dict, load_checkpoint
from stmae.config import preset
from stmae.network import STMAE

from . import distributed
from .clips import OneShotClips, collate_clips
from .config import TrainConfig
from .cycle import CycleModel, reference_frames
from .divergence import TrainingDiverged, diverged_message, non_finite_tensors
from .logs import RunLog
from .run_folder import check_resume_matches, check_run_folder
from .loss import cycle_loss
from .sampler import ResumableDistributedSampler, batches_per_epoch, epochs_for
from .schedule import FrameSchedule, GapSchedule, StepDecay, follow_config_schedule
from .state import Progress, capture_rng, load_training_checkpoint, restore_rng, save_training_checkpoint

if TYPE_CHECKING:
    from .validation import Validator

CHECKPOINT_NAME = "last.pth"


@dataclass(frozen=True)
class TrainResult:
    """steps: optimizer steps done in total; checkpoint: the last checkpoint written (rank
    0; None elsewhere); last_loss: mean loss of the last logged window; stopped_early: the
    time budget ended the run (or ``stop_after``); seconds: wall time of this process's
    loop; network: the trained STMAE (this rank's copy, on its device, train mode)."""

    steps: int
    checkpoint: Path | None
    last_loss: float
    stopped_early: bool
    seconds: float
    network: STMAE


def checkpoint_path(cfg: TrainConfig) -> Path:
    return Path(cfg.output_dir) / "checkpoints" / CHECKPOINT_NAME


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _build_network(cfg: TrainConfig) -> STMAE:
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    if cfg.init_checkpoint:
        return load_checkpoint(cfg.init_checkpoint, device="cpu").model.float()
    return STMAE(preset(cfg.model))


def _autocast(device: torch.device, precision: str):
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext(), False
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype), precision == "fp16"


def train(
    cfg: TrainConfig,
    resume: str | Path | None = None,
    stop_after: int | None = None,
    validate: "Validator | None" = None,
    progress_bar: bool = True,
    resume_requested: bool = False,
    stop_at: int | None = None,
) -> TrainResult:
    """Run (or resume) training; returns when ``cfg.schedule.steps`` steps are done, the
    time budget is spent, ``stop_after`` steps were done in this call, or the run reached
    step ``stop_at`` (a checkpoint is written in every case; the last two leave a run to
    resume, e.g. to replay a staged run exactly). ``validate`` (a :class:`train.validation.Validator`) runs every
    ``cfg.validation.every_steps`` steps on every rank, each scoring its share of the
    sequences; rank 0 logs the gathered scores.

    The training videos are listed (bounding the epoch's clip count) and the output folder
    checked first (:func:`train.run_folder.check_run_folder`: a fresh run into a folder
    holding a run is refused). A NaN/Inf loss or weights stop the run
    with :class:`train.divergence.TrainingDiverged`, without saving.
    ``resume_requested``: --resume auto was given (only changes the refusal's hint)."""
    info = distributed.setup(cfg.device)
    try:
        # The videos are listed (and the epoch's size bounded) before the run folder is made,
        # after the output gate (runtime.io.gate) has checked it, creating nothing.
        # The dataset needs the gap schedule, which needs the epoch count: it is set in _train.
        check_run_folder(cfg, resume, resume_requested, create=False)
        dataset = OneShotClips(cfg.data, cfg.seed, lambda epoch: cfg.data.gap_start)
        check_run_folder(cfg, resume, resume_requested)
        distributed.barrier(info)  # every rank checked before rank 0 writes anything
        return _train(cfg, info, dataset, resume, stop_after, validate, progress_bar, stop_at)
    finally:
        distributed.cleanup(info)


def _train(cfg, info, dataset, resume, stop_after, validate, progress_bar, stop_at=None) -> TrainResult:
    # ResNet 1x1 stride-2 convolutions produce gradients whose strides differ from DDP's
    # flat buckets; harmless (a copy), and DDP would warn on every step.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    started = time.monotonic()
    device = info.device
    state = load_training_checkpoint(resume) if resume else None
    if state is not None and not cfg.init_checkpoint:  # before building (and allocating) a network
        check_resume_matches(resume, state.config, preset(cfg.model), cfg)
    net = _build_network(cfg)
    _seed_everything(cfg.seed + info.rank)
    model = CycleModel(net).to(device).train()
    ddp = DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    ) if info.distributed else model

    global_batch = cfg.batch_size * info.world_size
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.optim.lr_for(global_batch), betas=cfg.optim.betas,
        weight_decay=cfg.optim.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, StepDecay(cfg.schedule))
    autocast, use_scaler = _autocast(device, cfg.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

    progress = Progress()
    if state is not None:
        check_resume_matches(resume, state.config, net.config, cfg)
        check_state_dict(net.state_dict(), state.network, str(resume))
        net.load_state_dict(state.network)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        follow_config_schedule(scheduler, cfg.schedule, cfg.optim.lr_for(global_batch))
        if state.scaler or not scaler.is_enabled():  # a CPU (fp32) run has no scaler state
            scaler.load_state_dict(state.scaler)
        progress = state.progress
        if len(state.rng_by_rank) != info.world_size:
            raise ValueError(
                f"{resume} was written by {len(state.rng_by_rank)} processes; resume it with "
                f"the same number (got {info.world_size})"
            )
        restore_rng(state.rng_by_rank[info.rank])
    if stop_at is not None and not progress.step < stop_at <= cfg.schedule.steps:
        raise ValueError(
            f"--stop-at-step {stop_at} must lie after the run's step {progress.step} and at most at "
            f"its --steps {cfg.schedule.steps}"
        )

    sampler = ResumableDistributedSampler(len(dataset), info.world_size, info.rank, cfg.seed)
    per_epoch = batches_per_epoch(sampler, cfg.batch_size)
    if per_epoch == 0:
        raise ValueError(
            f"{len(dataset)} clips over {info.world_size} processes make no whole batch of "
            f"{cfg.batch_size}; lower the batch size or add data (repeats, synthetic clips)"
        )
    gaps = GapSchedule(cfg.data, epochs_for(cfg.schedule.steps, per_epoch))
    dataset.max_gap = gaps
    dataset.num_frames = FrameSchedule(cfg.data, epochs_for(cfg.schedule.steps, per_epoch))

    log = RunLog(cfg.output_dir) if info.is_main else None
    if info.is_main:
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(cfg.output_dir) / "train_config.json", json.dumps(cfg.to_dict(), indent=2))
    ckpt = checkpoint_path(cfg)
    written: Path | None = None
    kept: tuple[Path | None, int | None] = (Path(resume), progress.step) if resume else (None, None)
    bar = None
    if info.is_main and progress_bar:
        from tqdm import tqdm

        bar = tqdm(total=cfg.schedule.steps, initial=progress.step, desc="train", dynamic_ncols=True)

    def stop(what: str, step: int) -> None:
        if bar is not None:
            bar.close()
        if log is not None:
            log.close()
        raise TrainingDiverged(diverged_message(what, step, optimizer.param_groups[0]["lr"], *kept))

    def save() -> None:
        nonlocal written, kept
        distributed.sync_buffers(info, net)
        bad = non_finite_tensors(net)
        if bad:
            stop(f"the weights became non-finite ({bad[0]}{' and more' if len(bad) > 1 else ''})", progress.step)
        rng = distributed.gather_objects(info, capture_rng())
        if info.is_main:
            save_training_checkpoint(ckpt, net, optimizer, scheduler, scaler, progress, rng,
                                     cfg.to_dict(), processing_size=cfg.processing_size)
            written = ckpt
        kept = (ckpt, progress.step)

    window = {"loss": 0.0, "cross_entropy": 0.0, "dice": 0.0, "n": 0}
    window_start, last_loss = time.monotonic(), float("nan")
    last_save = time.monotonic()
    stop_time = started + cfg.schedule.max_minutes * 60 if cfg.schedule.max_minutes else None
    steps_this_call, stopped_early = 0, False
    ref_gen = torch.Generator()
    loader_gen = torch.Generator()  # keeps DataLoader seeding off the global RNG

    # One loader for the run; its workers persist across epochs. Re-forking them at every
    # epoch (25 steps) stalled an H200 run for ~3 s each time (40 vs 170 clips/s). Each
    # epoch's iteration reads the sampler afresh, after set_epoch; a clip depends only on
    # (seed, epoch, index), never on a worker's state.
    workers = cfg.data.num_workers
    loader = DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate_clips,
        num_workers=workers, drop_last=True, pin_memory=device.type == "cuda", generator=loader_gen,
        persistent_workers=workers > 0,
    )
    while progress.step < cfg.schedule.steps and not stopped_early:
        if progress.position >= per_epoch:
            progress.epoch, progress.position = progress.epoch + 1, 0
        sampler.set_epoch(progress.epoch, progress.position * cfg.batch_size)
        for batch in loader:
            batch = batch.to(device)
            ref_gen.manual_seed(cfg.seed * 1_000_003 + progress.step * 7919 + info.rank)
            refs = torch.tensor(reference_frames(batch.frames.shape[1], cfg.num_refs, ref_gen))
            with autocast:
                out = ddp(batch.frames, batch.first_masks, batch.valid, refs)
            terms = cycle_loss(out.agg_logits, out.prob, batch.first_masks, batch.valid)
            loss_value = float(terms.total.detach())
            if distributed.mean_across(info, [0.0 if math.isfinite(loss_value) else 1.0])[0] > 0:
                what = f"the loss became {loss_value}" if not math.isfinite(loss_value) else \
                    "the loss became non-finite on another process"
                stop(what, progress.step + 1)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms.total).backward()
            if cfg.optim.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            progress.step += 1
            progress.position += 1
            steps_this_call += 1
            for key in ("cross_entropy", "dice"):
                window[key] += float(getattr(terms, key).detach())
            window["loss"] += float(terms.total.detach())
            window["n"] += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(terms.total.detach()):.4f}", epoch=progress.epoch)

            if progress.step % cfg.log_every == 0 or progress.step == cfg.schedule.steps:
                n = window["n"]
                means = distributed.mean_across(
                    info, [window["loss"] / n, window["cross_entropy"] / n, window["dice"] / n]
                )
                last_loss = means[0]
                elapsed = time.monotonic() - window_start
                if log is not None:
                    log.train_row({
                        "step": progress.step, "epoch": progress.epoch, "loss": means[0],
                        "cross_entropy": means[1], "dice": means[2],
                        "lr": optimizer.param_groups[0]["lr"], "max_gap": gaps(progress.epoch),
                        "seconds": round(time.monotonic() - started, 1),
                        "clips_per_second": n * global_batch / max(elapsed, 1e-9),
                    })
                window = {"loss": 0.0, "cross_entropy": 0.0, "dice": 0.0, "n": 0}
                window_start = time.monotonic()

            if validate is not None and cfg.validation.enabled and (
                progress.step % cfg.validation.every_steps == 0
            ):
                # Every rank scores its share of the sequences, then the results are
                # gathered: no rank idles at a barrier under the collective timeout.
                rng = capture_rng()  # validation must not change the training randomness
                net.eval()
                shard = validate.shard(net, device, info.rank, info.world_size)
                net.train()
                restore_rng(rng)
                parts = distributed.gather_objects(info, shard)
                if info.is_main:
                    scores = validate.scores([s for part in parts for s in part])
                    log.validation_row(progress.step, scores)
                    if bar is not None:
                        bar.write(f"step {progress.step}: " + ", ".join(
                            f"{k} {v:.4f}" for k, v in sorted(scores.items()) if not k.startswith("J&F/")
                        ))
                distributed.barrier(info)

            now = time.monotonic()
            out_of_time = stop_time is not None and now >= stop_time
            due = (cfg.checkpoint_every and progress.step % cfg.checkpoint_every == 0) or (
                cfg.checkpoint_minutes and now - last_save >= cfg.checkpoint_minutes * 60
            )
            out_of_time, due = distributed.broadcast_flags(info, [out_of_time, bool(due)])
            stop_here = (stop_after is not None and steps_this_call >= stop_after) or (
                stop_at is not None and progress.step >= stop_at
            )
            done = progress.step >= cfg.schedule.steps or stop_here
            if due and not (done or out_of_time):
                save()
                last_save = time.monotonic()
            if done or out_of_time:
                stopped_early = progress.step < cfg.schedule.steps and (out_of_time or stop_here)
                break
    save()
    if bar is not None:
        bar.close()
    if log is not None:
        log.close()
    return TrainResult(progress.step, written, last_loss, stopped_early,
                       time.monotonic() - started, net)
