"""Training configuration: frozen dataclasses that validate themselves.

Each component gets only its own section: the data pipeline a :class:`DataConfig`, the
optimizer an :class:`OptimConfig`, the learning-rate schedule and run length a
:class:`ScheduleConfig`, validation a :class:`ValidationConfig`. Defaults are the
published settings (8 frames, 3 references, 384 crops, AdamW 2e-5 at batch 32 with linear
scaling, weight decay 0.05, step decay x0.1, mixed precision on GPU).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from runtime.config import MAX_SIZE, SessionConfig

if TYPE_CHECKING:
    from stmae.composite import PathStrength

# Upper bounds of the count fields, each from what the count allocates. They are checked
# here, when a config is made, so nothing is allocated for a count that is out of range.
# The sampler draws a permutation of every clip of an epoch (torch.randperm, int64) and
# turns it into Python lists (~50 bytes a clip all told): 10 million clips is ~0.5 GB.
MAX_CLIPS_PER_EPOCH = 10_000_000
# A clip's frames are read at the source resolution before cropping (1080p: 6 MB a frame)
# and the network runs them all with gradients: 512 frames is ~3 GB per 1080p clip.
MAX_CLIP_FRAMES = 512
# Labels are uint8 and 255 is void: at most 254 objects (as stmae.synthetic.ClipSpec).
MAX_OBJECTS = 254
# One step's input batch (batch_size, T, 3, H, W) float32 is built on the host and again
# on the device: batch_size x frames x crop must fit in this many bytes.
MAX_BATCH_BYTES = 8 * 2**30
# Each DataLoader worker is a process with its own copy of the dataset and prefetched batches.
MAX_WORKERS = 128
# Step counts and seeds feed torch generator seeds (seed * 1_000_003 + step * 7919 must fit
# int64): 10^9 steps is ~4 months at 100 steps a second.
MAX_STEPS = 10**9
MAX_SEED = 2**32 - 1
# A gap between clip frames is shrunk to fit each video; no video is this long.
MAX_GAP = 100_000


def _int_in(name: str, value: Any, low: int, high: int, why: str = "") -> None:
    """Raise ValueError unless ``value`` is an int in ``low..high`` (``why``: what the
    upper bound protects, said in the message)."""
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return
    reason = f" ({why})" if why else ""
    raise ValueError(f"{name} must be an integer in {low}..{high}{reason}, got {value!r}")


def _positive_int(name: str, value: Any, high: int | None = None, why: str = "") -> None:
    if high is not None:
        return _int_in(name, value, 1, high, why)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _non_negative_int(name: str, value: Any, high: int | None = None, why: str = "") -> None:
    if high is not None:
        return _int_in(name, value, 0, high, why)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def check_mem_every(every: Any) -> int:
    """Raise ValueError unless ``every`` is a memory interval a checkpoint may record
    (frames, 1 or more; :data:`stmae.checkpoint_peek.RECORDED`). Returns ``every``."""
    from stmae.checkpoint_peek import valid_recorded  # torch-free

    if not valid_recorded("mem_every", every):
        raise ValueError(f"--mem-every {every!r}: give the memory interval in frames, 1 or more")
    return every


def check_processing_size(size: Any, what: str = "processing_size", fix: str = "") -> int:
    """Raise ValueError unless ``size`` (pixels, the shorter side a network runs at, as
    recorded in a checkpoint) is one the runtime runs at: the runtime's own rule
    (:class:`runtime.config.SessionConfig`), without its -1 ('frames as they are').
    ``what`` names the value in the message, ``fix`` says how to mend it. Returns ``size``."""
    try:
        ok = size != -1 and SessionConfig(size=size).size == size
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{what} is {size!r}, not a size stmae-segment runs at (pixels in 16..{MAX_SIZE})"
                         + (f"; {fix}" if fix else ""))
    return size


@dataclass(frozen=True)
class DataConfig:
    """What clips to train on and how to augment them.

    davis_roots: DAVIS-layout folders (JPEGImages/<res>/<seq>, Annotations/<res>/<seq>);
    davis_resolution: the <res> sub-folder ('480p', '240p', ...), or several separated by
    commas ('240p,480p': every video at every resolution it exists at);
    youtube_roots: YouTube-VOS-layout folders (JPEGImages/<vid>, Annotations/<vid>);
    sequences: train only on these videos (empty: every video found);
    exclude_sequences: never train on these videos (held-out validation videos);
    repeats: how many times each real video appears per epoch;
    synthetic_clips: synthetic clips mixed into each epoch (new clips every epoch);
    composite_clips: multi-object clips per epoch, made by pasting objects cut from other
    videos' first frames into a real video (stmae/composite.py; new clips every epoch);
    composite_objects: at most this many pasted objects per composite clip;
    composite_motion, composite_scale, composite_rotation: how far pasted objects move
    (largest speed, a fraction of the frame's shorter side per frame), how much their
    height changes (up to x(1 + scale) or /(1 + scale) over the clip) and how far they turn
    (degrees over the clip); None: the original paths (stmae.composite.PathStrength);
    region_clips: clips per epoch that start at a random frame of a real video, labelled
    with colour regions found in that frame (train/regions.py; no annotation is read);
    num_frames: T, frames per clip (the first is the annotated frame);
    frames_start: 0, or clips grow from this many frames at the first epoch to num_frames at
    the last (linearly, like the frame gaps; train.schedule.FrameSchedule);
    max_objects: at most this many objects of frame 0's mask per clip;
    crop_size: (height, width) of the training crops, multiples of 16;
    crop_scale: area range of the random resized crop;
    hflip: random horizontal flip (per clip);
    affine_degrees, affine_shear: per-frame random affine (degrees);
    color_jitter: per-clip brightness/contrast/saturation jitter strength;
    hue_shift: per-clip hue rotation of up to hue_shift x 360 degrees (0: off, at most 0.5);
    channel_shuffle: probability of a per-clip RGB channel permutation;
    grayscale: probability of a grayscale clip (on top of the published recipe's 5 %);
    gap_start, gap_end: the largest gap between consecutive clip frames, growing linearly
    from gap_start at the first epoch to gap_end at the last;
    num_workers: DataLoader worker processes (0: load in the training process).
    """

    davis_roots: tuple[str, ...] = ()
    davis_resolution: str = "480p"
    youtube_roots: tuple[str, ...] = ()
    sequences: tuple[str, ...] = ()
    exclude_sequences: tuple[str, ...] = ()
    repeats: int = 1
    synthetic_clips: int = 0
    composite_clips: int = 0
    composite_objects: int = 2
    composite_motion: float | None = None
    composite_scale: float | None = None
    composite_rotation: float | None = None
    region_clips: int = 0
    num_frames: int = 8
    frames_start: int = 0
    max_objects: int = 3
    crop_size: tuple[int, int] = (384, 384)
    crop_scale: tuple[float, float] = (0.36, 1.0)
    hflip: bool = True
    affine_degrees: float = 15.0
    affine_shear: float = 10.0
    color_jitter: float = 0.1
    hue_shift: float = 0.0
    channel_shuffle: float = 0.0
    grayscale: float = 0.0
    gap_start: int = 5
    gap_end: int = 25
    num_workers: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "davis_roots", tuple(str(p) for p in self.davis_roots))
        object.__setattr__(self, "youtube_roots", tuple(str(p) for p in self.youtube_roots))
        object.__setattr__(self, "sequences", tuple(self.sequences))
        object.__setattr__(self, "exclude_sequences", tuple(self.exclude_sequences))
        object.__setattr__(self, "crop_size", tuple(self.crop_size))
        object.__setattr__(self, "crop_scale", tuple(float(s) for s in self.crop_scale))
        if not (self.davis_roots or self.youtube_roots or self.synthetic_clips):
            raise ValueError(
                "no training data: give DAVIS roots, YouTube-VOS roots or synthetic_clips > 0"
            )
        per_epoch = "clips per epoch; the sampler holds a permutation of them all"
        _positive_int("repeats (--repeats)", self.repeats, MAX_CLIPS_PER_EPOCH, per_epoch)
        for name in ("synthetic_clips", "composite_clips", "region_clips"):
            _non_negative_int(f"{name} (--{name.replace('_', '-')})", getattr(self, name), MAX_CLIPS_PER_EPOCH,
                              per_epoch)
        made = self.synthetic_clips + self.composite_clips + self.region_clips
        if made > MAX_CLIPS_PER_EPOCH:
            raise ValueError(
                f"synthetic_clips + composite_clips + region_clips is {made} clips per epoch, more than "
                f"{MAX_CLIPS_PER_EPOCH} (the sampler holds a permutation of them all); lower them"
            )
        _positive_int("composite_objects (--composite-objects)", self.composite_objects, MAX_OBJECTS,
                      "labels are uint8, 255 is void")
        if (self.composite_motion, self.composite_scale, self.composite_rotation) != (None, None, None):
            _ = self.composite_strength  # validates them (imports stmae.composite only when set)
        if self.region_clips and not (self.davis_roots or self.youtube_roots):
            raise ValueError("region_clips need real videos (DAVIS or YouTube-VOS roots) to start from")
        if self.composite_clips and not (self.davis_roots or self.youtube_roots):
            raise ValueError("composite_clips need real videos (DAVIS or YouTube-VOS roots) to cut objects from")
        if not 0 <= self.hue_shift <= 0.5:
            raise ValueError(f"hue_shift must be in [0, 0.5] (a fraction of a full turn), got {self.hue_shift!r}")
        for name in ("channel_shuffle", "grayscale"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)!r}")
        if not isinstance(self.davis_resolution, str) or not all(self.davis_resolution.split(",")):
            raise ValueError(f"davis_resolution must be like '240p' or '240p,480p', got {self.davis_resolution!r}")
        _non_negative_int("num_workers (--num-workers)", self.num_workers, MAX_WORKERS,
                          "each worker is a process with its own copy of the data")
        _int_in("num_frames (--frames)", self.num_frames, 2, MAX_CLIP_FRAMES,
                "frames of one clip, read at the source resolution")
        if self.frames_start != 0:
            _int_in("frames_start (--frames-start)", self.frames_start, 2, self.num_frames,
                    "clips grow from it to --frames; 0: no growth")
        _positive_int("max_objects (--max-objects)", self.max_objects, MAX_OBJECTS, "labels are uint8, 255 is void")
        if len(self.crop_size) != 2 or any(
            not isinstance(s, int) or s <= 0 or s % 16 or s > MAX_SIZE for s in self.crop_size
        ):
            raise ValueError(
                f"crop_size must be (height, width), positive multiples of 16 up to {MAX_SIZE}, "
                f"got {self.crop_size}"
            )
        lo, hi = self.crop_scale if len(self.crop_scale) == 2 else (-1.0, -1.0)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must be (lo, hi) with 0 < lo <= hi <= 1, got {self.crop_scale}")
        if self.affine_degrees < 0 or self.affine_shear < 0 or self.color_jitter < 0:
            raise ValueError("affine_degrees, affine_shear and color_jitter must be >= 0")
        _positive_int("gap_start (--gap-start)", self.gap_start, MAX_GAP, "frames")
        _positive_int("gap_end (--gap-end)", self.gap_end, MAX_GAP, "frames")
        if self.gap_end < self.gap_start:
            raise ValueError(f"gap_end ({self.gap_end}) must be >= gap_start ({self.gap_start})")
        overlap = sorted(set(self.sequences) & set(self.exclude_sequences))
        if overlap:
            raise ValueError(f"sequences {overlap} are both selected and excluded")

    @property
    def composite_strength(self) -> "PathStrength":
        """The composite paths' :class:`stmae.composite.PathStrength` (ValueError, naming the
        flags, if a value is out of its range)."""
        from stmae.composite import PathStrength  # here: numpy and cv2, not for --help

        try:
            return PathStrength(self.composite_motion, self.composite_scale, self.composite_rotation)
        except ValueError as exc:
            raise ValueError(f"{exc} (--composite-motion, --composite-scale, --composite-rotation)") from None


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with the learning rate scaled linearly with the global batch:
    lr = base_lr * global_batch / base_batch. grad_clip: max gradient norm (0: off)."""

    base_lr: float = 2e-5
    base_batch: int = 32
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if not (self.base_lr > 0 and math.isfinite(self.base_lr)):
            raise ValueError(f"base_lr (--lr) must be a finite number > 0, got {self.base_lr}")
        _positive_int("base_batch", self.base_batch)
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if not (self.grad_clip >= 0 and math.isfinite(self.grad_clip)):
            raise ValueError(f"grad_clip must be >= 0 (0 disables it), got {self.grad_clip}")

    def lr_for(self, global_batch: int) -> float:
        return self.base_lr * global_batch / self.base_batch


@dataclass(frozen=True)
class ScheduleConfig:
    """Run length and learning-rate schedule.

    steps: optimizer steps in the run; warmup_steps: linear warm-up from 0;
    decay_at: steps after which the lr is multiplied by decay_factor (step decay);
    max_minutes: stop early (saving a checkpoint) after this much wall time (0: no limit).
    """

    steps: int = 150_000
    warmup_steps: int = 0
    decay_at: tuple[int, ...] = (125_000,)
    decay_factor: float = 0.1
    max_minutes: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "decay_at", tuple(int(s) for s in self.decay_at))
        _positive_int("steps (--steps)", self.steps, MAX_STEPS)
        _non_negative_int("warmup_steps (--warmup)", self.warmup_steps, MAX_STEPS)
        if list(self.decay_at) != sorted(self.decay_at) or any(not 0 < s <= MAX_STEPS for s in self.decay_at):
            raise ValueError(f"decay_at must be increasing steps in 1..{MAX_STEPS}, got {self.decay_at}")
        if not 0 < self.decay_factor <= 1:
            raise ValueError(f"decay_factor must be in (0, 1], got {self.decay_factor}")
        if not self.max_minutes >= 0:
            raise ValueError(f"max_minutes must be >= 0 (0: no limit), got {self.max_minutes}")


