"""The CPU path step by step: each optimization measured before and after, in one run.

    python benchmarks/cpu_steps.py --export-dir runs/bench-cpu/export_fp32 \
        --int8-dir runs/bench-cpu/export_int8_ort [--size 480] [--out steps.md]

Prints (and writes with ``--out``) a markdown table; every row is a median over repeats
measured in this process, with the "before" and "after" taken one after the other:

1. ONNX Runtime session options on the fp32 graphs: graph optimizations basic vs all,
   1 vs all intra-op threads, the memory arena on vs off (each graph at the size given).
2. int8 mask autoencoder with and without common subexpression elimination (the Q/DQ
   pair per reader that lets ONNX Runtime fuse every convolution into QLinearConv); the
   int8 pipeline (VideoSession over real 480p frames) with ONNX Runtime's idle threads
   spinning and not spinning.
3. The memory readout: the baseline's dense (L, M) top-k affinity against the runtime's
   query-major top-k (the same float32 similarity), for 1, 4, 7 and 21 memory frames.
4. The label map: ``argmax(dim=0)`` against the runtime's per-channel pass.
5. ``stmae-segment``'s loop on real frames: decode, segment, write serially, against
   decoding ahead and writing behind in background threads (bounded queues).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from runtime.backends.factory import create_backend
from runtime.backends.ort_backend import OrtBackend
from runtime.bench.baseline import dense_topk_readout
from runtime.bench.harness import read_rgb
from runtime.bench.report import atomic_write_text
from runtime.config import SessionConfig
from runtime.export_manifest import load_manifest
from runtime.io.frames import FrameFolder
from runtime.io.mask_io import read_mask, write_mask
from runtime.segment_video import segment_video
from runtime.engine.session import VideoSession
from runtime.engine.transforms import channel_argmax
from stmae.readout import read_memory


def timed(fn, repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def graph_feeds(session, height: int, width: int, objects: int = 1) -> dict[str, np.ndarray]:
    """Random float32 feeds for a graph's inputs at a (height, width) frame."""
    rng = np.random.default_rng(0)
    scale = {"16*": 1, "4*": 4, "2*": 8}
    feeds = {}
    for value in session.get_inputs():
        shape = []
        for dim in value.shape:
            if isinstance(dim, int):
                shape.append(dim)
            elif dim == "batch":
                shape.append(1)
            elif dim == "objects":
                shape.append(objects)
            else:
                div = next((v for k, v in scale.items() if dim.startswith(k)), 16)
                shape.append((height if "h" in dim else width) // div)
        feeds[value.name] = rng.random(shape, dtype=np.float32)
    return feeds


def ort_session(path: Path, level: str = "all", threads: int = 0, arena: bool = True, disabled=()):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    options.intra_op_num_threads = threads
    options.enable_cpu_mem_arena = arena
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled) or None)


def session_rows(export_dir: Path, height: int, width: int, repeats: int) -> list[tuple[str, float, float]]:
    rows = []
    for graph in ("key_encoder", "mask_autoencoder"):
        path = export_dir / f"{graph}.onnx"
        feeds = graph_feeds(ort_session(path), height, width)

        def run(**kw):
            session = ort_session(path, **kw)
            return timed(lambda: session.run(None, feeds), repeats)

        rows.append((f"fp32 {graph}: graph optimizations basic -> all", run(level="basic"), run(level="all")))
        rows.append((f"fp32 {graph}: 1 thread -> all cores", run(threads=1), run()))
        rows.append((f"fp32 {graph}: memory arena off -> on", run(arena=False), run()))
    return rows


def int8_rows(int8_dir: Path, height: int, width: int, repeats: int) -> list[tuple[str, float, float]]:
    manifest = load_manifest(int8_dir)
    path = int8_dir / "mask_autoencoder.onnx"
    feeds = graph_feeds(ort_session(path), height, width)
    with_cse = ort_session(path)
    without = ort_session(path, disabled=manifest.onnxruntime_disabled_optimizers)
    return [("int8 mask autoencoder: CSE on (shared DQ, 11 float convs) -> off (all QLinearConv)",
             timed(lambda: with_cse.run(None, feeds), repeats), timed(lambda: without.run(None, feeds), repeats))]


def spinning_rows(int8_dir: Path, frames_dir: Path, mask: Path, size: int, count: int) -> list[tuple[str, float, float]]:
    paths = FrameFolder(frames_dir).paths[:count]
    frames = [read_rgb(path) for path in paths]
    labels = read_mask(mask)[0]

    def frame_p50(spin: bool) -> float:
        backend = OrtBackend.from_export_dir(int8_dir, device="cpu", allow_spinning=spin)
        session = VideoSession(backend, SessionConfig(size=size))
        times = []
        for i, frame in enumerate(frames):
            start = time.perf_counter()
            session.step(frame, labels if i == 0 else None)
            times.append(time.perf_counter() - start)
        return statistics.median(times[3:]) * 1e3

    return [(f"int8 pipeline, {len(frames)} frames at {size}p (frame p50): ONNX Runtime threads spinning -> not",
             frame_p50(True), frame_p50(False))]


