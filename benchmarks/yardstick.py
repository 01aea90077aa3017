"""The yardstick that ranks recipes: held-out DAVIS 2016 sequences in two halves, J&F with a
95 % bootstrap interval over sequences, a fast-motion slice and a copy-first-mask baseline.

    python benchmarks/yardstick.py split --dataset ../shared/data/DAVIS2016 --seed S --held-out 12 \\
        --out weights/yardstick.json
    python benchmarks/yardstick.py score --checkpoint CKPT [--half selection|confirmation|both] \\
        [--fast-motion 2,3|none] [--multi-object] [--mem-every N] [--top-k K] [--processing-size P] \\
        [--json REPORT]
    python benchmarks/yardstick.py score --compare CANDIDATE SHIPPED [...]   # paired difference

``split`` draws the held-out sequences once (``numpy.random.default_rng(seed).choice`` over
``ImageSets/2016/train.txt``; the first half of the draw is the *selection* half, the rest the
*confirmation* half) and refuses to replace an existing split. ``score`` segments each
held-out sequence with ``runtime.evaluation.evaluate_sequences`` (``stmae-eval``'s scoring, at
its default flags unless given), and again sub-sampled in time (every 2nd and 3rd frame: the
fast-motion slice), scores copying the first mask beside it, and writes everything to a JSON
report (atomic). ``--compare A B`` scores both (checkpoints, or reports written by ``score``)
and gives the paired difference A - B per sequence with a paired bootstrap interval: what
``weights/SHIPPING_RULE.md`` uses. Percentile bootstrap, 2000 resamples of the sequences,
seeded (0).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime.errors import InputError  # noqa: E402
from runtime.mem_interval import AUTO, parse_mem_every  # noqa: E402
from runtime.evaluation import read_split  # noqa: E402
from runtime.io.frames import FrameFolder  # noqa: E402

PROG = "yardstick"
REPORT_TOOL = "benchmarks/yardstick.py"
DEFAULT_SPLIT = REPO / "weights" / "yardstick.json"
HALVES = ("selection", "confirmation")
RESAMPLES = 2000
BOOTSTRAP_SEED = 0
MIN_HELD_OUT = 10
# held out by v1-v3 (numpy.random.default_rng(2016).choice(30, 5, replace=False), weights/README.md)
V1_V3_HELD_OUT = ("car-turn", "elephant", "motocross-bumps", "surf", "train")


# ---------------------------------------------------------------- the split
def choose_split(names: list[str], seed: int, held_out: int) -> tuple[list[str], list[str]]:
    """(selection, confirmation), each sorted: ``held_out`` of ``names`` drawn by
    ``numpy.random.default_rng(seed).choice(len(names), held_out, replace=False)``; the first
    ``held_out // 2`` drawn are the selection half."""
    drawn = [names[i] for i in np.random.default_rng(seed).choice(len(names), held_out, replace=False)]
    half = held_out // 2
    return sorted(drawn[:half]), sorted(drawn[half:])


def split_record(names: list[str], seed: int, held_out: int, resolution: str, dataset: str, command: str) -> dict:
    """The record ``split`` writes (weights/yardstick.json); names: ImageSets/2016/train.txt."""
    if not MIN_HELD_OUT <= held_out <= len(names) - 5:
        raise InputError(f"--held-out {held_out}: hold out {MIN_HELD_OUT}..{len(names) - 5} of the "
                         f"{len(names)} train sequences (at least 5 must stay for training)")
    selection, confirmation = choose_split(names, seed, held_out)
    seen_by_v3 = sorted(set(selection + confirmation) - set(V1_V3_HELD_OUT))
    return {
        "created": datetime.date.today().isoformat(),
        "seed": seed,
        "command": command,
        "method": "numpy.random.default_rng(seed).choice(len(names), held_out, replace=False) over the "
                  "names of ImageSets/2016/train.txt in file order; the first held_out // 2 drawn are the "
                  "selection half, the rest the confirmation half (each listed sorted)",
        "dataset": dataset,
        "resolution": resolution,
        "train_sequences": len(names),
        "selection": selection,
        "confirmation": confirmation,
        "v1_v3_held_out": list(V1_V3_HELD_OUT),
        "trained_on_by_v1_v3": seen_by_v3,
        "note": "Choose recipes, snapshots and test-time flags on the selection half only; score the "
                "confirmation half once per candidate, for the shipping rule (weights/SHIPPING_RULE.md). "
                "v1-v3 trained on the held-out sequences listed in trained_on_by_v1_v3: scores of v3 on "
                "them are inflated, so a comparison against v3 there favours v3.",
    }