@dataclass(frozen=True)
class ValidationConfig:
    """J&F on named sequences through the runtime, every ``every_steps`` steps (0: off).

    root: DAVIS-layout folder; resolution: its <res> sub-folder; sequences: the videos;
    max_frames: score at most this many frames per video (0: all; else at least 3);
    size: the runtime session's working size (shorter side in pixels; -1: frames as they
    are, e.g. to score at the training resolution)."""

    root: str = ""
    resolution: str = "480p"
    sequences: tuple[str, ...] = ()
    every_steps: int = 0
    max_frames: int = 0
    size: int = 480

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", str(self.root))
        object.__setattr__(self, "sequences", tuple(self.sequences))
        _non_negative_int("every_steps (--val-every)", self.every_steps, MAX_STEPS)
        _non_negative_int("max_frames", self.max_frames)
        if 0 < self.max_frames < 3:
            raise ValueError(f"max_frames must be 0 (all) or >= 3, got {self.max_frames}")
        if not isinstance(self.size, int) or not (self.size == -1 or 16 <= self.size <= MAX_SIZE):
            raise ValueError(f"validation size must be -1 or 16..{MAX_SIZE} pixels, got {self.size!r}")
        if self.every_steps and not (self.root and self.sequences):
            raise ValueError("validation every_steps > 0 needs a root and sequences")

    @property
    def enabled(self) -> bool:
        return self.every_steps > 0


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run.

    model: preset name of a fresh network ('published', 'small'); init_checkpoint: start
    from these weights instead (fine-tuning; its config wins over ``model``);
    batch_size: clips per process and step; num_refs: R, reference frames of the backward
    step; seed: everything random is a function of it (and of the rank);
    output_dir: checkpoints, CSV and TensorBoard logs; device: 'auto', 'cpu', 'cuda';
    precision: 'auto' (fp16 autocast + GradScaler on CUDA, fp32 on CPU), 'fp32', 'fp16',
    'bf16'; checkpoint_every: steps between checkpoints (0: only at the end);
    checkpoint_minutes: also checkpoint after this many minutes since the last one (0: off);
    log_every: steps between log rows.
    """

    data: DataConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    model: str = "published"
    init_checkpoint: str = ""
    batch_size: int = 4
    num_refs: int = 3
    seed: int = 0
    output_dir: str = "runs/train"
    device: str = "auto"
    precision: str = "auto"
    checkpoint_every: int = 1000
    checkpoint_minutes: float = 0.0
    log_every: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_dir", str(self.output_dir))
        object.__setattr__(self, "init_checkpoint", str(self.init_checkpoint))
        from stmae.config import PRESETS  # here, not at the top: stmae's package imports torch

        if self.model not in PRESETS:
            raise ValueError(f"unknown model preset {self.model!r}; choose one of {sorted(PRESETS)}")
        _positive_int("batch_size (--batch-size)", self.batch_size)
        _positive_int("num_refs (--refs)", self.num_refs, MAX_CLIP_FRAMES, "reference frames of a clip")
        _non_negative_int("seed (--seed)", self.seed, MAX_SEED)
        h, w = self.data.crop_size
        batch_bytes = self.batch_size * self.data.num_frames * 3 * h * w * 4
        if batch_bytes > MAX_BATCH_BYTES:
            raise ValueError(
                f"one training batch of {self.batch_size} clips x {self.data.num_frames} frames x 3 x {h} x {w} "
                f"float32 takes {batch_bytes / 2**30:.3g} GiB, more than {MAX_BATCH_BYTES // 2**30} GiB; "
                "lower --batch-size, --frames or --crop"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ValueError(
                f"precision must be 'auto', 'fp32', 'fp16' or 'bf16', got {self.precision!r}"
            )
        _non_negative_int("checkpoint_every (--checkpoint-every)", self.checkpoint_every, MAX_STEPS)
        if not self.checkpoint_minutes >= 0:
            raise ValueError("checkpoint_minutes must be >= 0 (0: off)")
        _positive_int("log_every (--log-every)", self.log_every, MAX_STEPS)
        check_processing_size(self.processing_size, "the processing size this run would record",
                              "it comes from --val-size, else the number of --davis-resolution")

    @property
    def processing_size(self) -> int:
        """The shorter side (pixels) of the frames this run trains at, recorded in its
        checkpoints for ``--size auto``: the validation size when validation runs at a
        fixed size, else the DAVIS resolution (crops are cut from frames at that scale,
        e.g. 192x192 crops of 240p frames -> 240), else the published 480."""
        if self.validation.enabled and self.validation.size != -1:
            return self.validation.size
        if self.data.davis_roots and not self.data.youtube_roots:
            digits = self.data.davis_resolution.rstrip("p")
            if digits.isdigit() and int(digits) >= 16:
                return int(digits)
        return 480

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        sections = {"data": DataConfig, "optim": OptimConfig, "schedule": ScheduleConfig,
                    "validation": ValidationConfig}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config fields {unknown}")
        kwargs = dict(data)
        for name, section in sections.items():
            if name in kwargs:
                sub = dict(kwargs[name])
                sub_known = {f.name for f in fields(section)}
                bad = sorted(set(sub) - sub_known)
                if bad:
                    raise ValueError(f"unknown fields {bad} in the {name!r} section")
                kwargs[name] = section(**sub)
        return cls(**kwargs)
