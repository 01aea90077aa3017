"""Plot a training run's learning curve: training loss and held-out J&F against the step.

    python benchmarks/learning_curve.py --log runs/stage3/train_log.csv \\
        --eval 586=runs/ev/step640 --eval 1016=runs/ev/step1070 ... \\
        --baseline "copy first mask=0.2283" --baseline "old model=0.3946" --out curve.png

``--log``: the run's ``train_log.csv`` (a resumed run appends rows again from its
checkpoint's step; the last row written for a step wins). ``--eval STEP=DIR``: an
``stmae-eval --out DIR`` of the checkpoint taken at STEP; its ``results.csv`` gives the
mean J&F over the sequences. Prints the table it plots, and writes the PNG atomically.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stmae.atomic import AtomicPath  # noqa: E402


def read_log(path: Path) -> dict[int, tuple[float, float]]:
    """step -> (loss, lr); the last row written for a step wins (resumes re-log steps)."""
    rows: dict[int, tuple[float, float]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            rows[int(row["step"])] = (float(row["loss"]), float(row["lr"]))
    return dict(sorted(rows.items()))


def mean_jf(folder: Path) -> float:
    with (folder / "results.csv").open(newline="") as f:
        scores = [float(row["J&F"]) for row in csv.DictReader(f)]
    if not scores:
        raise ValueError(f"{folder}/results.csv has no sequences")
    return sum(scores) / len(scores)


def smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log", required=True, type=Path)
    p.add_argument("--eval", action="append", default=[], metavar="STEP=DIR")
    p.add_argument("--baseline", action="append", default=[], metavar="NAME=J&F")
    p.add_argument("--title", default="")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    try:
        log = read_log(args.log)
        evals = sorted((int(s), mean_jf(Path(d))) for s, d in (e.split("=", 1) for e in args.eval))
        baselines = [(n, float(v)) for n, v in (b.rsplit("=", 1) for b in args.baseline)]
    except (OSError, ValueError, KeyError) as exc:
        print(f"learning_curve: error: {exc}", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = list(log)
    losses = [log[s][0] for s in steps]
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    ax.plot(steps, losses, color="0.75", lw=0.8, label="training loss (every logged step)")
    ax.plot(steps, smooth(losses, 10), color="0.25", lw=1.5, label="training loss (mean of 10 rows)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    right = ax.twinx()
    if evals:
        right.plot([s for s, _ in evals], [v for _, v in evals], "o-", color="tab:red", label="held-out J&F")
    for (name, value), style in zip(baselines, ["--", ":", "-."]):
        right.axhline(value, color="tab:blue", ls=style, lw=1, label=name)
    right.set_ylabel("held-out J&F")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="best")
    if args.title:
        ax.set_title(args.title, fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with AtomicPath(args.out) as target:
        fig.savefig(target.tmp, format="png")
    plt.close(fig)
    for step, value in evals:
        print(f"step {step:6d}  held-out J&F {value:.4f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
