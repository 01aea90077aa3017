"""The device step: one frame of S streams on static-shape device tensors.

A *bucket* is (S lanes, input H x W, N_max objects, G_max object groups, T memory slots);
every tensor of a step has a shape fixed by the bucket, so the step can be captured in a
CUDA graph (:mod:`runtime.engine.cuda_graphs`) and replayed. Per lane (stream) state, in
:class:`BucketState` (P = h*w key positions per frame, stored in slots of P' = P rounded
up to a multiple of ``align`` positions, 16 on CUDA: positions [P, P') of a slot are
padding, zero and never valid, so that every row stride of the memory is a multiple of
16 elements and the readout kernel loads key tiles with 16-byte vector loads; slot T is
a scratch slot that lanes not writing this frame write to, never valid):

- ``keys``: (S, C, (T+1)*P') in the key dtype (the backend's compute dtype);
- ``values``: (S, N_max, (T+1)*P') float32 per-object probabilities at key size;
- ``slot_frame`` (S, T+1) int64 and ``slot_valid`` (S, T+1) bool: each slot's frame;
- ``group_since`` (S, G_max) int64: each object group's introduction frame;
- ``object_group`` (S, N_max) int64, ``object_valid`` (S, N_max) bool;
- ``label_lookup`` (S, N_max+1) uint8: channel -> the user's label value.

One step (:meth:`DeviceStep.network`, then :meth:`DeviceStep.finish`):

1. preprocess the uint8 frames (S, H, W, 3) -> (S, 3, Hp, Wp) (resize, normalize, pad);
2. the key encoder once on the batch -> f16, f8, f4;
3. :func:`readout` for all lanes and object groups in one batched operation: slots that
   are empty, or written before a group's introduction, are -inf before the top-k, and
   each lane reads only up to its last valid slot (its count of readable positions is a
   device tensor: a captured step skips the empty end of the window without any shape
   changing);
4. the mask autoencoder once on all (lane, object) pairs (padding objects get zero coarse
   masks), soft aggregation over each lane's real objects only (padding channels are
   -inf before the softmax, so they are exactly 0 and change nothing);
5. memory write at each lane's write slot; restore to input size; the label map.

The host (:mod:`runtime.engine.schedule`) reaches this only through small index/value tensors
(write slot and frame per lane; slot/object/group updates on the rare frames that change
them), never through shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stmae.preprocess import IMAGENET_MEAN, IMAGENET_STD
from stmae.kernels.topk import topk_readout
from stmae.readout import cpu_bf16_products, to_key_size

from ..backends.base import KeyFeatures
from .transforms import FrameGeometry

FAR_FUTURE = 2**62  # 'since' of a group slot no object uses: reads nothing


def readout(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    valid: torch.Tensor | None,
    group: torch.Tensor | None,
    top_k: int,
    real: torch.Tensor | None = None,
) -> torch.Tensor:
    """The masked batched memory readout (coarse masks of every lane's objects).

    query: (S, C, M) the lanes' f16, key dtype; keys: (S, C, T*P') memory keys, key dtype;
    values: (S, N, T*P') float32 per-object values; valid: (S, G, T) bool, whether object
    group g of lane s may read slot t (None: every slot, one group); group: (S, N) int64,
    each object's group (None with valid None); top_k: positions kept per query;
    real: (P',) bool, which positions of a slot hold a key position (None: all of them;
    the rest is layout padding, never read).
    Returns (S, N, M) float32: for each query position, the softmax over its top-k valid
    similarities (float32) times the values at those positions. Invalid positions are
    -inf before the top-k, which is exactly a readout over the valid positions alone (a
    group with nothing valid reads zeros).

    Each lane reads only the prefix of its memory up to its group's last valid slot:
    the count of those positions, (S,) int32 on the device, goes to the readout as
    ``lengths`` (no host synchronization, so a captured graph skips empty slots).

    This is the engine's single call site of the readout: each object group is one call
    of :func:`stmae.kernels.topk.topk_readout` (the fused Triton kernel on CUDA when
    Triton is there, the torch reference otherwise) with its (S, T*P') validity; an object
    takes the result of its own group. One group (the usual case) is one call.
    """
    s, length = keys.shape[0], keys.shape[-1]
    if valid is None:
        if real is None:
            return topk_readout(query, keys, values, None, top_k)
        positions = real.repeat(length // real.numel()).expand(s, length)
        return topk_readout(query, keys, values, positions, top_k)
    s, g, t = valid.shape
    p = length // t if t else 0
    rank = torch.arange(1, t + 1, dtype=torch.int32, device=valid.device)  # slot t -> t + 1
    out = None
    for gi in range(g):
        slot_ok = valid[:, gi, :]  # (S, T)
        positions = slot_ok[:, :, None].expand(s, t, p)
        if real is not None:
            positions = positions & real
        positions = positions.reshape(s, length)
        # Readable prefix: up to the last valid slot (holes before it stay masked).
        lengths = (slot_ok * rank).amax(dim=1) * p if t else torch.zeros(s, dtype=torch.int32, device=valid.device)
        read = topk_readout(query, keys, values, positions, top_k, lengths=lengths.to(torch.int32))  # (S, N, M)
        if g == 1:
            return read
        mine = (group == gi)[:, :, None]
        out = torch.where(mine, read, 0.0 if out is None else out)
    return out


def _lane(features: KeyFeatures, lane: int) -> KeyFeatures:
    """One lane's rows of a batch's key features."""
    return KeyFeatures(features.f16[lane : lane + 1], features.f8[lane : lane + 1], features.f4[lane : lane + 1])


def masked_aggregate(logits: torch.Tensor, object_valid: torch.Tensor | None, eps: float = 1e-7) -> torch.Tensor:
    """Soft aggregation (as :func:`stmae.aggregate.aggregate`) over real objects only.

    logits: (S, N, H, W); object_valid: (S, N) bool (None: all real).
    Returns probabilities (S, N+1, H, W) float32, background first; padding channels are
    exactly 0 and the others equal the aggregation of the real objects alone.
    """
    prob = torch.sigmoid(logits.float())
    if object_valid is not None:
        prob = prob * object_valid[:, :, None, None]
    background = torch.prod(1 - prob, dim=1, keepdim=True)
    stacked = torch.cat([background, prob], dim=1).clamp(eps, 1 - eps)
    agg = torch.log(stacked / (1 - stacked))
    if object_valid is not None:
        background = torch.ones_like(object_valid[:, :1])
        channel_valid = torch.cat([background, object_valid], dim=1)
        agg = agg.masked_fill(~channel_valid[:, :, None, None], float("-inf"))
    return torch.softmax(agg, dim=1)


def channel_argmax_batched(prob: torch.Tensor) -> torch.Tensor:
    """prob (S, C, H, W) -> (S, H, W) uint8: the largest channel, the first on ties
    (one elementwise pass per channel, as :func:`runtime.engine.transforms.channel_argmax`)."""
    best = prob[:, 0].clone()
    index = torch.zeros((prob.shape[0], *prob.shape[2:]), dtype=torch.uint8, device=prob.device)
    for c in range(1, prob.shape[1]):
        better = prob[:, c] > best
        best = torch.where(better, prob[:, c], best)
        index.masked_fill_(better, c)
    return index


class BucketState:
    """Fixed-capacity device tensors of S lanes (see the module docstring for shapes).

    lanes: S; slots: T (plus one scratch slot); objects: N_max; groups: G_max;
    key_channels: C; key_size: (h, w); key_dtype: dtype of the stored keys; align: the
    positions of a slot are padded to a multiple of this (``stride`` = P'; 16 on CUDA).
    """

    def __init__(self, lanes: int, slots: int, objects: int, groups: int, key_channels: int,
                 key_size: tuple[int, int], key_dtype: torch.dtype, device: torch.device, align: int = 1) -> None:
        if not isinstance(align, int) or align < 1:
            raise ValueError(f"align must be a positive integer, got {align!r}")
        self.lanes, self.slots, self.objects, self.groups = lanes, slots, objects, groups
        self.key_channels = key_channels
        self.key_size = (int(key_size[0]), int(key_size[1]))
        self.positions = self.key_size[0] * self.key_size[1]
        self.align = align
        self.stride = -(-self.positions // align) * align  # P': positions a slot occupies
        self.key_dtype = key_dtype
        self.device = torch.device(device)
        cols = (slots + 1) * self.stride
        self.keys = torch.zeros(lanes, key_channels, cols, dtype=key_dtype, device=self.device)
        self.values = torch.zeros(lanes, objects, cols, dtype=torch.float32, device=self.device)
        # (P',) bool: which positions of a slot are key positions (None: no padding).
        self.real = None if self.stride == self.positions else \
            torch.arange(self.stride, device=self.device) < self.positions
        self.slot_frame = torch.full((lanes, slots + 1), -1, dtype=torch.int64, device=self.device)
        self.slot_valid = torch.zeros(lanes, slots + 1, dtype=torch.bool, device=self.device)
        self.group_since = torch.full((lanes, groups), FAR_FUTURE, dtype=torch.int64, device=self.device)
        self.object_group = torch.zeros(lanes, objects, dtype=torch.int64, device=self.device)
        self.object_valid = torch.zeros(lanes, objects, dtype=torch.bool, device=self.device)
        self.label_lookup = torch.zeros(lanes, objects + 1, dtype=torch.uint8, device=self.device)

    @property
    def shape_key(self) -> tuple[int, int, int, int]:
        return (self.lanes, self.slots, self.objects, self.groups)

    @property
    def allocated_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values))

    def lane_keys(self, lane: int) -> torch.Tensor:
        """The keys of one lane's T slots without the padding: (C, T*P), key dtype (a copy
        when the slots are padded)."""
        c, t, p = self.key_channels, self.slots, self.positions
        return self.keys[lane].view(c, t + 1, self.stride)[:, :t, :p].reshape(c, t * p)

    def grown(self, lanes: int, slots: int, objects: int, groups: int) -> "BucketState":
        """A larger state holding this one's content (lanes, slots, objects, groups only
        grow; called on the rare events that need it, never per frame)."""
        new = BucketState(lanes, slots, objects, groups, self.key_channels, self.key_size,
                          self.key_dtype, self.device, self.align)
        s, t, n, g, p = self.lanes, self.slots, self.objects, self.groups, self.stride
        new.keys.view(lanes, self.key_channels, slots + 1, p)[:s, :, :t] = self.keys.view(s, -1, t + 1, p)[:, :, :t]
        new.values.view(lanes, objects, slots + 1, p)[:s, :n, :t] = self.values.view(s, n, t + 1, p)[:, :, :t]
        new.slot_frame[:s, :t] = self.slot_frame[:, :t]
        new.slot_valid[:s, :t] = self.slot_valid[:, :t]
        new.group_since[:s, :g] = self.group_since
        new.object_group[:s, :n] = self.object_group
        new.object_valid[:s, :n] = self.object_valid
        new.label_lookup[:s, : n + 1] = self.label_lookup
        return new

    def reset_lane(self, lane: int) -> None:
        """Forget a lane's memory and objects (a stream joins or leaves)."""
        self.slot_valid[lane] = False
        self.slot_frame[lane] = -1
        self.group_since[lane] = FAR_FUTURE
        self.object_valid[lane] = False
        self.object_group[lane] = 0
        self.label_lookup[lane] = 0

    def set_objects(self, lane: int, labels: tuple[int, ...], groups: list) -> None:
        """A lane's objects changed (new objects): labels in slot order and the groups
        (:class:`runtime.engine.object_registry.ObjectGroup`). Small value tensors only."""
        dev = self.device
        n = len(labels)
        group_of = [0] * n
        since = [FAR_FUTURE] * self.groups
        for gi, group in enumerate(groups):
            since[gi] = group.since
            for slot in group.slots:
                group_of[slot] = gi
        self.group_since[lane] = torch.tensor(since, dtype=torch.int64, device=dev)
        self.object_group[lane, :n] = torch.tensor(group_of, dtype=torch.int64, device=dev)
        self.object_valid[lane] = False
        self.object_valid[lane, :n] = True
        self.label_lookup[lane] = 0
        self.label_lookup[lane, 1 : n + 1] = torch.tensor(labels, dtype=torch.uint8, device=dev)


class DeviceStep:
    """The static-shape step of one bucket's geometry.

    backend: a runtime backend (its ``segment_logits`` batches the mask autoencoder over
    padded objects; a backend without it runs the mask autoencoder per lane on its real
    objects); geometry: the streams' :class:`runtime.engine.transforms.FrameGeometry`; top_k:
    positions each query reads; channels_last: feed the convolutions NHWC (CUDA).
    """

    def __init__(self, backend, geometry: FrameGeometry, top_k: int, channels_last: bool = False) -> None:
        self.backend = backend
        self.geometry = geometry
        self.top_k = top_k
        self.channels_last = channels_last
        self.batched_objects = hasattr(backend, "segment_logits")
        # A CPU backend may allow bf16 products in its readout (ONNX Runtime int8 exports:
        # see stmae.readout.cpu_bf16_products); every other backend reads in float32.
        self.bf16_products = bool(getattr(backend, "readout_bf16_products", False)) and \
            torch.device(backend.device).type == "cpu"
        # On the CPU the networks run one lane at a time: a convolution's result depends on
        # its batch size there (oneDNN and ONNX Runtime pick other blockings), so a batched
        # call would make a stream's masks depend on which other streams share its step
        # (pixels where two objects tie flip). Lane by lane, every stream gets exactly the
        # masks it gets alone, at about the same CPU throughput. On CUDA the batch is the
        # point: one call for all lanes.
        self.lane_by_lane = torch.device(getattr(backend, "device", None) or "cpu").type == "cpu"
        self._norm: tuple[torch.Tensor, torch.Tensor] | None = None

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (S, H, W, 3) uint8 on the device -> (S, 3, Hp, Wp) float32 normalized
        (the same operations as :meth:`FrameGeometry.prepare_image`, batched)."""
        geo = self.geometry
        if self._norm is None or self._norm[0].device != frames.device:
            self._norm = tuple(torch.tensor(v, device=frames.device).view(3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
        mean, std = self._norm  # made once: no host-to-device copy inside a captured step
        image = (frames.movedim(-1, -3).float().div_(255.0) - mean) / std  # as normalize_image
        if geo.resized:
            shrink = geo.resized_size[0] < geo.input_size[0]
            image = F.interpolate(image, size=geo.resized_size, mode="bilinear", align_corners=False, antialias=shrink)
        if geo.padding.as_f_pad != (0, 0, 0, 0):
            image = F.pad(image, geo.padding.as_f_pad)
        if self.channels_last:
            return image.contiguous(memory_format=torch.channels_last)
        return image.contiguous()

    def encode(self, frames: torch.Tensor) -> tuple[torch.Tensor, KeyFeatures]:
        image = self.preprocess(frames)
        return image, self.encode_key(image)

    def encode_key(self, image: torch.Tensor, active: list[int] | None = None) -> KeyFeatures:
        """The key encoder on (S, 3, Hp, Wp) -> KeyFeatures with S rows. On the CPU (see
        ``lane_by_lane``) it runs lane by lane, and only on the ``active`` lanes (None:
        all); an idle lane's rows are zeros (its results are ignored, its memory write
        goes to the scratch slot)."""
        if not self.lane_by_lane or image.shape[0] == 1:
            return self.backend.encode_key(image)
        lanes = range(image.shape[0]) if active is None else active
        parts = {i: self.backend.encode_key(image[i : i + 1]) for i in lanes}
        first = next(iter(parts.values()))
        rows = [parts.get(i) for i in range(image.shape[0])]
        return KeyFeatures(*(torch.cat([getattr(p, name) if p is not None else torch.zeros_like(getattr(first, name))
                                        for p in rows]) for name in ("f16", "f8", "f4")))

    def read(self, state: BucketState, f16: torch.Tensor, used_slots: int | None, all_valid: bool) -> torch.Tensor:
        """Coarse masks (S, N_max, h, w) float32. used_slots: read only slots
        [0, used_slots) (eager steps; None: all T, static); all_valid: every lane reads
        every one of those slots with all its objects (no masking needed)."""
        s, p, t = state.lanes, state.stride, state.slots
        width = t if used_slots is None else used_slots
        keys = state.keys[:, :, : width * p]
        values = state.values[:, :, : width * p]
        query = f16.flatten(2)
        with cpu_bf16_products(self.bf16_products):
            if all_valid:
                coarse = readout(query, keys, values, None, None, self.top_k, state.real)
            else:
                frame = state.slot_frame[:, None, :width]
                valid = state.slot_valid[:, None, :width] & (frame >= state.group_since[:, :, None])
                coarse = readout(query, keys, values, valid, state.object_group, self.top_k, state.real)
                coarse = coarse * state.object_valid[:, :, None]
        return coarse.view(s, state.objects, *state.key_size)

    def segment(self, state: BucketState, image: torch.Tensor, features: KeyFeatures, coarse: torch.Tensor,
                objects: list[int] | None, active: list[int] | None = None) -> torch.Tensor:
        """The mask autoencoder and aggregation -> (S, N_max+1, Hp, Wp) float32.
        objects: each lane's real object count (None: all N_max real in every lane);
        active: the lanes stepped (None: all); on the CPU the others are not computed."""
        if self.batched_objects:
            if self.lane_by_lane and state.lanes > 1:
                lanes = set(range(state.lanes) if active is None else active)
                idle = torch.zeros(1, coarse.shape[1], *image.shape[-2:], dtype=torch.float32, device=image.device)
                logits = torch.cat([self.backend.segment_logits(image[i : i + 1], _lane(features, i), coarse[i : i + 1])
                                    if i in lanes else idle for i in range(state.lanes)])
            else:
                logits = self.backend.segment_logits(image, features, coarse)
            return masked_aggregate(logits, None if objects is None else state.object_valid)
        # Exported graphs aggregate over every object they are given: run each lane on
        # its real objects only (one lane with no padding: the backend's output as is).
        if state.lanes == 1 and objects is None:
            return self.backend.segment(image, features, coarse)
        out = torch.zeros(state.lanes, state.objects + 1, *image.shape[-2:], dtype=torch.float32, device=image.device)
        out[:, 0] = 1.0
        for lane in range(state.lanes):
            n = state.objects if objects is None else objects[lane]
            if n == 0 or (active is not None and lane not in active):
                continue
            out[lane, : n + 1] = self.backend.segment(image[lane : lane + 1], _lane(features, lane),
                                                      coarse[lane : lane + 1, :n])[0]
        return out

    def write(self, state: BucketState, f16: torch.Tensor, prob: torch.Tensor, write_slot: torch.Tensor,
              write_frame: torch.Tensor) -> None:
        """Store each lane's frame at ``write_slot`` (S,) int64 (T: the scratch slot, for
        lanes not writing) with frame index ``write_frame`` (S,) int64. Static shapes."""
        s, p, t, stride = state.lanes, state.positions, state.slots, state.stride
        lanes = torch.arange(s, device=f16.device)
        values = to_key_size(prob[:, 1:], state.key_size).reshape(s, state.objects, p)
        keys = f16.reshape(s, state.key_channels, p).to(state.key_dtype)
        # Positions [p, stride) of a slot are padding: never written, never valid.
        state.keys.view(s, state.key_channels, t + 1, stride)[lanes, :, write_slot, :p] = keys
        state.values.view(s, state.objects, t + 1, stride)[lanes, :, write_slot, :p] = values
        state.slot_frame[lanes, write_slot] = write_frame
        state.slot_valid[lanes, write_slot] = torch.ones_like(write_slot, dtype=torch.bool)  # no host scalar: capturable
        state.slot_valid[:, t] = False

    def static_step(self, state: BucketState, frames: torch.Tensor, write_slot: torch.Tensor,
                    write_frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One whole frame with every shape fixed by the bucket: the program a CUDA graph
        captures (:mod:`runtime.engine.cuda_graphs`). frames (S, H, W, 3) uint8; write_slot,
        write_frame (S,) int64 -> (probabilities (S, N_max+1, H, W), labels (S, H, W))."""
        image = self.preprocess(frames)
        features = self.encode_key(image)
        coarse = self.read(state, features.f16, None, False)
        prob = self.segment(state, image, features, coarse, list(range(state.lanes)))
        self.write(state, features.f16, prob, write_slot, write_frame)
        return self.finish(state, prob)

    def finish(self, state: BucketState, prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """prob (S, N_max+1, Hp, Wp) -> (probabilities at input size (S, N_max+1, H, W)
        float32, label map (S, H, W) uint8 with the users' label values)."""
        out = self.geometry.restore(prob)
        index = channel_argmax_batched(out)
        labels = torch.gather(state.label_lookup, 1, index.long().flatten(1)).view(index.shape)
        return out, labels

