"""One session of the long run: find where the run is, train for the session's minutes in
chunks (a snapshot after each), keep the state where the next session finds it, and score
the new snapshots on the yardstick's selection half.

Where the run is, in order: ``<run_dir>/checkpoints/last.pth`` (``runs/long/``, git-ignored,
gone in a fresh checkout), or the committed state (``weights/long_run/state_*.pth``, see
:mod:`train.long_run.state_parts`), whichever has done more steps; else a new run starts
with :func:`recipe_argv` (from v3's weights or from scratch, chosen once with ``start``).
A resumed run keeps its own recorded config (train_config): only its time budget changes.
Every sequence held out by the yardstick split (both halves) must be in the run's
``--exclude``, resumed runs included, or nothing runs.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from stmae.atomic import atomic_write_text

from ..config import TrainConfig
from . import STARTS
from .state_parts import has_state, join_state_parts, save_state_parts, state_step

REPO = Path(__file__).resolve().parents[2]
V3_WEIGHTS = "weights/stmae_small_davis240_v3.pth"
LOG_FIELDS = ("date", "step", "session_train_minutes", "device", "hardware", "snapshot", "snapshot_sha256",
              "selection_JF", "selection_ci95_lo", "selection_ci95_hi", "fast_motion_JF", "copy_first_mask_JF",
              "report")


@dataclass(frozen=True)
class LongRunOptions:
    """minutes: training time of this session; snapshot_minutes: a snapshot (float16,
    model-only) every this many minutes; start: 'v3' or 'scratch' (a new run only);
    steps: the whole run's optimizer steps (a new run only; fixes the lr decay and the
    frame-gap curriculum for every later session); extra_args: more stmae-train flags for
    a new run (after the recipe's, so they win); score: score new snapshots on the
    selection half; device: stmae-train's --device for a new run."""

    minutes: float
    davis: str = "../shared/data/DAVIS2016"
    split: str = "weights/yardstick.json"
    run_dir: str = "runs/long"
    state_dir: str = "weights/long_run"
    snapshot_minutes: float = 30.0
    start: str | None = None
    steps: int = 20_000
    device: str = "auto"
    extra_args: tuple[str, ...] = ()
    score: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        if not self.minutes > 0:
            raise ValueError(f"--max-minutes must be > 0, got {self.minutes}")
        if not self.snapshot_minutes > 0:
            raise ValueError(f"--snapshot-minutes must be > 0, got {self.snapshot_minutes}")
        if self.start is not None and self.start not in STARTS:
            raise ValueError(f"--start must be one of {', '.join(STARTS)}, got {self.start!r}")


def held_out(split_path: str | Path) -> list[str]:
    """Both halves of the yardstick split (weights/yardstick.json)."""
    path = Path(split_path)
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
        names = sorted(set(split["selection"]) | set(split["confirmation"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--split {path} is not a yardstick split ({exc}); make one with "
                         "'python benchmarks/yardstick.py split'") from None
    if not names:
        raise ValueError(f"--split {path} holds out no sequence")
    return names


def recipe_argv(opts: LongRunOptions, exclude: list[str]) -> list[str]:
    """stmae-train flags of a new run: stage 4's mixture (region clips, composites,
    colour-breaking), 5-frame clips with larger gaps (6 -> 20 frames apart), composite
    objects that move faster (up to 0.35 of the shorter side per frame, bouncing off the
    edges), grow or shrink more (up to x2 or /2) and turn up to 30 degrees (against the
    fast motion v3 fails on; only runs started with this recipe; a resumed run keeps the
    settings it recorded, so runs started before keep the original paths), AdamW at 3e-4
    per batch of 16 (6e-4 at 32; the CPU's batch 4 gets 7.5e-5) from v3, or stage 1's
    2e-3 at 32 from scratch; the lr falls x0.1 for the last sixth of ``steps``."""
    start = ["--init-checkpoint", V3_WEIGHTS, "--lr", "6e-4"] if opts.start == "v3" else \
        ["--model", "small", "--lr", "2e-3"]
    return [*start, "--base-batch", "32", "--davis", opts.davis, "--davis-resolution", "240p",
            "--exclude", *exclude, "--repeats", "4", "--synthetic-clips", "20", "--composite-clips", "80",
            "--composite-objects", "2", "--composite-motion", "0.35", "--composite-scale", "1.0",
            "--composite-rotation", "30", "--max-objects", "3", "--region-clips", "100", "--hue-shift", "0.5",
            "--channel-shuffle", "0.3", "--grayscale", "0.1", "--frames", "5", "--crop", "192", "192",
            "--gap-start", "6", "--gap-end", "20", "--batch-size", "4", "--warmup", "50", "--grad-clip", "1.0",
            "--seed", "2612", "--device", opts.device, "--steps", str(opts.steps),
            "--checkpoint-every", "0", "--checkpoint-minutes", "10", "--log-every", "10",
            "--output", opts.run_dir, *opts.extra_args]


def new_config(opts: LongRunOptions, exclude: list[str]) -> TrainConfig:
    from ..cli import build_parser, config_from_args

    return config_from_args(build_parser().parse_args(recipe_argv(opts, exclude)))


@dataclass(frozen=True)
class Start:
    """kind: 'run' (runs/long's checkpoint), 'state' (the committed state) or 'new'."""

    kind: str
    step: int


def find_start(opts: LongRunOptions) -> Start:
    from ..loop import CHECKPOINT_NAME
    from ..state import load_training_checkpoint

    run_ckpt = Path(opts.run_dir) / "checkpoints" / CHECKPOINT_NAME
    run_step = load_training_checkpoint(run_ckpt).progress.step if run_ckpt.is_file() else -1
    committed = state_step(opts.state_dir) if has_state(opts.state_dir) else -1
    if run_step < 0 and committed < 0:
        return Start("new", 0)
    return Start("run", run_step) if run_step >= committed else Start("state", committed)


def check_excluded(cfg: TrainConfig, exclude: list[str]) -> None:
    missing = sorted(set(exclude) - set(cfg.data.exclude_sequences))
    if missing:
        raise ValueError(f"the run would train on held-out sequences {missing}: its --exclude lacks them; "
                         "a run started before the split cannot be continued for the yardstick")


@dataclass(frozen=True)
class SessionResult:
    start: Start
    step: int
    snapshots: tuple[Path, ...]
    rows: tuple[dict, ...]
    state_bytes: int


def run_session(opts: LongRunOptions, train_fn: Callable | None = None,
                say: Callable[[str], None] = print) -> SessionResult:
    """Train for ``opts.minutes`` (see the module docstring). train_fn: train.loop.train
    (tests pass a spy)."""
    from ..export_weights import export_weights
    from ..loop import checkpoint_path, train

    train_fn = train_fn or train
    exclude = held_out(opts.split)
    start = find_start(opts)
    if start.kind == "new":
        if opts.start is None:
            raise ValueError("no run to continue: start one with --start v3 (fine-tune the shipped model) or "
                             "--start scratch (the held-out sequences never seen)")
        cfg = new_config(opts, exclude)
    else:
        if opts.start is not None or opts.extra_args:
            raise ValueError(f"a run exists (step {start.step}): it continues with its own recorded settings; "
                             "drop --start and the extra stmae-train flags")
        ckpt = Path(opts.run_dir) / "checkpoints" / "last.pth"
        if start.kind == "state":
            join_state_parts(opts.state_dir, ckpt)
            say(f"long run: restored step {start.step} from {opts.state_dir} into {ckpt}")
        from ..state import load_training_checkpoint

        cfg = TrainConfig.from_dict(load_training_checkpoint(ckpt).train_config)
        cfg = replace(cfg, output_dir=opts.run_dir)
    check_excluded(cfg, exclude)
    say(f"long run: {'new run (' + str(opts.start) + ')' if start.kind == 'new' else 'resuming at step ' + str(start.step)}"
        f", {opts.minutes:g} min, excluding {len(exclude)} held-out sequences")
    started, snapshots, step = time.monotonic(), [], start.step
    snap_dir = Path(opts.run_dir) / "snapshots"
    while True:  # at least one chunk, each of at least one step
        left = max(opts.minutes - (time.monotonic() - started) / 60, 0.01)
        chunk = replace(cfg, schedule=replace(cfg.schedule, max_minutes=min(opts.snapshot_minutes, left)))
        ckpt = checkpoint_path(chunk)
        result = train_fn(chunk, resume=str(ckpt) if ckpt.is_file() else None, progress_bar=False,
                          resume_requested=True)
        if result.steps > step:
            step = result.steps
            snap_dir.mkdir(parents=True, exist_ok=True)
            snapshots.append(export_weights(ckpt, snap_dir / f"step{step:06d}.pth", overwrite=True).path)
            say(f"long run: step {step}, snapshot {snapshots[-1]}")
        if not result.stopped_early:
            say(f"long run: finished all {cfg.schedule.steps} steps")
            break
        if opts.minutes - (time.monotonic() - started) / 60 < 0.05:
            break
    state_bytes = 0
    if checkpoint_path(cfg).is_file():
        state_bytes = save_state_parts(checkpoint_path(cfg), opts.state_dir)
        say(f"long run: state of step {step} kept in {opts.state_dir} ({state_bytes / 1e6:.1f} MB, two files)")
    train_minutes = (time.monotonic() - started) / 60
    rows = tuple(score_snapshot(opts, s, train_minutes, cfg.device) for s in snapshots) if opts.score else ()
    if rows:
        append_log(Path(opts.state_dir) / "log.csv", rows)
    return SessionResult(start, step, tuple(snapshots), rows, state_bytes)


def score_snapshot(opts: LongRunOptions, snapshot: Path, train_minutes: float, device: str) -> dict:
    """Yardstick scores of one snapshot on the selection half (a separate process)."""
    from runtime.bench.environment import environment_block
    from runtime.export_manifest import sha256_file

    report = Path(opts.run_dir) / "scores" / f"{snapshot.stem}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(REPO / "benchmarks" / "yardstick.py"), "score", "--checkpoint", str(snapshot),
           "--half", "selection", "--split", opts.split, "--dataset", opts.davis, "--json", str(report), "--overwrite"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"scoring {snapshot} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    half = json.loads(report.read_text())["halves"]["selection"]
    env = environment_block()
    fast = half["fast_motion"].get("slice", {}).get("model", {}).get("JF")
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "step": int(snapshot.stem.removeprefix("step")), "session_train_minutes": round(train_minutes, 1),
            "device": device, "hardware": (env["gpu"] or {}).get("name") or f"{env['cpu_model']} ({platform.machine()})",
            "snapshot": str(snapshot), "snapshot_sha256": sha256_file(snapshot),
            "selection_JF": f"{half['model']['JF']:.4f}", "selection_ci95_lo": f"{half['model']['ci95'][0]:.4f}",
            "selection_ci95_hi": f"{half['model']['ci95'][1]:.4f}",
            "fast_motion_JF": "" if fast is None else f"{fast:.4f}",
            "copy_first_mask_JF": f"{half['copy_first_mask']['JF']:.4f}", "report": str(report)}


def append_log(path: Path, rows: tuple[dict, ...]) -> None:
    """Add rows to the long run's CSV log (rewritten atomically with the old rows first)."""
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS, lineterminator="\n")
    if not old:
        writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, old + buf.getvalue())
