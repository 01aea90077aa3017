"""Long-video benchmark: per-frame cost and memory stay flat however long the video is.

Segments a seeded 2,000-frame synthetic video (64x96, ``small`` preset, random weights:
speed and memory do not depend on the weights) with a VideoSession and prints:

- mean and median per-frame time (wall clock, and CPU time of the calling thread) of
  frames 1-100 and of the last 100 frames, and their ratio (target: within 10%; frame 0 is the given mask and not counted; a throw-away
  30-frame session warms the kernels up first);
- the memory bank's allocated bytes and frames held at several points (it stops growing
  once the working window is full);
- peak RSS of the process (and peak CUDA memory on a GPU).

    python benchmarks/long_video.py [--frames 2000] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from runtime.backends import TorchBackend
from runtime.config import SessionConfig
from runtime.engine.session import VideoSession
from stmae import STMAE, generate_clip, preset


def current_rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def run(frames: int, height: int, width: int, device: str, model_preset: str, config: SessionConfig) -> dict:
    torch.manual_seed(0)
    backend = TorchBackend(STMAE(preset(model_preset)), device=device)
    clip = generate_clip(frames=frames, height=height, width=width, objects=2, seed=0)
    cuda = backend.device.type == "cuda"
    # Warm-up (kernel selection, allocator) in a throw-away session, not timed.
    warm = VideoSession(backend, config)
    for t in range(min(30, frames)):
        warm.step(clip.frames[t], clip.masks[0] if t == 0 else None)
    del warm
    session = VideoSession(backend, config)
    times: list[float] = []
    cpu_times: list[float] = []
    checkpoints = sorted({1, 50, 100, 101, 150, 200, 500, 1000, frames // 2, frames - 1} & set(range(frames)))
    bank_log = []
    rss_log = []
    for t in range(frames):
        if cuda:
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.thread_time()
        session.step(clip.frames[t], clip.masks[0] if t == 0 else None)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.thread_time() - cpu_start)
        if t in checkpoints:
            bank = session.memory
            bank_log.append((t, bank.allocated_bytes, bank.capacity, bank.used, len(bank.working_frames)))
            rss_log.append((t, current_rss_mib()))
    return {
        "times": times,
        "cpu_times": cpu_times,
        "bank": bank_log,
        "rss": rss_log,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--mem-every", type=int, default=5)
    parser.add_argument("--max-memory-frames", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steadier timings)")
    args = parser.parse_args(argv)
    if args.frames < 201:
        parser.error("--frames must be at least 201 (first and last 100 frames are compared)")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    config = SessionConfig(mem_every=args.mem_every, max_memory_frames=args.max_memory_frames, size=-1)
    with torch.inference_mode():
        out = run(args.frames, args.height, args.width, args.device, args.preset, config)
    print(f"long video: {args.frames} frames {args.width}x{args.height}, preset {args.preset}, "
          f"device {args.device}, threads {args.threads}, mem_every {args.mem_every}, "
          f"window {args.max_memory_frames} frames")
    print("memory bank (frame: allocated bytes, slots, used, working frames):")
    for t, nbytes, cap, used, working in out["bank"]:
        print(f"  frame {t:5d}: {nbytes:9d} B  slots {cap:3d}  used {used:3d}  working {working:3d}")
    sizes = [b[1] for b in out["bank"] if b[0] >= args.mem_every * args.max_memory_frames]
    print(f"bank size constant after the window filled: {len(set(sizes)) == 1}")
    print("RSS (frame: MiB): " + ", ".join(f"{t}: {m:.0f}" for t, m in out["rss"]))
    # Wall time, and this thread's CPU time (steadier on a shared machine; with --threads 1
    # on the CPU it is the whole cost of the frame).
    for label, series in (("wall", out["times"]), ("cpu", out["cpu_times"])):
        first, last = series[1:101], series[-100:]
        f_mean, l_mean = statistics.mean(first), statistics.mean(last)
        f_med, l_med = statistics.median(first), statistics.median(last)
        print(f"{label} time, frames 1-100:    mean {f_mean * 1e3:.2f} ms  median {f_med * 1e3:.2f} ms")
        print(f"{label} time, last 100 frames: mean {l_mean * 1e3:.2f} ms  median {l_med * 1e3:.2f} ms")
        print(f"{label} time ratio last/first: mean {l_mean / f_mean:.3f}  median {l_med / f_med:.3f}"
              f"  (target within 10%)")
    print(f"peak RSS of the process (including generating the clip): {out['peak_rss_mib']:.0f} MiB")
    if out["peak_cuda_mib"] is not None:
        print(f"peak CUDA memory allocated: {out['peak_cuda_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