def load_split(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--split {path} does not exist; make one with 'yardstick.py split'")
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
        assert all(isinstance(split[h], list) and split[h] for h in HALVES) and split["resolution"]
    except (ValueError, KeyError, AssertionError, TypeError, UnicodeDecodeError):
        raise InputError(f"--split {path} is not a split written by 'yardstick.py split'") from None
    return split


def held_out_sequences(split: dict) -> list[str]:
    """Every sequence the split holds out (both halves): never to be trained on."""
    return sorted(set(split["selection"]) | set(split["confirmation"]))


# ---------------------------------------------------------------- statistics
def bootstrap_interval(values, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one per sequence): the
    means of ``resamples`` resamples of the sequences with replacement, drawn by
    ``numpy.random.default_rng(seed)``. For a paired difference pass the per-sequence
    differences (the pairs are resampled together)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("bootstrap_interval needs a non-empty list of per-sequence values")
    picks = np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))
    means = values[picks].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def summary(per_sequence: dict[str, dict]) -> dict:
    """Mean J, F, J&F over sequences (DAVIS 2016: one object each, so this is stmae-eval's
    J&F) and the bootstrap interval of the J&F mean."""
    jf = [s["JF"] for s in per_sequence.values()]
    lo, hi = bootstrap_interval(jf)
    return {"JF": float(np.mean(jf)), "J": float(np.mean([s["J"] for s in per_sequence.values()])),
            "F": float(np.mean([s["F"] for s in per_sequence.values()])), "ci95": [lo, hi],
            "per_sequence": per_sequence}


def paired(a: dict[str, dict], b: dict[str, dict]) -> dict:
    """Paired difference a - b of per-sequence J&F, with its paired bootstrap interval."""
    if sorted(a) != sorted(b):
        raise InputError(f"the two scores cover different sequences ({sorted(a)} vs {sorted(b)})")
    diff = {name: a[name]["JF"] - b[name]["JF"] for name in sorted(a)}
    lo, hi = bootstrap_interval(list(diff.values()))
    return {"JF": float(np.mean(list(diff.values()))), "ci95": [lo, hi], "per_sequence": diff}


# ---------------------------------------------------------------- the fast-motion slice
def fast_motion_frames(names: list[str], stride: int) -> list[str]:
    """Frames kept when a clip is sub-sampled in time: the first, then every ``stride``-th."""
    return list(names[::stride])


def strided_view(root: Path, resolution: str, sequences: list[str], stride: int, into: Path) -> Path:
    """A DAVIS-layout folder under ``into`` whose sequences hold every ``stride``-th frame and
    annotation of ``root``'s (links, or copies where links cannot be made). Returns its root."""
    view = into / f"stride{stride}"
    for name in sequences:
        frames = FrameFolder(root / "JPEGImages" / resolution / name)
        for kind, paths in (("JPEGImages", {p.stem: p for p in frames.paths}),
                            ("Annotations", {n: root / "Annotations" / resolution / name / f"{n}.png"
                                             for n in frames.names})):
            folder = view / kind / resolution / name
            folder.mkdir(parents=True)
            for frame in fast_motion_frames(frames.names, stride):
                source = paths[frame]
                try:
                    os.symlink(source.resolve(), folder / source.name)
                except OSError:
                    shutil.copyfile(source, folder / source.name)
    return view


# ---------------------------------------------------------------- scoring
def _row(result) -> dict:
    return {"J": result.J, "F": result.F, "JF": result.JF, "frames": result.frames,
            "seconds": round(result.seconds, 3)}


