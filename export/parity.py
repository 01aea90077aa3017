"""Measurements of the parity gate: graph outputs, top-k readout sensitivity, pipelines.

- :func:`graph_parity`: PyTorch stages vs the ONNX graphs on ONNX Runtime's CPU provider
  at a shape other than the one traced; relative error ||ort - torch|| / ||torch|| per output.
- :func:`topk_sensitivity`: how a graph's f16 changes the memory readout (similarities
  near 1,000, top-k softmax): fraction of query positions whose top-k set changes, the
  readout's relative error, the largest similarity error.
- :func:`pipeline_agreement`: two full runtime pipelines (:class:`runtime.engine.session.
  VideoSession`) over a clip: mean IoU and pixel agreement of their masks, and the J&F of
  both against the clip's ground truth.

Frames are streamed: the pipelines run in step and the top-k measurement takes its frames
from a generator, so the gate's memory does not grow with the clip's length (but for the
uint8 label maps that J&F needs, one byte a pixel).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from runtime.backends.base import Backend
from runtime.config import SessionConfig
from runtime.metrics import evaluate_objects
from runtime.engine.session import VideoSession
from stmae.network import STMAE
from stmae.readout import read_memory

from .clips import Clip


@dataclass(frozen=True)
class ParityShape:
    """Shape of the graph-parity inputs: batch, objects, height, width (multiples of 16)."""

    batch: int
    objects: int
    height: int
    width: int


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(b))
    return float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64)) / max(denom, 1e-30))


def cpu_session(path: Path, disabled_optimizers: tuple[str, ...] = ()):
    """An ONNX Runtime session on the CPU provider, quiet, with ``disabled_optimizers``
    (graph transformer names) switched off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"],
        disabled_optimizers=list(disabled_optimizers) or None,
    )


