"""The published validation loop written stage by stage, independently of the runtime:
what a :class:`runtime.engine.session.VideoSession` must reproduce."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from stmae.preprocess import normalize_image, pad_to_multiple, unpad
from stmae.readout import read_memory, to_key_size


@torch.inference_mode()
def reference_probs(
    model,
    frames: np.ndarray,
    mask0: np.ndarray,
    mem_every: int = 5,
    top_k: int = 30,
    window: int | None = None,
    resized: tuple[int, int] | None = None,
) -> list[torch.Tensor]:
    """frames (T, H, W, 3) uint8, mask0 (H, W) labels -> per frame (N+1, H, W) float32.

    Memory: frame 0 (key, one-hot mask at key size) and every ``mem_every``-th frame's
    predicted probabilities; with ``window``, only the last ``window`` of the latter.
    ``resized``: (h, w) the frames are resized to (bilinear, antialiased) before padding;
    probabilities are resized back (bilinear) at the end.
    """
    H, W = mask0.shape
    labels = [int(v) for v in np.unique(mask0) if v]
    outs = []
    perm, working = None, []
    for t, frame in enumerate(frames):
        image = normalize_image(frame)[None]
        if resized is not None:
            image = F.interpolate(image, size=resized, mode="bilinear", align_corners=False,
                                  antialias=resized[0] < H)
        image, pad = pad_to_multiple(image.contiguous())
        f16, f8, f4 = model.encode_key(image)
        key_size = tuple(f16.shape[-2:])
        if t == 0:
            m = torch.as_tensor(mask0)
            if resized is not None:
                m = F.interpolate(m[None, None].float(), size=resized, mode="nearest-exact")[0, 0].to(torch.uint8)
            onehot = torch.stack([(m == l).float() for l in labels])[None]
            onehot, _ = pad_to_multiple(onehot)
            perm = (f16, to_key_size(onehot, key_size))
            exact = torch.stack([torch.as_tensor(mask0 == l).float() for l in labels])
            outs.append(torch.cat([1 - exact.sum(0, keepdim=True), exact]))
            continue
        memory = [perm, *working]
        keys = torch.cat([k.flatten(2) for k, _ in memory], dim=2)
        values = torch.cat([v.flatten(2) for _, v in memory], dim=2)
        coarse = read_memory(f16, keys, values, top_k)
        prob = model.segment(image, f16, f8, f4, coarse)
        if t % mem_every == 0:
            working.append((f16, to_key_size(prob[:, 1:], key_size)))
            if window is not None:
                working = working[-window:]
        out = unpad(prob, pad)
        if resized is not None:
            out = F.interpolate(out, size=(H, W), mode="bilinear", align_corners=False)
        outs.append(out[0])
    return outs