def copy_first_mask(root: Path, resolution: str, sequences: list[str]) -> dict[str, dict]:
    """Per-sequence scores of copying the first annotation to every frame."""
    from runtime.io.mask_io import read_mask
    from runtime.sequence_scores import score_sequence

    rows = {}
    for name in sequences:
        gt = root / "Annotations" / resolution / name
        truths = [read_mask(gt / f"{n}.png")[0] for n in FrameFolder(root / "JPEGImages" / resolution / name).names]
        rows[name] = _row(score_sequence(name, [truths[0]] * len(truths), truths, 0.0))
    return rows


def segment_and_score(backend, root: Path, resolution: str, sequences: list[str], config) -> dict[str, dict]:
    """Per-sequence scores of ``backend`` through runtime.evaluation (stmae-eval's loop)."""
    from runtime.evaluation import evaluate_sequences

    result = evaluate_sequences(backend, root, sequences, resolution, None, config)
    return {s.name: _row(s) for s in result.sequences}


def multi_object(checkpoint: str, root: Path, resolution: str, sequences: list[str], size: int, device: str,
                 mem_every: int) -> dict:
    """benchmarks/multi_object_eval.py on these sequences (its default 40 frames, 2 donors,
    seed 0; the size and memory interval of the run are passed, top-k is its default)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import multi_object_eval

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "multi.json"
        with contextlib.redirect_stdout(io.StringIO()):
            multi_object_eval.main(["--checkpoint", checkpoint, "--dataset", str(root), "--resolution", resolution,
                                    "--sequences", *sequences, "--size", str(size), "--device", device,
                                    "--mem-every", str(mem_every),
                                    "--json", str(out)])
        data = json.loads(out.read_text())
    return {"mean_JF": data["mean_JF"], "copy_first_mask_JF": data["copy_first_mask_JF"],
            "objects": data["objects"]}


def score_checkpoint(checkpoint: str, split: dict, root: Path, halves: list[str], strides: list[int],
                     flags: dict, device: str, with_multi_object: bool) -> dict:
    """Everything ``score`` reports for one checkpoint (see the module docstring)."""
    import torch

    from runtime.backends import create_backend
    from runtime.export_manifest import sha256_file

    size = _resolved_size(flags, checkpoint)
    config = _session_config(flags, size.size, checkpoint)
    if device == "cpu":
        torch.set_flush_denormal(True)  # as stmae-eval: denormals slow CPU convolutions
    backend = create_backend("torch", checkpoint=checkpoint, device=device)
    resolution = split["resolution"]
    started = time.monotonic()
    report = {"checkpoint": {"path": checkpoint, "sha256": sha256_file(checkpoint)},
              "flags": {"mem_every": config.mem_every, "top_k": config.top_k, "size": size.text(),
                        "resolution": resolution}, "halves": {}}
    with tempfile.TemporaryDirectory(prefix="yardstick-") as tmp:
        for half in halves:
            names = split[half]
            _note(f"{Path(checkpoint).name}: {half} half, {len(names)} sequences"
                  + (f", then every {' and every '.join(_nth(str(k)) for k in strides)} frame" if strides else ""))
            row = {"sequences": names,
                   "model": summary(segment_and_score(backend, root, resolution, names, config)),
                   "copy_first_mask": summary(copy_first_mask(root, resolution, names)), "fast_motion": {}}
            for stride in strides:
                view = strided_view(root, resolution, names, stride, Path(tmp) / half)
                row["fast_motion"][str(stride)] = {
                    "model": summary(segment_and_score(backend, view, resolution, names, config)),
                    "copy_first_mask": summary(copy_first_mask(view, resolution, names))}
            if strides:  # the slice: per sequence, the mean over the strides
                row["fast_motion"]["slice"] = {
                    who: summary(_mean_over_strides([row["fast_motion"][str(s)][who]["per_sequence"]
                                                     for s in strides]))
                    for who in ("model", "copy_first_mask")}
            if with_multi_object:
                row["multi_object"] = multi_object(checkpoint, root, resolution, names, size.size, device,
                                                   config.mem_every)
            report["halves"][half] = row
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    return report


def _resolved_size(flags: dict, checkpoint: str | None):
    """--processing-size, or for 'auto' the checkpoint's own (runtime.sizing)."""
    from runtime.sizing import resolve_size

    try:
        return resolve_size(flags["processing_size"], checkpoint=checkpoint)
    except InputError as exc:
        raise InputError(str(exc).replace("--size", "--processing-size", 1)) from None


