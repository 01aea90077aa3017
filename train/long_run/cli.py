"""``python -m train.long_run``: one session of the long run (see :mod:`train.long_run.core`).

Exits with status 2 and one line for bad input, 1 when training or scoring fails."""

from __future__ import annotations

import argparse
import sys

from . import STARTS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.long_run",
        description="Continue the long training run for --max-minutes (from runs/long/, else from the state "
        "committed under weights/long_run/, else a new run with --start), never on the yardstick's held-out "
        "sequences; keep its state under weights/long_run/ and score the new snapshots on the yardstick's "
        "selection half (weights/long_run/log.csv). Run it from the repository root. Flags after '--' go "
        "to stmae-train for a new run (e.g. -- --batch-size 16 --num-workers 8 on a GPU).",
    )
    p.add_argument("--max-minutes", type=float, required=True, help="training time of this session")
    p.add_argument("--start", choices=STARTS, help="a new run only: from v3's weights, or from scratch")
    p.add_argument("--steps", type=int, default=20_000, help="a new run only: the whole run's steps (default 20000)")
    p.add_argument("--snapshot-minutes", type=float, default=30.0, help="a snapshot every N minutes (default 30)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="a new run only")
    p.add_argument("--davis", default="../shared/data/DAVIS2016", help="DAVIS 2016 root")
    p.add_argument("--split", default="weights/yardstick.json", help="the yardstick split")
    p.add_argument("--run-dir", default="runs/long")
    p.add_argument("--state-dir", default="weights/long_run")
    p.add_argument("--no-score", action="store_true", help="do not score the snapshots")
    return p


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = build_parser().parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    prog = "train.long_run"
    try:
        from .core import LongRunOptions, run_session

        opts = LongRunOptions(minutes=args.max_minutes, davis=args.davis, split=args.split, run_dir=args.run_dir,
                              state_dir=args.state_dir, snapshot_minutes=args.snapshot_minutes, start=args.start,
                              steps=args.steps, device=args.device, extra_args=tuple(extra), score=not args.no_score)
        result = run_session(opts)
    except (ValueError, FileNotFoundError) as exc:  # CheckpointError is a ValueError
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:  # TrainingDiverged is a RuntimeError
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    for row in result.rows:
        print(f"step {row['step']}: selection J&F {row['selection_JF']} [{row['selection_ci95_lo']}, "
              f"{row['selection_ci95_hi']}], fast motion {row['fast_motion_JF']}")
    print(f"long run: at step {result.step}")
    return 0