@torch.inference_mode()
def graph_parity(model: STMAE, key_path: Path, mask_path: Path, shape: ParityShape, seed: int = 0) -> dict[str, float]:
    """Relative error per output ('key_encoder.f16', ..., 'mask_autoencoder.prob')."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(shape.batch, 3, shape.height, shape.width, generator=gen)
    f16, f8, f4 = model.encode_key(image)
    coarse = torch.rand(shape.batch, shape.objects, *f16.shape[-2:], generator=gen)
    prob = model.segment(image, f16, f8, f4, coarse)
    key_out = cpu_session(key_path).run(None, {"image": image.numpy()})
    feeds = {"image": image.numpy(), "f16": f16.numpy(), "f8": f8.numpy(), "f4": f4.numpy(), "coarse": coarse.numpy()}
    (mask_out,) = cpu_session(mask_path).run(None, feeds)
    errors = {
        f"key_encoder.{name}": _rel(got, ref.numpy())
        for name, got, ref in zip(("f16", "f8", "f4"), key_out, (f16, f8, f4))
    }
    errors["mask_autoencoder.prob"] = _rel(mask_out, prob.numpy())
    return errors


def topk_sensitivity(pairs: Iterable[tuple[np.ndarray, np.ndarray]], top_k: int, seed: int = 0) -> dict:
    """pairs: (reference, candidate) f16 (1, C, h, w) of the same frames, in frame order, from
    the fp32 graph and the converted graph, consumed one pair at a time (a generator keeps
    the gate's memory at one frame). Memory = the first frame, queries = the others; values
    are random maps in [0, 1] (8 channels), so the readout error measures how the top-k
    softmax weights move. Returns the worst case over queries."""
    pairs = iter(pairs)
    first = next(pairs, None)
    if first is None:
        raise ValueError("top-k sensitivity needs at least two frames")
    mk = torch.from_numpy(first[0]).flatten(2).float()
    mk_c = torch.from_numpy(first[1]).flatten(2).float()
    del first
    values = torch.rand(1, 8, mk.shape[-1], generator=torch.Generator().manual_seed(seed))
    k = min(top_k, mk.shape[-1])
    changed, rel, dsim, smax = [], [], [], []
    for ref_q, cand_q in pairs:
        q = torch.from_numpy(ref_q).float()
        qc = torch.from_numpy(cand_q).float()
        sim = torch.bmm(mk.transpose(1, 2), q.flatten(2))
        sim_c = torch.bmm(mk_c.transpose(1, 2), qc.flatten(2))
        idx = sim.topk(k, dim=1).indices.sort(dim=1).values
        idx_c = sim_c.topk(k, dim=1).indices.sort(dim=1).values
        changed.append(float((idx != idx_c).any(dim=1).float().mean()))
        r = read_memory(q, mk, values, top_k)
        rc = read_memory(qc, mk_c, values, top_k)
        rel.append(float((r - rc).norm() / r.norm().clamp_min(1e-30)))
        dsim.append(float((sim - sim_c).abs().max()))
        smax.append(float(sim.abs().max()))
    if not changed:
        raise ValueError("top-k sensitivity needs at least two frames")
    return {
        "top_k": top_k,
        "topk_sets_changed": max(changed),
        "readout_rel_error": max(rel),
        "max_abs_similarity_error": max(dsim),
        "max_abs_similarity": max(smax),
    }


@dataclass(frozen=True)
class PipelineAgreement:
    """mean_iou: mean over frames (the first excluded) and objects of the IoU between the
    two pipelines' masks (1 where both are empty); pixel_agreement: fraction of pixels with
    the same label; jf_reference / jf_candidate: DAVIS J&F of each against the clip's
    ground truth (None without ground truth); frames: frames compared."""

    mean_iou: float
    pixel_agreement: float
    jf_reference: float | None
    jf_candidate: float | None
    frames: int

    def to_dict(self) -> dict:
        return asdict(self)


def run_pipeline(backend: Backend, clip: Clip, session_config: SessionConfig) -> list[np.ndarray]:
    """Label maps (H, W) uint8 of every frame, the clip's first mask given at frame 0."""
    session = VideoSession(backend, session_config)
    return [session.step(frame, clip.first_mask() if t == 0 else None).labels for t, frame in enumerate(clip.frames)]


def _jf(labels: list[np.ndarray], clip: Clip) -> float | None:
    if clip.masks is None or len(labels) < 3:
        return None
    scores = evaluate_objects(labels, list(clip.masks))
    return float(np.mean([s.JF for s in scores])) if scores else None


def _frame_agreement(ref: np.ndarray, cand: np.ndarray, objects: list[int]) -> tuple[list[float], float]:
    """One frame's label maps (H, W): (IoU per object (1 where both are empty), pixel agreement)."""
    ious = []
    for label in objects:
        a, b = ref == label, cand == label
        union = np.logical_or(a, b).sum()
        ious.append(1.0 if union == 0 else float(np.logical_and(a, b).sum() / union))
    return ious, float((ref == cand).mean())


def compare_labels(reference: list[np.ndarray], candidate: list[np.ndarray], objects: list[int]) -> tuple[float, float]:
    """(mean IoU over frames 1.. and objects, pixel agreement over frames 1..)."""
    ious, agree = [], []
    for ref, cand in zip(reference[1:], candidate[1:]):
        frame_ious, frame_agree = _frame_agreement(ref, cand, objects)
        ious += frame_ious
        agree.append(frame_agree)
    return float(np.mean(ious)), float(np.mean(agree))


def pipeline_agreement(
    reference: Backend, candidate: Backend, clip: Clip, session_config: SessionConfig
) -> PipelineAgreement:
    """Run both pipelines over the clip in step, frame by frame, and compare their masks as
    they come (see PipelineAgreement). Memory: the two sessions (their memory windows are
    bounded by ``session_config``) and one frame; no probabilities are kept, and the label
    maps (H, W) uint8 only where the clip has ground truth (J&F scores whole sequences), one
    byte a pixel like the ground truth the clip holds."""
    if len(clip.frames) < 2:
        raise ValueError("pipeline agreement needs a clip of at least 2 frames")
    objects = [int(v) for v in np.unique(clip.first_mask()) if v != 0]
    sessions = VideoSession(reference, session_config), VideoSession(candidate, session_config)
    keep = clip.masks is not None and len(clip.frames) >= 3
    kept: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    ious, agree = [], []
    for t, frame in enumerate(clip.frames):
        ref, cand = (s.step(frame, clip.first_mask() if t == 0 else None).labels for s in sessions)
        if t:
            frame_ious, frame_agree = _frame_agreement(ref, cand, objects)
            ious += frame_ious
            agree.append(frame_agree)
        if keep:
            kept[0].append(ref)
            kept[1].append(cand)
    jf_ref, jf_cand = (_jf(labels, clip) if keep else None for labels in kept)
    return PipelineAgreement(float(np.mean(ious)), float(np.mean(agree)), jf_ref, jf_cand, len(clip.frames) - 1)