def _session_config(flags: dict, size: int, checkpoint: str | None = None):
    """The runtime session's config from the test-time flags (``--mem-every auto``: the
    checkpoint's own, runtime.mem_interval); InputError names the flag."""
    from runtime.config import SessionConfig
    from runtime.mem_interval import resolve_mem_every

    every = resolve_mem_every(flags["mem_every"], checkpoint=checkpoint).every
    try:
        return SessionConfig(mem_every=every, top_k=flags["top_k"],
                             size=size)
    except ValueError as exc:
        raise InputError(str(exc).replace("mem_every", "--mem-every").replace("top_k", "--top-k")
                         .replace("size", "--processing-size", 1)) from None


def _note(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


def _mean_over_strides(rows: list[dict[str, dict]]) -> dict[str, dict]:
    return {name: {key: float(np.mean([r[name][key] for r in rows])) for key in ("J", "F", "JF")}
            for name in rows[0]}


def compare_reports(a: dict, b: dict, halves: list[str]) -> dict:
    """Paired differences a - b on each of ``halves`` both cover: J&F, and each fast-motion
    entry."""
    out = {}
    for half in [h for h in halves if h in a["halves"] and h in b["halves"]]:
        ra, rb = a["halves"][half], b["halves"][half]
        row = {"JF": paired(ra["model"]["per_sequence"], rb["model"]["per_sequence"]), "fast_motion": {}}
        for key in sorted(set(ra["fast_motion"]) & set(rb["fast_motion"])):
            row["fast_motion"][key] = paired(ra["fast_motion"][key]["model"]["per_sequence"],
                                             rb["fast_motion"][key]["model"]["per_sequence"])
        out[half] = row
    if not out:
        raise InputError(f"the two scores share no half of --half {'/'.join(halves)}; score both on it")
    return out


# ---------------------------------------------------------------- printing and the report
def _fmt(s: dict) -> str:
    return f"{s['JF']:.4f}  [{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}]"


def _nth(stride: str) -> str:
    return stride + {"1": "st", "2": "nd", "3": "rd"}.get(stride[-1] if stride[-2:-1] != "1" else "", "th")


def print_scores(name: str, report: dict) -> None:
    print(f"== {name}  ({report['flags']['size']}, mem every {report['flags']['mem_every']}, "
          f"top-k {report['flags']['top_k']}; J&F  [95 % bootstrap interval over sequences])")
    for half, row in report["halves"].items():
        print(f"{half:<13} {len(row['sequences'])} sequences   model {_fmt(row['model'])}   "
              f"copy first mask {_fmt(row['copy_first_mask'])}")
        for key, entry in row["fast_motion"].items():
            label = "fast motion (mean of strides)" if key == "slice" else f"every {_nth(key)} frame"
            print(f"{'':<13} {label:<30} model {_fmt(entry['model'])}   copy first mask {_fmt(entry['copy_first_mask'])}")
        if "multi_object" in row:
            mo = row["multi_object"]
            print(f"{'':<13} multi-object ({len(mo['objects'])} objects)    model {mo['mean_JF']:.4f}   "
                  f"copy first mask {mo['copy_first_mask_JF']:.4f}")


def print_comparison(a: str, b: str, comparison: dict) -> None:
    print(f"== paired difference  {a}  minus  {b}  (J&F, [95 % paired bootstrap interval])")
    for half, row in comparison.items():
        print(f"{half:<13} J&F {row['JF']['JF']:+.4f}  [{row['JF']['ci95'][0]:+.4f}, {row['JF']['ci95'][1]:+.4f}]")
        for key, d in row["fast_motion"].items():
            label = "fast motion slice" if key == "slice" else f"every {_nth(key)} frame"
            print(f"{'':<13} {label:<20} {d['JF']:+.4f}  [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]")


def _is_report(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("tool") == REPORT_TOOL
    except (OSError, ValueError, AttributeError):
        return False


def check_report_path(out: Path, inputs: dict, overwrite: bool) -> None:
    """The output gate for the report file: no alias of an input; an existing file replaced
    only with --overwrite and only if it is a yardstick report."""
    from runtime.errors import output_refusals_as_input_errors
    from runtime.io.gate import FILE, check_output

    with output_refusals_as_input_errors():
        check_output(out, "--json", inputs, tool=PROG, kind=FILE, earlier=[out] if out.exists() else [],
                     owned=_is_report(out), overwrite=overwrite, noun="a report", owner=REPORT_TOOL)


def _load_report(path: str, split_sha: str) -> dict:
    p = Path(path)
    if not _is_report(p):
        raise InputError(f"--compare {path}: not a report written by yardstick.py score")
    report = json.loads(p.read_text(encoding="utf-8"))
    if report["split"]["sha256"] != split_sha:
        raise InputError(f"--compare {path} was scored on another split than --split; score it again")
    return report


# ---------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split", help="draw the held-out sequences once (refuses to replace a split)")
    s.add_argument("--dataset", required=True, help="DAVIS 2016 root (ImageSets/2016/train.txt)")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--held-out", type=int, default=12, help=f"sequences held out (at least {MIN_HELD_OUT})")
    s.add_argument("--resolution", default="240p", help="JPEGImages/<resolution> scored (default 240p)")
    s.add_argument("--out", required=True, help="the split file to write, e.g. weights/yardstick.json")
    c = sub.add_parser("score", help="score checkpoints on the held-out halves")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--checkpoint")
    who.add_argument("--compare", nargs=2, metavar=("A", "B"),
                     help="paired difference A - B (checkpoints, or reports of 'score')")
    c.add_argument("--split", default=str(DEFAULT_SPLIT), help="the split file (default weights/yardstick.json)")
    c.add_argument("--dataset", help="DAVIS root (default: the split's, relative to the repository)")
    c.add_argument("--half", choices=[*HALVES, "both"], default="selection",
                   help="which held-out half (default selection; confirm once, before shipping)")
    c.add_argument("--fast-motion", default="2,3", help="time strides of the fast-motion slice, or 'none' (default 2,3)")
    c.add_argument("--multi-object", action="store_true", help="also run benchmarks/multi_object_eval.py on the half")
    c.add_argument("--mem-every", type=parse_mem_every, default=AUTO,
                   help="stmae-eval's --mem-every (default auto: the checkpoint's own, else 5)")
    c.add_argument("--top-k", type=int, default=None, help="stmae-eval's --top-k (default: its default)")
    c.add_argument("--processing-size", default="auto", help="stmae-eval's --size (default auto: the checkpoint's)")
    c.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    c.add_argument("--json", help="report to write (default runs/yardstick/<name>_<half>.json)")
    c.add_argument("--overwrite", action="store_true", help="replace --json if it is a yardstick report")
    return p


def _strides(text: str) -> list[int]:
    if text.strip().lower() == "none":
        return []
    try:
        strides = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        strides = []
    if not strides or any(s < 2 for s in strides):
        raise InputError(f"--fast-motion {text!r}: give strides >= 2 like 2,3, or 'none'")
    return strides


def run_split(args) -> int:
    from stmae.atomic import atomic_write_text

    out = Path(args.out)
    if out.exists():
        raise InputError(f"--out {out} exists: a split is drawn once, before training, and never redrawn; "
                         "keep it (or delete it yourself if it was never used)")
    if not (Path(args.dataset) / "JPEGImages" / args.resolution).is_dir():
        raise InputError(f"--dataset {args.dataset} has no JPEGImages/{args.resolution}")
    dataset = os.path.relpath(Path(args.dataset).resolve(), REPO)  # the default of 'score --dataset'
    command = (f"python benchmarks/yardstick.py split --dataset {dataset} --seed {args.seed} "
               f"--held-out {args.held_out} --resolution {args.resolution} --out {args.out}")
    record = split_record(read_split(args.dataset, "train", "2016"), args.seed, args.held_out, args.resolution,
                          dataset, command)
    check_report_path(out, {"--dataset": args.dataset}, overwrite=False)
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"selection:    {', '.join(record['selection'])}")
    print(f"confirmation: {', '.join(record['confirmation'])}")
    print(f"trained on by v1-v3: {', '.join(record['trained_on_by_v1_v3']) or 'none'}")
    print(f"wrote {out}")
    return 0


def run_score(args) -> int:
    from runtime.bench.environment import environment_block
    from runtime.config import DEFAULT_TOP_K
    from runtime.export_manifest import sha256_file
    from runtime.sizing import parse_size
    from stmae.atomic import atomic_write_text

    split = load_split(args.split)
    root = Path(args.dataset) if args.dataset else (REPO / split["dataset"])
    if not (root / "JPEGImages" / split["resolution"]).is_dir():
        raise InputError(f"--dataset {root} has no JPEGImages/{split['resolution']} (give --dataset)")
    halves = list(HALVES) if args.half == "both" else [args.half]
    strides = _strides(args.fast_motion)
    flags = {"mem_every": args.mem_every,
             "top_k": DEFAULT_TOP_K if args.top_k is None else args.top_k,
             "processing_size": parse_size(args.processing_size)}
    _session_config(flags, _resolved_size(flags, None).size)  # bad flags: refused before anything is written
    if args.multi_object and any(len(split[h]) < 3 for h in halves):
        raise InputError("--multi-object needs at least 3 sequences per half (a base and 2 donors)")
    models = [args.checkpoint] if args.checkpoint else list(args.compare)
    for m in models:
        if not Path(m).is_file():
            raise InputError(f"{m} does not exist")
    name = "_vs_".join(Path(m).stem for m in models)
    out = Path(args.json) if args.json else REPO / "runs" / "yardstick" / f"{name}_{args.half}.json"
    if not args.json:
        out.parent.mkdir(parents=True, exist_ok=True)
    inputs = {"--split": args.split, "--dataset": root, **{f"model {i + 1}": m for i, m in enumerate(models)}}
    check_report_path(out, inputs, args.overwrite)
    device = args.device or ("cuda" if __import__("torch").cuda.is_available() else "cpu")
    split_sha = sha256_file(args.split)
    started = time.monotonic()
    scored = []
    for m in models:
        if m.endswith(".json"):
            scored.append(_load_report(m, split_sha))
        else:
            scored.append(score_checkpoint(m, split, root, halves, strides, flags, device, args.multi_object))
        print_scores(m, scored[-1])
    report = {"tool": REPORT_TOOL, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python", "benchmarks/yardstick.py", *args.argv]),
              "split": {"path": args.split, "sha256": split_sha, "seed": split.get("seed")},
              "dataset": str(root), "device": device, "hardware": environment_block(),
              "bootstrap": {"resamples": RESAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95, "method": "percentile"},
              "wall_seconds": round(time.monotonic() - started, 1)}
    if args.checkpoint:
        report.update(scored[0] | {"wall_seconds": report["wall_seconds"]})
    else:
        report["scores"] = {m: s for m, s in zip(models, scored)}
        report["compare"] = {"a": models[0], "b": models[1], "halves": compare_reports(*scored, halves)}
        print_comparison(*models, report["compare"]["halves"])
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}  ({report['wall_seconds']:.0f} s)")
    return 0


def main(argv=None) -> int:
    from runtime.cli import _run  # one line on stderr and status 2 for bad input, 1 otherwise

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return _run(PROG, lambda: run_split(args) if args.command == "split" else run_score(args))


if __name__ == "__main__":
    sys.exit(main())
