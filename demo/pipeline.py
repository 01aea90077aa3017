"""The demo pipeline: checkpoint -> cached ONNX export -> ONNX Runtime session over a clip
-> masks, overlay video, contact sheet, report (J&F against the clip's exact masks, or
against your video's annotations with ``gt``: :mod:`demo.ground_truth`).

The synthetic clip is made at the network's own resolution (the checkpoint's
``processing_size``; 240 for the shipped model) in the 'scene' style. Every file the demo
writes is listed in its ``report.json``; a new run first removes the files the previous
run's report lists (and nothing else), so old and new outputs never mix."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from runtime.backends.factory import create_backend
from runtime.bench.stats import StageTimer
from runtime.config import MAX_SIZE, SessionConfig
from runtime.export_manifest import sha256_file
from runtime.fast_path import cached_export
from runtime.io.frames import open_frames
from runtime.io.mask_io import read_mask, write_mask
from runtime.io.overlay import OverlayWriter
from runtime.metrics import evaluate_objects
from runtime.engine.session import VideoSession
from runtime.mem_interval import resolve_mem_every
from runtime.sizing import AUTO, resolve_size
from stmae import generate_clip
from runtime.io.gate import check_output, folder_entries
from stmae.atomic import atomic_write_text
from stmae.outputs import write_record, written_by

from export.config import ExportConfig
from export.exporter import run_export
from . import DEFAULT_SEED
from .contact_sheet import contact_sheet
from .ground_truth import ground_truth_paths, read_ground_truth

TOOL = "stmae-demo"
MAX_SYNTHETIC_FRAMES = 3000  # the demo keeps the clip in memory (240p: about 0.3 MB a frame)
# The trained small checkpoint shipped in the repository's weights/ folder.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_WEIGHTS = "stmae_lite_davis240_v4.pth"


def default_checkpoint() -> Path:
    path = WEIGHTS_DIR / DEFAULT_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"the trained checkpoint {path} is not there (it ships in the repository's weights/ "
            f"folder; from an installed copy without it, pass --checkpoint FILE)"
        )
    return path


@dataclass(frozen=True)
class DemoConfig:
    """out_dir: where everything goes; checkpoint: None = the shipped trained weights;
    input/mask: real frames (folder or video) and the first mask, or None for the synthetic
    clip (``frames`` frames, shorter side ``size``, 16:9, ``objects`` objects crossing, one
    occluded for a while); gt: with ``input``, a folder holding every frame's annotation
    (:mod:`demo.ground_truth`; scored with J&F); size: shorter side processed and of the
    synthetic clip (None: the checkpoint's processing size, else 480); backend: 'onnxruntime'
    (exports, cached) or 'torch'; precision: the export's precision; device: 'cpu' or 'cuda'."""

    out_dir: Path
    checkpoint: Path | None = None
    input: Path | None = None
    mask: Path | None = None
    gt: Path | None = None
    frames: int = 32
    size: int | None = None
    objects: int = 2
    seed: int = DEFAULT_SEED
    backend: str = "onnxruntime"
    precision: str = "fp32"
    device: str = "cpu"
    session: SessionConfig | None = None  # None: the checkpoint's recorded memory interval

    def __post_init__(self) -> None:
        if (self.input is None) != (self.mask is None):
            raise ValueError("--input and --mask go together: real frames need their first mask")
        if self.gt is not None and self.input is None:
            raise ValueError("--gt goes with --input (your video's annotations); the synthetic clip is scored "
                             "against its own exact masks")
        if self.frames < 3:
            raise ValueError(f"frames must be >= 3, got {self.frames}")
        if self.size is not None and not 32 <= self.size <= MAX_SIZE:
            raise ValueError(f"--size must be in 32..{MAX_SIZE}, got {self.size}")
        if self.input is None and self.frames > MAX_SYNTHETIC_FRAMES:
            raise ValueError(f"--frames must be at most {MAX_SYNTHETIC_FRAMES} for the synthetic clip, got {self.frames}")
        if not 2 <= self.objects <= 8:
            raise ValueError(f"objects must be in 2..8 (the demo shows objects crossing), got {self.objects}")
        if self.backend not in ("onnxruntime", "torch"):
            raise ValueError(f"backend must be onnxruntime or torch, got {self.backend!r}")


def check_demo_folder(out: Path, inputs: dict) -> None:
    """The output gate (:func:`runtime.io.gate.check_output`): ``out`` must not alias an
    input, and must be new, empty, or a folder stmae-demo made (its output record): a re-run
    replaces only the demo's own files there (:func:`clear_previous_outputs`)."""
    check_output(out, "--out", inputs, tool=TOOL, earlier=folder_entries(out), owned=written_by(out, TOOL))
    write_record(out, TOOL)


def _exporter(precision: str) -> Callable[[Path, Path, Callable[[str], None]], None]:
    """The exporter :func:`runtime.fast_path.cached_export` calls for this precision."""
    def export(checkpoint: Path, out_dir: Path, log: Callable[[str], None]) -> None:
        run_export(ExportConfig(checkpoint=checkpoint, out_dir=out_dir, precision=precision), log=log)

    return export


def _load_clip(config: DemoConfig, size: int) -> tuple[list[np.ndarray], list[np.ndarray] | None, np.ndarray, list[str], float]:
    """-> (frames (H, W, 3) uint8 RGB, ground-truth (H, W) uint8 label maps or None, first
    mask (H, W) uint8, frame names, fps). With ``config.gt``, a frame without its annotation
    is refused before any frame of a folder is decoded (a video's frames are named once
    decoded)."""
    if config.input is None:
        width = int(round(size * 16 / 9))
        clip = generate_clip(frames=config.frames, height=size, width=width, objects=config.objects,
                             seed=config.seed, style="scene")
        names = [f"{i:05d}" for i in range(config.frames)]
        return list(clip.frames), list(clip.masks), clip.masks[0], names, 24.0
    source = open_frames(config.input)
    if config.gt is not None and hasattr(source, "names"):
        ground_truth_paths(config.gt, source.names)
    frames, names = [], []
    for name, frame in source:
        frames.append(frame)
        names.append(name)
    first = read_mask(config.mask)[0]
    truth = None
    if config.gt is not None:
        truth = read_ground_truth(ground_truth_paths(config.gt, names), frames[0].shape[:2])
    fps = getattr(source, "fps", 24.0) or 24.0
    return frames, truth, first, names, float(fps)


REPORT_KIND = "stmae-demo report"


def clear_previous_outputs(out: Path) -> list[str]:
    """Remove the files the previous demo run in ``out`` wrote, as its report.json lists
    them (``written``: paths relative to ``out``), and nothing else. Returns what was
    removed. Raises ValueError when ``out/masks`` holds files no demo report accounts for
    (they are not the demo's to delete, and would mix with the new masks)."""
    record = out / "report.json"
    listed: list[str] = []
    if record.is_file():
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        if isinstance(data, dict) and data.get("kind") == REPORT_KIND:
            listed = [str(p) for p in data.get("written", []) if isinstance(p, str)]
    root = out.resolve()
    removed = []
    for rel in listed:
        path = (out / rel).resolve()
        if root in path.parents and path.is_file():
            path.unlink()
            removed.append(rel)
    masks = out / "masks"
    if masks.is_dir():
        foreign = sorted(p.name for p in masks.iterdir())
        if foreign:
            raise ValueError(
                f"{masks} holds files no earlier demo run recorded (e.g. {foreign[0]}); they would mix with the "
                f"new masks: choose another --out or remove them"
            )
    return removed


def run_demo(config: DemoConfig, log: Callable[[str], None] = print, progress: Callable[[int, int], None] | None = None) -> dict:
    """Run the demo; returns the report dict (also written as report.json / report.md)."""
    wall = time.perf_counter()
    out = config.out_dir
    checkpoint = Path(config.checkpoint) if config.checkpoint else default_checkpoint()
    check_demo_folder(out, {"--input": config.input, "--mask": config.mask, "--gt": config.gt,
                            "--checkpoint": checkpoint})
    sized = resolve_size(config.size if config.size is not None else AUTO, checkpoint=checkpoint)
    # Inputs are read and checked before the previous run's files are removed: a refused
    # run leaves them as they were.
    frames, truth, first_mask, names, fps = _load_clip(config, sized.size)
    removed = clear_previous_outputs(out)
    if removed:
        log(f"removed {len(removed)} files of the previous demo run in {out}")
    # Record what this run will write before writing it, so that an interrupted run is
    # cleared by the next one too.
    planned = [f"masks/{n}.png" for n in names] + ["overlay.webm", "contact_sheet.png", "report.md", "report.json"]
    atomic_write_text(out / "report.json", json.dumps({"kind": REPORT_KIND, "status": "running", "written": planned}) + "\n")

    export_seconds, reused = 0.0, None
    if config.backend == "onnxruntime":
        start = time.perf_counter()  # the export cache is the segment command's (runtime.fast_path)
        export_dir, reused = cached_export(checkpoint, log, _exporter(config.precision), precision=config.precision)
        export_seconds = time.perf_counter() - start
        backend = create_backend("onnxruntime", export_dir=export_dir, device=config.device)
    else:
        backend = create_backend("torch", checkpoint=checkpoint, device=config.device)

    masks_dir = out / "masks"
    masks_dir.mkdir(exist_ok=True)
    written: list[str] = []
    timer = StageTimer(backend.device)
    schedule = asdict(config.session) if config.session is not None else {
        "mem_every": resolve_mem_every(AUTO, checkpoint=checkpoint).every}
    session = VideoSession(backend, SessionConfig(**{**schedule, "size": sized.size}), timer=timer)
    predictions, frame_seconds = [], []
    h, w = frames[0].shape[:2]
    overlay_path = out / "overlay.webm"
    with OverlayWriter(overlay_path, fps, (h, w)) as overlay:
        for i, (frame, name) in enumerate(zip(frames, names)):
            timer.begin_frame()
            start = time.perf_counter()
            labels = session.step(frame, first_mask if i == 0 else None).labels
            with timer.stage("encode"):
                write_mask(masks_dir / f"{name}.png", labels)
            written.append(f"masks/{name}.png")
            frame_seconds.append(time.perf_counter() - start)
            overlay.add(frame, labels)
            predictions.append(labels)
            if progress:
                progress(i + 1, len(frames))
    written.append(overlay_path.name)

    scores = None
    if truth is not None:
        objs = evaluate_objects(predictions, truth)
        scores = {
            "J&F": float(np.mean([o.JF for o in objs])),
            "J": float(np.mean([o.J for o in objs])),
            "F": float(np.mean([o.F for o in objs])),
            "per_object": {str(o.label): {"J": o.J, "F": o.F} for o in objs},
        }
    note = "" if scores is None else f"J&F {scores['J&F']:.3f} over {len(frames)} frames"
    shown = contact_sheet(frames, predictions, out / "contact_sheet.png", truth=truth, note=note)
    written += ["contact_sheet.png", "report.md", "report.json"]
    measured = frame_seconds[1:]  # frame 0 only encodes its key
    stages = timer.per_frame_summary(skip=1)
    report = {
        "kind": REPORT_KIND,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256_file(checkpoint),
        "backend": backend.name,
        "precision": getattr(backend, "precision", config.precision),
        "device": str(backend.device),
        "input": str(config.input) if config.input else
        f"synthetic scene clip (seed {config.seed}, {config.objects} objects, one passing behind another)",
        "ground_truth": None if truth is None else
        (str(config.gt) if config.gt is not None else "the synthetic clip's exact masks"),
        "frames": len(frames),
        "frame_size": [h, w],
        "processed_shorter_side": sized.size,
        "processed_size_source": sized.source,
        "mem_every": session.config.mem_every,
        "objects": len(session.object_labels),
        "export": None if reused is None else {"reused_cache": reused, "seconds": round(export_seconds, 2)},
        "fps_end_to_end": len(measured) / sum(measured),
        "stages_ms": stages,
        "stage_fps": {name: 1e3 / st["mean"] for name, st in stages.items()},
        "scores": scores,
        "contact_sheet_frames": shown,
        "files": {
            "masks": str(masks_dir),
            "overlay": str(overlay_path),
            "contact_sheet": str(out / "contact_sheet.png"),
            "report_md": str(out / "report.md"),
            "report_json": str(out / "report.json"),
        },
        "written": written,
        "wall_seconds": round(time.perf_counter() - wall, 2),
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.md", markdown(report))
    return report


def summary_lines(report: dict) -> list[str]:
    s = report["scores"]
    score = ("J&F n/a (no ground truth for this input: --gt DIR)" if s is None
             else f"J&F {s['J&F']:.4f}  J {s['J']:.4f}  F {s['F']:.4f}")
    export = report["export"]
    exp = "" if export is None else (" (export reused from cache)" if export["reused_cache"] else f" (exported in {export['seconds']:.1f} s)")
    n = report["objects"]
    return [
        f"{report['frames']} frames, {n} object{'' if n == 1 else 's'}, {report['frame_size'][1]}x{report['frame_size'][0]} "
        f"processed at {report['processed_shorter_side']} ({report['processed_size_source']}), "
        f"memory every {report['mem_every']}: {score}",
        f"{report['backend']} {report['precision']} on {report['device']}{exp}: {report['fps_end_to_end']:.1f} frames/s end to end",
        f"wall time {report['wall_seconds']:.1f} s; contact sheet: {report['files']['contact_sheet']}",
    ]


def markdown(report: dict) -> str:
    rows = "\n".join(
        f"| {stage} | {st['p50']:.2f} | {st['p90']:.2f} | {st['mean']:.2f} | {report['stage_fps'][stage]:.1f} |"
        for stage, st in report["stages_ms"].items()
    )
    return "\n".join([
        "# stmae-demo report", "",
        *[f"- {line}" for line in summary_lines(report)], "",
        f"Checkpoint: `{report['checkpoint']}` (sha256 {report['checkpoint_sha256'][:16]}...)", "",
        "| stage | p50 ms | p90 ms | mean ms | frames/s |", "|---|---|---|---|---|", rows, "",
        "![contact sheet](contact_sheet.png)", "",
    ])
