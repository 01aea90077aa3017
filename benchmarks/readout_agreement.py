"""How often the readout's top-30 sets survive fp16/bf16 keys, on real DAVIS frames.

    PYTHONPATH=. python benchmarks/readout_agreement.py \
        [--weights shipped|rule] [--res 240p|480p] [--sequences bear boat] [--memory 7] [--out agreement.json]

For each sequence the network's key encoder (float32, CPU) encodes ``--memory`` memory
frames (every 5th frame from frame 0, as the runtime's schedule does) and the query
frames that follow the last one; the memory values are the ground-truth masks at key
size. :func:`stmae.kernels.agreement.topk_set_agreement` then compares, for every query
position, the top-k set of the similarity with the keys rounded to fp16/bf16 (what the
readout computes from a memory kept in the key dtype: exact products, float32 sums)
against float32 keys, and the readout's value error.

``--autocast`` also encodes the frames under CPU autocast in that dtype (the network
itself in bf16/fp16, as ``--precision bf16`` does on CUDA) and compares those keys'
top-k sets with the float32 network's: the end-to-end effect, not the readout's alone.

weights: 'shipped' = weights/stmae_small_davis240_v3.pth; 'rule' = the published
architecture with the contract's rule weights (stmae.reference_weights).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from stmae.checkpoint import load_checkpoint
from stmae.config import preset
from stmae.kernels.agreement import set_overlap, topk_indices, topk_set_agreement
from stmae.network import STMAE
from stmae.atomic import atomic_write_text
from stmae.preprocess import normalize_image, pad_to_multiple
from stmae.readout import similarity
from stmae.reference_weights import reference_weights_for

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "DAVIS2016"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def load_model(weights: str) -> STMAE:
    if weights == "shipped":
        return load_checkpoint(ROOT / "weights" / "stmae_small_davis240_v3.pth", device="cpu").model.eval()
    model = STMAE(preset("published"))
    model.load_state_dict(reference_weights_for(model))
    return model.eval()


def frame_tensor(path: Path) -> torch.Tensor:
    with Image.open(path) as img:
        rgb = np.array(img.convert("RGB"))
    image, _ = pad_to_multiple(normalize_image(rgb)[None])
    return image


def mask_at_key_size(path: Path, size: tuple[int, int]) -> torch.Tensor:
    with Image.open(path) as img:
        labels = np.array(img)
    fg = torch.from_numpy((labels > 0).astype(np.float32))[None, None]
    fg, _ = pad_to_multiple(fg)
    fg = F.interpolate(fg, size=size, mode="bilinear", align_corners=False)[0]
    return torch.cat([1 - fg, fg])  # (2, h, w): background, object


@torch.inference_mode()
def encode(model: STMAE, images: list[torch.Tensor], dtype: torch.dtype | None = None) -> torch.Tensor:
    """-> keys (T, C, h, w) float32 (computed under CPU autocast in dtype if given)."""
    out = []
    for image in images:
        if dtype is None:
            out.append(model.encode_key(image)[0].float())
        else:
            with torch.autocast("cpu", dtype=dtype):
                out.append(model.encode_key(image)[0].float())
    return torch.cat(out)


def memory_layout(keys: torch.Tensor) -> torch.Tensor:
    """(T, C, h, w) -> (1, C, T*h*w), the memory bank's layout."""
    t, c, h, w = keys.shape
    return keys.permute(1, 0, 2, 3).reshape(1, c, t * h * w)


