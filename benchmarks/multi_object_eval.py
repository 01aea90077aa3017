"""Per-object J&F on composited multi-object clips with exact masks.

DAVIS 2016 has one object per video, so its J&F never shows whether a model keeps several
objects apart. This script builds one clip per base sequence: the base video's frames (its
object's ground truth is known in every frame), plus objects cut from the first frames of
other sequences of the same list, pasted along crossing paths (``stmae.composite``; exact
masks in every frame, occlusion by paste order). Each clip is segmented from its frame-0
mask with the runtime (``VideoSession``), and every object is scored with the DAVIS
protocol (first and last frames excluded). Copying the first mask to every frame is
scored beside it.

    python benchmarks/multi_object_eval.py --checkpoint weights/stmae_small_davis240_v3.pth \\
        --dataset ../shared/data/DAVIS2016 --resolution 240p \\
        --sequences car-turn elephant motocross-bumps surf train --json out/multi_object.json

Use held-out sequences only: the donors' first frames and every base frame are read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.backends import create_backend  # noqa: E402
from runtime.config import SessionConfig  # noqa: E402
from runtime.mem_interval import AUTO, parse_mem_every, resolve_mem_every  # noqa: E402
from runtime.io.frames import FrameFolder  # noqa: E402
from runtime.io.mask_io import read_mask  # noqa: E402
from runtime.metrics import evaluate_objects  # noqa: E402
from runtime.engine.session import VideoSession  # noqa: E402
from stmae.atomic import atomic_write_text  # noqa: E402
from stmae.composite import Donor, composite_clip  # noqa: E402


def load_sequence(root: Path, resolution: str, name: str, frames: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The first ``frames`` RGB frames and their (H, W) uint8 labels (objects 1..k)."""
    folder = FrameFolder(root / "JPEGImages" / resolution / name)
    images, labels = [], []
    for i, (frame_name, frame) in enumerate(folder):
        if i >= frames:
            break
        images.append(frame)
        mask, _ = read_mask(root / "Annotations" / resolution / name / f"{frame_name}.png")
        labels.append(np.where(mask == 255, 0, mask).astype(np.uint8))
    return images, labels


def build_clip(root: Path, resolution: str, base: str, donors: list[str], frames: int, seed: int):
    """(frames, per-frame exact labels, object names) of one composited clip."""
    images, base_gt = load_sequence(root, resolution, base, frames)
    donor_objects = []
    for name in donors:
        first, first_labels = load_sequence(root, resolution, name, 1)
        donor_objects.append(Donor(first[0], first_labels[0] > 0, name))
    clip = composite_clip(np.random.default_rng(seed), images, base_gt[0], donor_objects)
    truth = [np.where(clip.pasted_masks[t] > 0, clip.pasted_masks[t], base_gt[t]) for t in range(len(images))]
    names = [f"{base} (base)"] + list(clip.names)
    return list(clip.frames), truth, names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", required=True, help="DAVIS-layout root")
    p.add_argument("--resolution", default="240p")
    p.add_argument("--sequences", nargs="+", required=True, help="held-out sequences (bases and donors)")
    p.add_argument("--donors", type=int, default=2, help="pasted objects per clip")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--size", type=int, default=-1, help="runtime processing size (-1: as is)")
    p.add_argument("--mem-every", type=parse_mem_every, default=AUTO,
                   help="memory interval in frames (default auto: the checkpoint's own, else 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write the per-object scores here")
    args = p.parse_args(argv)
    if len(args.sequences) < args.donors + 1:
        p.error(f"--sequences needs at least {args.donors + 1} names (a base and {args.donors} donors)")

    root = Path(args.dataset)
    every = resolve_mem_every(args.mem_every, checkpoint=args.checkpoint).every
    backend = create_backend("torch", checkpoint=args.checkpoint, device=args.device)
    rows = []
    for i, base in enumerate(args.sequences):
        others = args.sequences[i + 1:] + args.sequences[:i]
        frames, truth, names = build_clip(root, args.resolution, base, others[: args.donors], args.frames, args.seed + i)
        session = VideoSession(backend, SessionConfig(size=args.size, mem_every=every))
        predictions = [session.step(f, truth[0] if t == 0 else None).labels for t, f in enumerate(frames)]
        model = evaluate_objects(predictions, truth)
        copy = evaluate_objects([truth[0]] * len(truth), truth)
        for score, baseline in zip(model, copy):
            rows.append({"clip": base, "object": names[score.label - 1], "J": score.J, "F": score.F,
                         "J&F": score.JF, "copy_first_mask_J&F": baseline.JF})
    print(f"{'clip':<18} {'object':<26} {'J&F':>6} {'J':>6} {'F':>6} {'copy-first':>10}")
    for r in rows:
        print(f"{r['clip']:<18} {r['object']:<26} {r['J&F']:6.3f} {r['J']:6.3f} {r['F']:6.3f} {r['copy_first_mask_J&F']:10.3f}")
    mean = float(np.mean([r["J&F"] for r in rows]))
    copy_mean = float(np.mean([r["copy_first_mask_J&F"] for r in rows]))
    print(f"mean over {len(rows)} objects: J&F {mean:.4f} (copy first mask {copy_mean:.4f})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps({"objects": rows, "mean_JF": mean, "copy_first_mask_JF": copy_mean,
                                                 "args": vars(args)}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
