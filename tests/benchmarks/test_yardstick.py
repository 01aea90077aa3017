"""benchmarks/yardstick.py: the split is drawn once and deterministically, the bootstrap
interval is right on known inputs, the fast-motion slice keeps every k-th frame, and score
runs end to end on tiny DAVIS-like sequences (single and paired)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.io.mask_io import write_mask
from stmae import STMAE, generate_clip, preset, save_checkpoint

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "yardstick.py"
spec = importlib.util.spec_from_file_location("yardstick", SCRIPT)
yardstick = importlib.util.module_from_spec(spec)
spec.loader.exec_module(yardstick)

NAMES = [f"seq{i:02d}" for i in range(20)]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def names_only_dataset(root: Path) -> Path:
    (root / "JPEGImages" / "240p").mkdir(parents=True)
    (root / "ImageSets" / "2016").mkdir(parents=True)
    (root / "ImageSets" / "2016" / "train.txt").write_text("\n".join(NAMES) + "\n")
    return root


def tiny_davis(root: Path, names=("alpha", "beta"), frames=7) -> Path:
    for i, name in enumerate(names):
        clip = generate_clip(frames=frames, height=48, width=64, objects=1, seed=20 + i)
        jpg, ann = root / "JPEGImages" / "240p" / name, root / "Annotations" / "240p" / name
        jpg.mkdir(parents=True)
        ann.mkdir(parents=True)
        for t in range(frames):
            from PIL import Image

            Image.fromarray(clip.frames[t]).save(jpg / f"{t:05d}.jpg", quality=95)
            write_mask(ann / f"{t:05d}.png", clip.masks[t])
    return root


def test_split_is_deterministic_disjoint_and_never_redrawn(tmp_path, capsys):
    root = names_only_dataset(tmp_path / "davis")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    argv = ["split", "--dataset", str(root), "--seed", "7", "--held-out", "11"]
    assert yardstick.main(argv + ["--out", str(a)]) == 0
    assert yardstick.main(argv + ["--out", str(b)]) == 0
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert (ra["selection"], ra["confirmation"]) == (rb["selection"], rb["confirmation"])
    drawn = [NAMES[i] for i in np.random.default_rng(7).choice(len(NAMES), 11, replace=False)]
    assert ra["selection"] == sorted(drawn[:5]) and ra["confirmation"] == sorted(drawn[5:])
    assert ra["seed"] == 7 and "--seed 7 --held-out 11" in ra["command"]
    other = yardstick.choose_split(NAMES, 8, 11)
    assert other != (ra["selection"], ra["confirmation"])  # the seed matters
    before = a.read_bytes()
    capsys.readouterr()
    assert yardstick.main(["split", "--dataset", str(root), "--seed", "8", "--held-out", "11", "--out", str(a)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("yardstick: error:") and "never redrawn" in err[0]
    assert a.read_bytes() == before
    assert yardstick.main(argv[:-1] + ["9", "--out", str(tmp_path / "c.json")]) == 2  # fewer than 10
    assert not (tmp_path / "c.json").exists()


def test_bootstrap_interval_on_known_inputs():
    assert yardstick.bootstrap_interval([0.4] * 6) == pytest.approx((0.4, 0.4))
    # two values: resample means are 0, 0.5, 1 with odds 1/4, 1/2, 1/4 -> the 2.5/97.5 percentiles are 0 and 1
    assert yardstick.bootstrap_interval([0.0, 1.0]) == (0.0, 1.0)
    values = np.array([0.1, 0.5, 0.2, 0.9, 0.3])
    picks = np.random.default_rng(0).integers(0, 5, size=(2000, 5))
    expected = np.percentile(values[picks].mean(axis=1), [2.5, 97.5])
    assert yardstick.bootstrap_interval(values) == pytest.approx(tuple(expected))
    lo, hi = yardstick.bootstrap_interval(values)
    assert lo < values.mean() < hi and hi - lo > 0.1
    # paired: a constant shift of every sequence is a zero-width interval at the shift
    a = {f"s{i}": {"JF": v} for i, v in enumerate(values)}
    b = {f"s{i}": {"JF": v - 0.05} for i, v in enumerate(values)}
    d = yardstick.paired(a, b)
    assert d["JF"] == pytest.approx(0.05) and d["ci95"] == pytest.approx([0.05, 0.05])


def test_fast_motion_keeps_the_first_and_every_kth_frame(tmp_path):
    names = [f"{t:05d}" for t in range(8)]
    assert yardstick.fast_motion_frames(names, 2) == ["00000", "00002", "00004", "00006"]
    assert yardstick.fast_motion_frames(names, 3) == ["00000", "00003", "00006"]
    root = tiny_davis(tmp_path / "davis", names=("alpha",))
    view = yardstick.strided_view(root, "240p", ["alpha"], 3, tmp_path / "view")
    for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
        got = sorted(p.name for p in (view / kind / "240p" / "alpha").iterdir())
        assert got == [f"{t:05d}.{ext}" for t in (0, 3, 6)]
    assert (view / "JPEGImages" / "240p" / "alpha" / "00003.jpg").read_bytes() == \
        (root / "JPEGImages" / "240p" / "alpha" / "00003.jpg").read_bytes()


def test_score_end_to_end_and_paired_compare(tmp_path, seeded_small_checkpoint, capsys):
    root = tiny_davis(tmp_path / "davis")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"selection": ["alpha"], "confirmation": ["beta"], "resolution": "240p",
                                 "dataset": str(root)}))
    report_path = tmp_path / "r.json"
    common = ["--split", str(split), "--dataset", str(root), "--half", "both", "--device", "cpu",
              "--processing-size", "-1"]
    assert yardstick.main(["score", "--checkpoint", str(seeded_small_checkpoint), *common,
                           "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["tool"] == yardstick.REPORT_TOOL and len(report["checkpoint"]["sha256"]) == 64
    assert report["hardware"]["cpu_model"] and report["flags"]["mem_every"] == 5
    for half, name in (("selection", "alpha"), ("confirmation", "beta")):
        row = report["halves"][half]
        assert list(row["model"]["per_sequence"]) == [name]
        assert row["model"]["per_sequence"][name]["frames"] == 7
        assert row["fast_motion"]["2"]["model"]["per_sequence"][name]["frames"] == 4
        assert row["fast_motion"]["3"]["model"]["per_sequence"][name]["frames"] == 3
        slice_jf = row["fast_motion"]["slice"]["model"]["per_sequence"][name]["JF"]
        assert slice_jf == pytest.approx((row["fast_motion"]["2"]["model"]["JF"]
                                          + row["fast_motion"]["3"]["model"]["JF"]) / 2)
        # copying the first mask is scored as runtime.metrics does it
        from runtime.io.mask_io import read_mask
        from runtime.metrics import evaluate_objects

        ann = root / "Annotations" / "240p" / name
        truths = [read_mask(ann / f"{t:05d}.png")[0] for t in range(7)]
        assert row["copy_first_mask"]["JF"] == pytest.approx(evaluate_objects([truths[0]] * 7, truths)[0].JF)
    # a second run refuses to replace the report without --overwrite
    capsys.readouterr()
    assert yardstick.main(["score", "--checkpoint", str(seeded_small_checkpoint), *common,
                           "--json", str(report_path), "--fast-motion", "none"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # paired: a report against the same checkpoint scored again differs by exactly 0
    cmp_path = tmp_path / "cmp.json"
    assert yardstick.main(["score", "--compare", str(report_path), str(seeded_small_checkpoint), *common,
                           "--json", str(cmp_path)]) == 0
    cmp = json.loads(cmp_path.read_text())["compare"]["halves"]
    assert cmp["selection"]["JF"]["JF"] == 0.0 and cmp["selection"]["JF"]["ci95"] == [0.0, 0.0]
    assert cmp["confirmation"]["fast_motion"]["slice"]["per_sequence"] == {"beta": 0.0}
    assert "paired difference" in capsys.readouterr().out


# ---------------------------------------------------------------- the long run (train.long_run)
TINY = ["--crop", "32", "48", "--frames", "3", "--batch-size", "2", "--refs", "2", "--repeats", "1",
        "--synthetic-clips", "2", "--composite-clips", "0", "--region-clips", "0", "--gap-start", "1",
        "--gap-end", "2", "--device", "cpu", "--warmup", "1", "--checkpoint-minutes", "0"]


def _long_run_setup(tmp_path):
    from tests.train.conftest import write_video_folder

    root = write_video_folder(tmp_path / "davis", {"alpha": 7, "beta": 7, "gamma": 7, "delta": 7},
                              corrupt_later_masks=False)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"selection": ["beta"], "confirmation": ["gamma"], "resolution": "240p"}))
    return root, split


def test_long_run_excludes_held_out_and_resumes_from_run_then_from_committed_state(tmp_path):
    import shutil

    from train.long_run.core import LongRunOptions, run_session
    from train.loop import train
    from train.state import load_training_checkpoint

    root, split = _long_run_setup(tmp_path)
    seen = []

    def spy(cfg, **kwargs):  # one step per call, so every session moves the run on
        seen.append(cfg)
        return train(cfg, stop_after=1, **kwargs)

    opts = dict(minutes=0.001, davis=str(root), split=str(split), run_dir=str(tmp_path / "runs" / "long"),
                state_dir=str(tmp_path / "weights" / "long_run"), steps=50, score=False)
    first = run_session(LongRunOptions(start="scratch", extra_args=tuple(TINY), **opts), train_fn=spy, say=lambda _: None)
    assert first.start.kind == "new" and first.step >= 1
    assert {"beta", "gamma"} <= set(seen[0].data.exclude_sequences)
    assert seen[0].init_checkpoint == "" and seen[0].schedule.steps == 50
    assert first.snapshots and first.snapshots[-1].name == f"step{first.step:06d}.pth"
    assert first.state_bytes > 0

    second = run_session(LongRunOptions(**opts), train_fn=spy, say=lambda _: None)  # runs/long is there
    assert (second.start.kind, second.start.step) == ("run", first.step) and second.step > first.step
    assert {"beta", "gamma"} <= set(seen[-1].data.exclude_sequences)

    shutil.rmtree(tmp_path / "runs")  # a fresh checkout: only the committed state is left
    third = run_session(LongRunOptions(**opts), train_fn=spy, say=lambda _: None)
    assert (third.start.kind, third.start.step) == ("state", second.step) and third.step > second.step
    assert {"beta", "gamma"} <= set(seen[-1].data.exclude_sequences)
    saved = load_training_checkpoint(tmp_path / "runs" / "long" / "checkpoints" / "last.pth")
    assert saved.progress.step == third.step and saved.optimizer["state"]

    with pytest.raises(ValueError, match="drop --start"):  # a run exists: its own settings go on
        run_session(LongRunOptions(start="v3", **opts), train_fn=spy, say=lambda _: None)


def test_long_run_refuses_a_run_that_trains_on_held_out_sequences(tmp_path):
    from train.long_run.core import LongRunOptions, check_excluded, new_config

    root, split = _long_run_setup(tmp_path)
    opts = LongRunOptions(minutes=1, davis=str(root), split=str(split), run_dir=str(tmp_path / "run"),
                          start="v3", extra_args=tuple(TINY))
    cfg = new_config(opts, ["beta", "gamma"])
    assert cfg.init_checkpoint == "weights/stmae_small_davis240_v3.pth"
    assert cfg.optim.lr_for(16) == pytest.approx(3e-4) and cfg.data.num_frames == 3  # TINY wins over the recipe
    check_excluded(cfg, ["beta", "gamma"])
    with pytest.raises(ValueError, match=r"held-out sequences \['alpha'\]"):
        check_excluded(cfg, ["alpha", "beta"])


def test_state_parts_join_back_bit_for_bit(tmp_path):
    from train.long_run.state_parts import join_state_parts, save_state_parts
    from train.loop import checkpoint_path, train
    from tests.train.conftest import tiny_config, tiny_data

    cfg = tiny_config(tmp_path / "run", tiny_data(), steps=2)
    train(cfg, progress_bar=False)
    save_state_parts(checkpoint_path(cfg), tmp_path / "state")
    join_state_parts(tmp_path / "state", tmp_path / "joined.pth")
    a = torch.load(checkpoint_path(cfg), weights_only=True)
    b = torch.load(tmp_path / "joined.pth", weights_only=True)
    assert a.keys() == b.keys() and a["it"] == b["it"] == 2
    assert all(torch.equal(a["network"][k], b["network"][k]) for k in a["network"])
    for i, s in a["optimizer"]["state"].items():
        assert all(torch.equal(s[k], b["optimizer"]["state"][i][k]) for k in s if torch.is_tensor(s[k]))
    assert a["rng"][0]["torch"].equal(b["rng"][0]["torch"])


def test_multi_object_runs_the_multi_object_benchmark_on_the_half(tmp_path, seeded_small_checkpoint):
    root = tiny_davis(tmp_path / "davis", names=("alpha", "beta", "gamma"))
    got = yardstick.multi_object(str(seeded_small_checkpoint), root, "240p", ["alpha", "beta", "gamma"], -1, "cpu", 2)
    clips = {row["clip"] for row in got["objects"]}
    assert clips == {"alpha", "beta", "gamma"} and len(got["objects"]) >= 3
    assert got["mean_JF"] == pytest.approx(np.mean([row["J&F"] for row in got["objects"]]))
    assert got["copy_first_mask_JF"] == pytest.approx(np.mean([row["copy_first_mask_J&F"] for row in got["objects"]]))


def test_long_run_scores_its_snapshots_on_the_selection_half_into_the_log(tmp_path):
    import csv

    from train.long_run.core import LongRunOptions, run_session
    from train.loop import train

    root, split = _long_run_setup(tmp_path)
    state = tmp_path / "weights" / "long_run"
    opts = LongRunOptions(minutes=0.001, davis=str(root), split=str(split), run_dir=str(tmp_path / "runs" / "long"),
                          state_dir=str(state), steps=50, start="scratch", extra_args=tuple(TINY))
    done = run_session(opts, train_fn=lambda cfg, **kw: train(cfg, stop_after=1, **kw), say=lambda _: None)
    rows = list(csv.DictReader((state / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [done.step] and rows[0]["snapshot_sha256"]
    report = json.loads(Path(rows[0]["report"]).read_text())
    assert list(report["halves"]) == ["selection"]  # never the confirmation half
    assert list(report["halves"]["selection"]["model"]["per_sequence"]) == ["beta"]
    assert float(rows[0]["selection_JF"]) == pytest.approx(report["halves"]["selection"]["model"]["JF"], abs=1e-4)
    assert rows[0]["fast_motion_JF"]


def test_score_runs_a_checkpoint_at_its_recorded_memory_interval(tmp_path):
    """--mem-every auto (the default) is the checkpoint's own, as stmae-eval's; a flag wins."""
    torch.manual_seed(0)
    checkpoint = tmp_path / "every2.pth"
    save_checkpoint(checkpoint, STMAE(preset("small")), mem_every=2)
    root = tiny_davis(tmp_path / "davis", names=("alpha",))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"selection": ["alpha"], "confirmation": ["alpha"], "resolution": "240p",
                                 "dataset": str(root)}))
    common = ["score", "--checkpoint", str(checkpoint), "--split", str(split), "--device", "cpu",
              "--processing-size", "-1", "--fast-motion", "none"]
    for extra, expected in (([], 2), (["--mem-every", "4"], 4)):
        out = tmp_path / f"r{expected}.json"
        assert yardstick.main([*common, *extra, "--json", str(out)]) == 0
        assert json.loads(out.read_text())["flags"]["mem_every"] == expected
