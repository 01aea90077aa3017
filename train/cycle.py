"""The one-shot cycle step as an ``nn.Module`` (so DDP can wrap it).

STMAE learns from the annotated first frame of each clip only:

1. encode the keys of all T frames (with gradients);
2. forward reconstruction without gradients: the memory starts as frame 0's mask at key
   size; frame t = 1..T-1 reads its coarse masks from frames 0..t-1 (softmax over the whole
   memory, no top-k), runs the mask autoencoder, and its predicted foreground
   probabilities (at key size) join the memory;
3. backward reconstruction with gradients: frame 0 reads its coarse masks from the
   reference frames (their keys with gradients, their predicted values without), then the
   mask autoencoder runs on frame 0.

Every stage is the network's own (``encode_key``, :func:`stmae.readout.read_memory` with
``top_k=None``, ``to_key_size``, ``upsample_coarse``, ``encode_mask``, ``decode``,
``aggregate``), so the trained function is the one the runtime runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stmae.network import STMAE
from stmae.readout import read_memory, to_key_size, upsample_coarse

# Logit given to absent object slots: sigmoid(-1e4) == 0 in float32, so an absent slot
# adds nothing to the background product and gets (clamped) zero probability.
ABSENT_LOGIT = -1.0e4


@dataclass(frozen=True)
class CycleOutput:
    """Frame 0 rebuilt from the later frames.

    agg_logits: (B, N+1, H, W) float32 aggregated logits, background first;
    prob: (B, N+1, H, W) float32 softmax of agg_logits.
    """

    agg_logits: torch.Tensor
    prob: torch.Tensor


def mask_absent(logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """logits (B, N, H, W), valid (B, N) bool -> logits with absent slots at ABSENT_LOGIT."""
    fill = torch.full_like(logits, ABSENT_LOGIT)
    return torch.where(valid[:, :, None, None], logits, fill)


def reference_frames(num_frames: int, num_refs: int, generator: torch.Generator | None = None) -> list[int]:
    """Reference frames for the backward step: all of 1..T-1 when T-1 <= R, otherwise
    R-1 distinct random frames of 1..T-2 plus the last frame (sorted)."""
    if num_frames < 2:
        raise ValueError(f"a cycle needs at least 2 frames, got {num_frames}")
    if num_refs < 1:
        raise ValueError(f"num_refs must be >= 1, got {num_refs}")
    later = list(range(1, num_frames))
    if len(later) <= num_refs:
        return later
    middle = torch.randperm(num_frames - 2, generator=generator)[: num_refs - 1] + 1
    return sorted(int(i) for i in middle) + [num_frames - 1]


class CycleModel(nn.Module):
    """Training wrapper around a (stateless) :class:`STMAE`; ``self.net`` is the network."""

    def __init__(self, net: STMAE) -> None:
        super().__init__()
        self.net = net

    def _autoencode(
        self, image: torch.Tensor, f16: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor,
        coarse: torch.Tensor, valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """coarse (B, N, h, w) -> (aggregated logits, prob), both (B, N+1, H, W) float32."""
        coarse_up = upsample_coarse(coarse, image.shape[-2:])
        embedding = self.net.encode_mask(image, f16, coarse_up)
        logits = mask_absent(self.net.decode(f16, f8, f4, embedding).float(), valid)
        return self.net.aggregate(logits)

    def forward(
        self,
        frames: torch.Tensor,
        first_masks: torch.Tensor,
        valid_objects: torch.Tensor,
        ref_indices: torch.Tensor,
    ) -> CycleOutput:
        """frames: (B, T, 3, H, W) normalized float; first_masks: (B, N, H, W) float {0,1},
        frame 0's one-hot object masks (absent slots all zero); valid_objects: (B, N) bool;
        ref_indices: (R,) int64, frames in 1..T-1 used to rebuild frame 0.
        Returns frame 0's reconstruction as a :class:`CycleOutput`."""
        b, t = frames.shape[:2]
        if t < 2:
            raise ValueError(f"a cycle needs at least 2 frames, got {t}")
        f16, f8, f4 = self.net.encode_key(frames.flatten(0, 1))
        f16 = f16.view(b, t, *f16.shape[1:])
        f8 = f8.view(b, t, *f8.shape[1:])
        f4 = f4.view(b, t, *f4.shape[1:])
        key_size = tuple(f16.shape[-2:])

        # Forward reconstruction: frames 1..T-1 from frame 0's mask, no gradients.
        with torch.no_grad():
            keys = f16.detach()
            values = [to_key_size(first_masks, key_size)]  # each (B, N, h, w) float32
            for i in range(1, t):
                memory_keys = keys[:, :i].transpose(1, 2).flatten(2)  # (B, C, i*h*w)
                memory_values = torch.stack(values, dim=2).flatten(2)  # (B, N, i*h*w)
                coarse = read_memory(keys[:, i], memory_keys, memory_values, top_k=None)
                _, prob = self._autoencode(
                    frames[:, i], keys[:, i], f8[:, i].detach(), f4[:, i].detach(), coarse,
                    valid_objects,
                )
                values.append(to_key_size(prob[:, 1:], key_size))

        # Backward reconstruction: frame 0 from the reference frames, with gradients.
        refs = [int(i) for i in ref_indices.tolist()]
        if not refs or min(refs) < 1 or max(refs) >= t:
            raise ValueError(f"reference frames must lie in 1..{t - 1}, got {refs}")
        ref_keys = f16[:, refs].transpose(1, 2).flatten(2)
        ref_values = torch.stack([values[i] for i in refs], dim=2).flatten(2)
        coarse0 = read_memory(f16[:, 0], ref_keys, ref_values, top_k=None)
        agg_logits, prob = self._autoencode(
            frames[:, 0], f16[:, 0], f8[:, 0], f4[:, 0], coarse0, valid_objects
        )
        return CycleOutput(agg_logits=agg_logits, prob=prob)