def run_sequence(model, seq: str, res: str, memory: int, queries: int, top_k: int, autocast: bool) -> dict:
    frames = sorted((DATA / "JPEGImages" / res / seq).glob("*.jpg"))
    masks = sorted((DATA / "Annotations" / res / seq).glob("*.png"))
    mem_idx = [5 * i for i in range(memory)]
    if mem_idx[-1] + queries >= len(frames):
        raise SystemExit(f"{seq} has {len(frames)} frames, too few for {memory} memory frames")
    q_idx = [mem_idx[-1] + 1 + i for i in range(queries)]
    images = {i: frame_tensor(frames[i]) for i in mem_idx + q_idx}
    keys32 = encode(model, [images[i] for i in mem_idx])
    h, w = keys32.shape[-2:]
    values = torch.stack([mask_at_key_size(masks[i], (h, w)) for i in mem_idx], 1).reshape(1, 2, -1)
    mem = memory_layout(keys32)
    query32 = encode(model, [images[i] for i in q_idx])  # (Q, C, h, w)
    result = {"sequence": seq, "frames": f"memory {mem_idx}, queries {q_idx}", "memory_positions": mem.shape[-1],
              "rows": int(query32.shape[0] * h * w), "key_dtype": {}}
    for name, dtype in DTYPES.items():
        stats = [topk_set_agreement(q.flatten(1)[None], mem, top_k, dtype, values) for q in query32]
        result["key_dtype"][name] = _combine(stats)
    if autocast:
        result["network_autocast"] = {}
        for name, dtype in DTYPES.items():
            mem_h = memory_layout(encode(model, [images[i] for i in mem_idx], dtype))
            query_h = encode(model, [images[i] for i in q_idx], dtype)
            overlaps = []
            for q32, qh in zip(query32, query_h):
                ref = topk_indices(similarity(mem, q32.flatten(1)[None]), top_k)
                got = topk_indices(similarity(mem_h, qh.flatten(1)[None]), top_k)
                overlaps.append(set_overlap(ref, got).flatten())
            ov = torch.cat(overlaps)
            result["network_autocast"][name] = {"identical": float((ov == 1).float().mean()),
                                                "overlap": float(ov.mean()), "min_overlap": float(ov.min())}
    return result


def _combine(stats) -> dict:
    rows = sum(s.rows for s in stats)
    return {
        "identical": sum(s.identical * s.rows for s in stats) / rows,
        "overlap": sum(s.overlap * s.rows for s in stats) / rows,
        "min_overlap": min(s.min_overlap for s in stats),
        "boundary_ties": sum(s.boundary_ties for s in stats),
        "max_abs_sim_error": max(s.max_abs_sim_error for s in stats),
        "max_abs_readout_error": max(s.max_abs_readout_error for s in stats),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", choices=("shipped", "rule"), default="shipped")
    p.add_argument("--res", choices=("240p", "480p"), default="240p")
    p.add_argument("--sequences", nargs="+", default=["bear", "boat", "tennis"])
    p.add_argument("--memory", type=int, default=7, help="memory frames (every 5th from frame 0)")
    p.add_argument("--queries", type=int, default=3, help="query frames after the last memory frame")
    p.add_argument("--top-k", type=int, default=30)
    p.add_argument("--autocast", action="store_true", help="also compare keys of the network run under autocast")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    if not DATA.is_dir():
        print(f"readout_agreement: {DATA} is missing (the shared DAVIS 2016 data)", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    model = load_model(args.weights)
    start = time.perf_counter()
    rows = [run_sequence(model, s, args.res, args.memory, args.queries, args.top_k, args.autocast)
            for s in args.sequences]
    report = {"weights": args.weights, "res": args.res, "top_k": args.top_k, "memory_frames": args.memory,
              "seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__, "sequences": rows}
    print(f"| sequence | key dtype | rows | top-{args.top_k} set identical | mean overlap | min overlap "
          f"| max |sim err| | max |readout err| |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        for name, s in r["key_dtype"].items():
            print(f"| {r['sequence']} | {name} | {r['rows']} | {s['identical']:.4f} | {s['overlap']:.4f} | "
                  f"{s['min_overlap']:.3f} | {s['max_abs_sim_error']:.3g} | {s['max_abs_readout_error']:.3g} |")
        for name, s in r.get("network_autocast", {}).items():
            print(f"| {r['sequence']} | network in {name} | {r['rows']} | {s['identical']:.4f} | "
                  f"{s['overlap']:.4f} | {s['min_overlap']:.3f} | | |")
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