def readout_rows(height: int, width: int, repeats: int) -> list[tuple[str, float, float]]:
    gen = torch.Generator().manual_seed(0)
    h, w = height // 16, width // 16
    query = torch.randn(1, 1024, h, w, generator=gen).relu() * 30
    rows = []
    for frames in (1, 4, 7, 21):
        keys = torch.randn(1024, frames * h * w, generator=gen).relu() * 30
        values = torch.rand(1, frames * h * w, generator=gen)
        with torch.inference_mode():
            dense = timed(lambda: dense_topk_readout(keys, values, query[0].flatten(1), 30), repeats)
            fast = timed(lambda: read_memory(query, keys[None], values[None], 30), repeats)
        rows.append((f"readout, {frames} memory frame(s): dense (L, M) top-k -> query-major top-k", dense, fast))
    return rows


def argmax_rows(height: int, width: int, repeats: int) -> list[tuple[str, float, float]]:
    prob = torch.rand(1, 3, height, width + 10)[0, :, :, 5:-5]  # an unpadded view, 2 objects
    return [(f"label map {height}x{width}, 3 channels: argmax(dim=0) -> channel_argmax",
             timed(lambda: prob.argmax(dim=0), repeats), timed(lambda: channel_argmax(prob), repeats))]


def overlap_rows(checkpoint: str, frames_dir: Path, mask: Path, size: int, count: int) -> list[tuple[str, float, float]]:
    backend = create_backend("torch", checkpoint=checkpoint, device=torch.device("cpu"), precision="fp32")
    paths = FrameFolder(frames_dir).paths[:count]
    labels, palette = read_mask(mask)
    config = SessionConfig(size=size)

    def serial(out: Path) -> None:
        session = VideoSession(backend, config)
        for i, path in enumerate(paths):
            result = session.step(read_rgb(path), labels if i == 0 else None)
            write_mask(out / f"{path.stem}.png", result.labels, palette)

    with tempfile.TemporaryDirectory() as tmp:
        frames_copy = Path(tmp) / "frames"
        frames_copy.mkdir()
        for path in paths:
            (frames_copy / path.name).write_bytes(path.read_bytes())

        def overlapped(out: Path) -> None:
            segment_video(backend, frames_copy, out, first_mask=mask, config=config, overwrite=True)

        def per_frame(fn) -> float:
            out = Path(tempfile.mkdtemp(dir=tmp))
            return timed(lambda: fn(out), 2) / len(paths)

        before, after = per_frame(serial), per_frame(overlapped)
    return [(f"segment loop, {len(paths)} frames at {size}p (ms per frame): serial -> decode ahead, write behind",
             before, after)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--export-dir", type=Path, required=True, help="an fp32 stmae-export folder")
    p.add_argument("--int8-dir", type=Path, required=True, help="an int8 export made with --int8-quantizer onnxruntime")
    p.add_argument("--checkpoint", default="weights/stmae_small_davis240_v3.pth", help="checkpoint for the segment loop")
    p.add_argument("--frames", type=Path, default=Path("../shared/data/DAVIS2016/JPEGImages/240p/bear"))
    p.add_argument("--mask", type=Path, default=Path("../shared/data/DAVIS2016/Annotations/240p/bear/00000.png"))
    p.add_argument("--session-frames", type=Path, default=Path("../shared/data/DAVIS2016/JPEGImages/480p/bear"))
    p.add_argument("--session-mask", type=Path, default=Path("../shared/data/DAVIS2016/Annotations/480p/bear/00000.png"))
    p.add_argument("--size", type=int, default=480, help="shorter side of the graph measurements (16:9)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    height = args.size
    width = (round(args.size * 16 / 9) + 15) // 16 * 16
    rows = []
    rows += session_rows(args.export_dir, height, width, args.repeats)
    rows += int8_rows(args.int8_dir, height, width, args.repeats)
    rows += spinning_rows(args.int8_dir, args.session_frames, args.session_mask, args.size, 20)
    rows += readout_rows(height, width, args.repeats)
    rows += argmax_rows(height, round(args.size * 16 / 9), max(args.repeats, 10))
    rows += overlap_rows(args.checkpoint, args.frames, args.mask, -1, 40)
    lines = [f"Graphs at {height}x{width}, torch {torch.__version__}, {torch.get_num_threads()} threads.", "",
             "| step | before ms | after ms | speed-up |", "|---|---|---|---|"]
    lines += [f"| {name} | {b:.1f} | {a:.1f} | {b / a:.2f}x |" for name, b, a in rows]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
