"""TensorRT optimization profiles of the two exported graphs (no TensorRT import).

A profile gives, for every dynamic graph input, the (min, opt, max) shapes TensorRT builds
an engine for. Both TensorRT paths use it: the TensorRT backend (engine builds) and ONNX
Runtime's TensorRT execution provider (``trt_profile_min/opt/max_shapes``, so the provider
builds its engines once for that range instead of rebuilding when a shape changes).

Size it from what the session will run (:meth:`TrtProfile.for_frames`): activation memory
and tactic choice follow the profile, and the default range (4 frames x 16 objects x
1088x1920) serves any video, at the price of a larger engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..export_manifest import KEY_ENCODER, MASK_AUTOENCODER


@dataclass(frozen=True)
class TrtProfile:
    """Shape range of the engines: frames between min_hw and max_hw pixels (multiples of
    16), batch up to max_batch, objects up to max_objects; tuned for opt_*;
    workspace_bytes: the builder's workspace pool limit."""

    min_hw: tuple[int, int] = (64, 64)
    opt_hw: tuple[int, int] = (480, 864)
    max_hw: tuple[int, int] = (1088, 1920)
    opt_batch: int = 1
    max_batch: int = 4
    opt_objects: int = 2
    max_objects: int = 16
    workspace_bytes: int = 4 << 30

    def __post_init__(self) -> None:
        for name in ("min_hw", "opt_hw", "max_hw"):
            h, w = getattr(self, name)
            if h % 16 or w % 16 or h < 16 or w < 16:
                raise ValueError(f"{name} must be multiples of 16, got {h}x{w}")
        if not (self.min_hw[0] <= self.opt_hw[0] <= self.max_hw[0] and self.min_hw[1] <= self.opt_hw[1] <= self.max_hw[1]):
            raise ValueError("profile sizes must satisfy min <= opt <= max")
        if not 1 <= self.opt_batch <= self.max_batch or not 1 <= self.opt_objects <= self.max_objects:
            raise ValueError("profile batch/objects must satisfy 1 <= opt <= max")
        if self.workspace_bytes <= 0:
            raise ValueError(f"workspace_bytes must be positive, got {self.workspace_bytes}")

    @classmethod
    def for_frames(cls, height: int, width: int, objects: int, batch: int = 1,
                   workspace_bytes: int = 1 << 30) -> "TrtProfile":
        """The tightest profile for a session: frames of exactly (height, width) after
        padding to multiples of 16, 1..objects objects, 1..batch frames per call."""
        hw = (-(-int(height) // 16) * 16, -(-int(width) // 16) * 16)
        return cls(min_hw=hw, opt_hw=hw, max_hw=hw, opt_batch=batch, max_batch=batch,
                   opt_objects=objects, max_objects=objects, workspace_bytes=workspace_bytes)

    def covers(self, batch: int, height: int, width: int, objects: int = 1) -> bool:
        """Whether a call of that batch, frame size and object count is inside the profile."""
        return (1 <= batch <= self.max_batch and 1 <= objects <= self.max_objects
                and self.min_hw[0] <= height <= self.max_hw[0] and self.min_hw[1] <= width <= self.max_hw[1])

    def shapes(self, graph: str, channels: tuple[int, int, int]) -> dict[str, tuple[tuple, tuple, tuple]]:
        """{input: (min, opt, max)} for a graph; channels: (C16, C8, C4) of the key encoder."""
        c16, c8, c4 = channels
        out = {}
        for input_name, per in (("image", (3, 1)), ("f16", (c16, 16)), ("f8", (c8, 8)), ("f4", (c4, 4))):
            ch, div = per
            dims = []
            for batch, (h, w) in ((1, self.min_hw), (self.opt_batch, self.opt_hw), (self.max_batch, self.max_hw)):
                dims.append((batch, ch, h // div, w // div))
            out[input_name] = tuple(dims)
            if graph == KEY_ENCODER:
                break
        if graph == MASK_AUTOENCODER:
            out["coarse"] = tuple(
                (b, n, h // 16, w // 16)
                for b, n, (h, w) in ((1, 1, self.min_hw), (self.opt_batch, self.opt_objects, self.opt_hw),
                                     (self.max_batch, self.max_objects, self.max_hw))
            )
        return out

    def ort_provider_shapes(self, graph: str, channels: tuple[int, int, int]) -> dict[str, str]:
        """ONNX Runtime TensorRT provider options for a graph: trt_profile_min_shapes,
        trt_profile_opt_shapes, trt_profile_max_shapes, each 'input:d0xd1x...,input2:...'."""
        shapes = self.shapes(graph, channels)
        out = {}
        for i, key in enumerate(("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")):
            out[key] = ",".join(f"{name}:" + "x".join(str(d) for d in dims[i]) for name, dims in shapes.items())
        return out
