"""``stmae-train average-weights``: several checkpoints of one architecture -> their mean.

Fine-tuning from scratch-trained weights on a few videos moves the held-out score by up
to 0.15 J&F between checkpoints a few hundred steps apart. The uniform mean of several
such checkpoints (stochastic weight averaging across one run's snapshots, or a "model
soup" of runs that started from the same weights) is flatter and steadier than any one of
them. Floating-point tensors (weights and BatchNorm running statistics) are averaged in
float64; integer buffers (BatchNorm's batch counter) keep their largest value.

Refusals (``CheckpointError`` / ``OutputError`` / ``ValueError``, one line each): fewer
than two sources; the same file twice; sources of different architectures or tensor
shapes; an --out that is a source, or that exists and is not a toolkit checkpoint; sources
recording a processing size the runtime would refuse. A mean tensor whose values do not
fit the storage dtype is stored in float32 instead (and said so): the file always loads.
"""

from __future__ import annotations

from pathlib import Path

import torch

from stmae.checkpoint import load_checkpoint, save_checkpoint
from runtime.export_manifest import sha256_file
from stmae.outputs import real_path

from .config import check_processing_size
from .export_weights import STORAGE_DTYPES, ExportedWeights, check_target


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Uniform mean of state dicts with the same keys and shapes. Floating tensors:
    float64 mean cast back to the first state's dtype; other tensors: element-wise max."""
    first = states[0]
    out: dict[str, torch.Tensor] = {}
    for key, ref in first.items():
        if ref.is_floating_point():
            acc = torch.zeros(ref.shape, dtype=torch.float64)
            for state in states:
                acc += state[key].double()
            out[key] = (acc / len(states)).to(ref.dtype)
        else:
            out[key] = torch.stack([state[key] for state in states]).amax(dim=0)
    return out


def average_weights(sources: list[str | Path], target: str | Path, dtype: str = "float16",
                    overwrite: bool = False) -> ExportedWeights:
    """Write the mean network of ``sources`` (training or model-only checkpoints of one
    architecture) to ``target`` in ``dtype`` storage, atomically. The file records which
    files were averaged (name, sha256, step) under ``averaged_from``; its processing size
    is the sources' own (they must agree)."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"--dtype {dtype} is not one of {', '.join(STORAGE_DTYPES)}")
    paths = [Path(s) for s in sources]
    if len(paths) < 2:
        raise ValueError("give at least two checkpoints to average")
    seen: dict[Path, Path] = {}
    for p in paths:
        if real_path(p) in seen:
            raise ValueError(f"{p} is given twice (as {seen[real_path(p)]}); give each checkpoint once")
        seen[real_path(p)] = p
    target = Path(target)
    check_target(paths, target, overwrite)
    loaded = [load_checkpoint(p, device="cpu") for p in paths]
    config = loaded[0].config
    for p, item in zip(paths[1:], loaded[1:]):
        if item.config != config:
            raise ValueError(f"{p} has another architecture than {paths[0]}; only checkpoints of one "
                             "architecture can be averaged")
    sizes = {item.processing_size for item in loaded}
    if len(sizes) > 1:
        raise ValueError(f"the checkpoints record different processing sizes {sorted(map(str, sizes))}; "
                         "average checkpoints trained at one size")
    intervals = {item.mem_every for item in loaded}
    if len(intervals) > 1:
        raise ValueError(f"the checkpoints record different memory intervals {sorted(map(str, intervals))}; "
                         "average checkpoints that record one (or none)")
    model = loaded[0].model  # load_checkpoint gives float32 networks
    model.load_state_dict(average_states([item.model.state_dict() for item in loaded]))
    record = [{"file": p.name, "sha256": sha256_file(p), "step": item.extra.get("it", item.extra.get("trained_steps"))}
              for p, item in zip(paths, loaded)]
    extra = {"averaged_from": record}
    if isinstance(loaded[-1].extra.get("train_config"), dict):
        extra["train_config"] = loaded[-1].extra["train_config"]
    size = sizes.pop()
    if size is not None:
        check_processing_size(size, "the processing size the checkpoints record",
                              "export them with a valid --processing-size first")
    every = intervals.pop()
    kept = save_checkpoint(target, model, extra=extra, processing_size=size, storage_dtype=STORAGE_DTYPES[dtype],
                           mem_every=every)
    return ExportedWeights(target, target.stat().st_size, None, size, dtype, kept, every)
