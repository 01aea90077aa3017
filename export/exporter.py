"""``stmae-export``'s work: checkpoint -> two checked ONNX graphs + manifest, behind a gate.

Steps (all in a temporary folder next to ``out_dir``, renamed into place only at the end):

1. Load the checkpoint; export the fp32 key encoder and mask autoencoder (dynamic batch,
   objects, H and W); ``onnx.checker`` and strict shape inference.
2. Gate (fp32): PyTorch vs ONNX Runtime on a shape other than the traced one; every output
   within ``fp32_max_rel_error``.
3. fp16 (ModelOpt AutoCast) or int8 (Q/DQ, calibrated on a clip), keeping the float32
   islands of :mod:`export.fp32_islands`; checks again; TensorRT operator check.
4. Gate (fp16/int8): the PyTorch and ONNX Runtime pipelines over a real clip; mean IoU of
   their masks at least the threshold; J&F of both recorded; top-k sensitivity recorded.
5. manifest.json with hashes and every number measured; rename into place.

Any failure raises (ExportError / ExportGateError) and leaves nothing at ``out_dir``.

Memory is bounded by design, not by the number of frames: graph inputs are spooled to disk
as they are recorded (:mod:`export.feeds`) and every consumer reads them one at a time;
AutoCast's reference run keeps per-tensor ranges, not activations
(:mod:`export.autocast_reference`); the gate streams its frames (:mod:`export.parity`).
The clips themselves (uint8 frames and masks) stay in memory.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import shutil
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from runtime.backends.ort_backend import OrtBackend, available_cpu_cores
from runtime.backends.torch_backend import TorchBackend
from runtime.config import SessionConfig
from runtime.engine.transforms import FrameGeometry
from runtime.export_manifest import (
    CONTRACT_VERSION,
    GRAPH_FILES,
    KEY_ENCODER,
    MANIFEST_NAME,
    MASK_AUTOENCODER,
    ExportManifest,
    GraphSpec,
    sha256_file,
)
from stmae.atomic import atomic_write_text, fsync_dir, make_temp_dir, remove_stale_temps, temp_path_for
from stmae.checkpoint import load_checkpoint
from stmae.outputs import OutputError, prepare_output_folder, refuse_alias

from . import parity
from .clips import Clip, folder_clip, record_graph_inputs, synthetic_clip
from .config import ExportConfig
from .fp32_islands import key_encoder_fp32_nodes, mask_autoencoder_fp32_nodes
from .graphs import check_graph, export_key_encoder, export_mask_autoencoder, graph_io, save_model
from .int8_layout import choose_cpu_layout
from .precision import PrecisionToolMissing, convert_fp16, quantize_int8
from .trt_compat import check_tensorrt_compatibility


# ONNX Runtime transformers that sessions must switch off, per precision (written into the
# manifest). int8: the quantizer gives every reader of a tensor its own Q/DQ pair, because
# ONNX Runtime fuses DQ -> Conv -> Q into QLinearConv only when the DQ has one reader;
# common subexpression elimination would merge those pairs back (measured on the 480x864
# mask autoencoder: 11 of 35 convolutions stayed float32, 770 ms instead of 460 ms).
ORT_DISABLED_OPTIMIZERS: dict[str, tuple[str, ...]] = {"int8": ("CommonSubexpressionElimination",)}


class ExportError(RuntimeError):
    """The export cannot be made; the message says why and what to do."""


class ExportGateError(ExportError):
    """The parity gate failed; the message gives the numbers."""


@dataclass
class ExportResult:
    out_dir: Path
    manifest: ExportManifest
    seconds: dict[str, float] = field(default_factory=dict)


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("stmae", "torch", "onnx", "onnxscript", "onnxruntime-gpu", "onnxruntime", "nvidia-modelopt"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def is_export_folder(folder: Path) -> bool:
    """Whether ``folder`` was written by stmae-export: its manifest.json names the export
    format (the only kind of folder ``--overwrite`` replaces)."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("format") == "stmae-onnx-export"


def _check_destination(config: ExportConfig) -> None:
    """Refuse an --out that aliases an input, a file, or (with --overwrite) a folder that
    is not an export; prove the parent folder writable before the long work starts."""
    out = config.out_dir
    refuse_alias(out, "--out", {
        "the checkpoint": config.checkpoint, "--calibration": config.calibration,
        "--verify-frames": config.verify_frames, "--verify-masks": config.verify_masks,
    })
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; remove it or choose another --out")
    if out.exists() and not config.overwrite:
        raise ExportError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")
    if out.exists() and not is_export_folder(out):
        raise ExportError(
            f"--overwrite replaces only a folder written by stmae-export, and {out} has no export "
            f"manifest.json; it was left untouched: choose another --out"
        )
    if not out.parent.is_dir():
        raise ExportError(f"the parent folder of --out ({out.parent}) does not exist")
    try:
        prepare_output_folder(out.parent, "the folder of --out", create=False)
    except OutputError as exc:
        raise ExportError(str(exc)) from None
    remove_stale_temps(out.parent, out.name)


# The default synthetic calibration and verification clips ('scene' style, two objects, one
# passing partly behind the other; the verification clip is the demo's clip).
CALIBRATION_SEED = 0
VERIFICATION_SEED = 3
SYNTHETIC_OBJECTS = 2


def _clips(config: ExportConfig, work_size: int) -> tuple[Clip, SessionConfig, Clip, SessionConfig]:
    """(calibration clip, its session config, verification clip, its session config).

    Folders of frames are processed at ``work_size`` (the network's resolution); without
    folders, synthetic clips are made at that resolution (16:9; 240 -> 427x240) so that
    calibration and the gate see what the model sees in use."""
    synth_h = 240 if work_size == -1 else work_size
    synth_w = int(round(synth_h * 16 / 9))
    if config.calibration is not None:
        calib = folder_clip(config.calibration, None, config.calibration_frames)
        calib_cfg = SessionConfig(size=work_size, mem_every=1)
    else:
        calib = synthetic_clip(config.calibration_frames, synth_h, synth_w, seed=CALIBRATION_SEED, objects=SYNTHETIC_OBJECTS)
        calib_cfg = SessionConfig(size=-1, mem_every=1)
    if config.verify_frames is not None:
        verify = folder_clip(config.verify_frames, config.verify_masks, config.verify_max_frames)
        verify_cfg = SessionConfig(size=work_size)
    else:
        verify = synthetic_clip(config.verify_max_frames, synth_h, synth_w, seed=VERIFICATION_SEED, objects=SYNTHETIC_OBJECTS)
        verify_cfg = SessionConfig(size=-1)
    return calib, calib_cfg, verify, verify_cfg


def _graph_spec(path: Path) -> GraphSpec:
    inputs, outputs = graph_io(path)
    return GraphSpec(path.name, sha256_file(path), path.stat().st_size, inputs, outputs)


def _write_manifest(folder: Path, manifest: ExportManifest) -> None:
    atomic_write_text(folder / MANIFEST_NAME, manifest.to_json(), durable=True)


def _replace_into_place(tmp: Path, out: Path) -> None:
    backup = None
    if out.exists():
        if not is_export_folder(out):  # checked up front; checked again right before replacing
            raise ExportError(f"{out} is not an stmae-export folder; it was left untouched")
        backup = temp_path_for(out)
        out.rename(backup)
    try:
        tmp.rename(out)
    except BaseException:
        if backup is not None:
            backup.rename(out)
        raise
    fsync_dir(out.parent)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def run_export(config: ExportConfig, log: Callable[[str], None] = lambda _m: None) -> ExportResult:
    """Make the export folder ``config.out_dir``; see the module docstring."""
    _check_destination(config)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    loaded = load_checkpoint(config.checkpoint, device="cpu")
    model = loaded.model
    checkpoint_sha = sha256_file(config.checkpoint)
    processing_size = loaded.recommended_size
    work_size = config.work_size if config.work_size is not None else processing_size
    calib, calib_cfg, verify_clip, verify_cfg = _clips(config, work_size)
    tmp = make_temp_dir(config.out_dir)
    try:
        manifest = _build(config, model, loaded.config.to_dict(), checkpoint_sha, calib, calib_cfg,
                          verify_clip, verify_cfg, tmp, seconds, log, processing_size, loaded.mem_every)
        _replace_into_place(tmp, config.out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds["total"] = time.perf_counter() - start
    return ExportResult(config.out_dir, manifest, seconds)


def _timed(seconds: dict, key: str, fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    seconds[key] = round(time.perf_counter() - t0, 2)
    return out


def _build(config, model, model_config, checkpoint_sha, calib, calib_cfg, verify_clip, verify_cfg, tmp, seconds, log,
           processing_size, mem_every=None):
    precision = config.precision
    fp32_dir = tmp if precision == "fp32" else tmp / "_fp32"
    fp32_dir.mkdir(exist_ok=True)
    fp32 = {name: fp32_dir / GRAPH_FILES[name] for name in GRAPH_FILES}
    final = {name: tmp / GRAPH_FILES[name] for name in GRAPH_FILES}

    log(f"exporting the fp32 graphs (opset {config.opset}, traced at {config.trace.height}x{config.trace.width})")
    key_model = _timed(seconds, "export_key_encoder", export_key_encoder, model, config.opset, config.trace)
    save_model(key_model, fp32[KEY_ENCODER])
    mask_model = _timed(seconds, "export_mask_autoencoder", export_mask_autoencoder, model, config.opset, config.trace)
    save_model(mask_model, fp32[MASK_AUTOENCODER])
    for path in fp32.values():
        _checked(path)

    trace = config.trace
    shape = parity.ParityShape(batch=1, objects=trace.objects + 1, height=trace.height + 16, width=trace.width + 32)
    verification: dict = {"verified": config.verify, "thresholds": {}}
    if config.verify:
        errors = _timed(seconds, "gate_fp32_graphs", parity.graph_parity, model, fp32[KEY_ENCODER], fp32[MASK_AUTOENCODER], shape)
        limit = config.thresholds.fp32_max_rel_error
        verification["thresholds"]["fp32_max_rel_error"] = limit
        verification["fp32_graph_parity"] = {"shape": vars(shape), "rel_error": errors}
        log("fp32 graphs vs PyTorch at " + f"{shape.batch}x{shape.objects}x{shape.height}x{shape.width}: "
            + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
        bad = {k: v for k, v in errors.items() if not v < limit}
        if bad:
            raise ExportGateError(
                "parity gate failed: fp32 graph outputs differ from PyTorch beyond the relative "
                f"error {limit:.0e}: " + ", ".join(f"{k} {v:.3e}" for k, v in bad.items())
            )
    else:
        verification["skipped"] = "--no-verify: the parity gate was not run; the graphs are unverified"

    details: dict = {"key_encoder_float32": config.key_fp32_policy}
    if precision != "fp32":
        keep_key = key_encoder_fp32_nodes(key_model, config.key_fp32_policy)
        keep_mask = mask_autoencoder_fp32_nodes(mask_model)
        details["mask_autoencoder_float32"] = "coarse upsampling, others channel, soft aggregation"
        log(f"recording graph inputs from {calib.source}")
        # Spooled to disk as recorded and read back one at a time by every step below.
        feeds_dir = tmp / "_calibration_feeds"
        key_feeds, mask_feeds = _timed(seconds, "calibration_inputs", record_graph_inputs, model, calib, calib_cfg,
                                       feeds_dir)
        details["calibration"] = {"source": calib.source, "key_encoder_feeds": len(key_feeds),
                                  "mask_autoencoder_feeds": len(mask_feeds)}
        jobs = ((KEY_ENCODER, keep_key, key_feeds), (MASK_AUTOENCODER, keep_mask, mask_feeds))
        if precision == "fp16":
            log(f"converting to fp16 with ModelOpt AutoCast (float32 kept: key encoder "
                f"'{config.key_fp32_policy}', mask aggregation)")
            for name, keep, feeds in jobs:
                details[name] = _converted(seconds, f"fp16_{name}", convert_fp16, fp32[name], final[name], feeds, keep)
        else:
            log(f"quantizing to int8 for target {config.target} with {config.quantizer} "
                f"({len(key_feeds)}/{len(mask_feeds)} calibration feeds)")
            for name, keep, feeds in jobs:
                if name == KEY_ENCODER and config.key_fp32_policy == "all":
                    shutil.copyfile(fp32[name], final[name])
                    details[name] = {"tool": "none (kept float32)"}
                    continue
                details[name] = _converted(seconds, f"int8_{name}", quantize_int8, fp32[name], final[name], feeds, keep,
                                           config.quantizer)
                if config.quantizer == "onnxruntime":  # the CPU layout: time both weight layouts here
                    layout = _timed(seconds, f"layout_{name}", choose_cpu_layout, final[name], feeds[0],
                                    ORT_DISABLED_OPTIMIZERS["int8"], available_cpu_cores())
                    details[name]["convolution_layout"] = layout
                    if "timed_ms" in layout:
                        log(f"{name}: int8 convolutions with {layout['layout'].split(' (')[0]} "
                            f"({layout['timed_ms']['symmetric']} ms symmetric, "
                            f"{layout['timed_ms']['zero_point_1']} ms zero point 1, here)")
        shutil.rmtree(feeds_dir)
        for path in final.values():
            _checked(path)

    problems = [p for path in final.values() for p in check_tensorrt_compatibility(path)]
    verification["tensorrt_operator_check"] = {"source": "onnx-tensorrt docs/operators.md (TensorRT 10.15)",
                                               "problems": problems}
    cpu_int8 = precision == "int8" and config.target == "cpu"
    if problems and cpu_int8:
        # The CPU int8 layout is for ONNX Runtime (its weights may have zero point 1, which
        # TensorRT refuses): recorded, not refused; --target tensorrt makes the TensorRT layout.
        verification["tensorrt_operator_check"]["applies"] = "no: --target cpu (use --target tensorrt for TensorRT)"
    elif problems:
        raise ExportError("the graphs would not build with TensorRT: " + "; ".join(problems[:10]))

    manifest = ExportManifest(
        contract_version=CONTRACT_VERSION,
        precision=precision,
        opset=config.opset,
        model_config=model_config,
        graphs={name: _graph_spec(path) for name, path in final.items()},
        source_checkpoint={"file": config.checkpoint.name, "sha256": checkpoint_sha},
        tools=_versions(),
        precision_details=details,
        verification=verification,
        created_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        onnxruntime_disabled_optimizers=ORT_DISABLED_OPTIMIZERS.get(precision, ()),
        target=config.target,
        processing_size=processing_size,
        tf32=False,  # the parity gate's references run IEEE float32 on the CPU
        mem_every=mem_every,
    )
    _write_manifest(tmp, manifest)
    if fp32_dir != tmp:
        shutil.rmtree(fp32_dir)
    if config.verify:
        verification.update(_timed(seconds, "gate_pipelines", _verify_pipelines, config, model, fp32, final,
                                   shape, verify_clip, verify_cfg, tmp, manifest, log))
        verification["seconds"] = dict(seconds)
        _pipeline_gate(config, verification)
        _write_manifest(tmp, manifest)
    return manifest


def _converted(seconds: dict, key: str, fn, *args):
    """Run a precision conversion; tool failures become an ExportError naming the step."""
    try:
        return _timed(seconds, key, fn, *args)
    except PrecisionToolMissing:
        raise
    except Exception as exc:  # converters raise anything from onnx/ORT/ModelOpt internals
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"{key.replace('_', ' ', 1)} failed: {type(exc).__name__}: {first}") from exc


def _checked(path: Path) -> None:
    try:
        check_graph(path)
    except Exception as exc:  # onnx raises ValidationError / InferenceError / others
        raise ExportError(f"{path.name} fails onnx.checker or shape inference: {exc}") from None


def _verify_pipelines(config, model, fp32, final, shape, clip, session_config, tmp, manifest, log) -> dict:
    out: dict = {}
    if config.precision != "fp32":
        out["graph_rel_error"] = parity.graph_parity(model, final[KEY_ENCODER], final[MASK_AUTOENCODER], shape)
        session = parity.cpu_session(final[KEY_ENCODER], manifest.onnxruntime_disabled_optimizers)

        def key_pairs():  # (PyTorch f16, ONNX Runtime f16), one frame at a time
            for feed in _clip_images(clip, session_config):
                with torch.inference_mode():
                    ref = model.encode_key(torch.from_numpy(feed["image"]))[0].numpy()
                yield ref, session.run(["f16"], feed)[0]

        out["topk_sensitivity"] = parity.topk_sensitivity(key_pairs(), manifest.top_k)
    log(f"comparing the PyTorch and ONNX Runtime pipelines on {clip.source}")
    # The gate runs every export on ONNX Runtime's CPU provider, whatever its target: the
    # runtime's layout warning (a TensorRT layout on the CPU) is not news here.
    with contextlib.redirect_stderr(io.StringIO()):
        candidate = OrtBackend.from_export_dir(tmp, device="cpu")
    agreement = parity.pipeline_agreement(TorchBackend(model, "cpu", "fp32"), candidate,
                                          clip, session_config)
    out["pipeline"] = {"clip": clip.source, **agreement.to_dict()}
    jf = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    log(f"pipelines: mean IoU {agreement.mean_iou:.4f}, pixel agreement {agreement.pixel_agreement:.5f}, "
        f"J&F torch {jf(agreement.jf_reference)} / onnxruntime {jf(agreement.jf_candidate)}")
    return out


def _clip_images(clip: Clip, session_config: SessionConfig) -> Iterator[dict[str, np.ndarray]]:
    """The clip's frames as the session feeds them to the key encoder, {"image": (1, 3, Hp,
    Wp) float32}, made one at a time."""
    h, w = clip.frames.shape[1:3]
    geo = FrameGeometry.for_frame(h, w, session_config.size)
    for frame in clip.frames:
        yield {"image": geo.prepare_image(frame, torch.device("cpu")).numpy()}


# What to try next when the fp16/int8 gate refuses, per precision.
_GATE_HINTS = {
    "int8": ("try: calibrate on frames like yours (--calibration FRAMES_DIR), verify on a clip with ground truth "
             "(--verify-frames DIR --verify-masks DIR), keep the key encoder float32 (--key-fp32 all), or export "
             "--precision fp16 / fp32; --max-jf-drop D accepts a larger drop"),
    "fp16": ("try: keep the key encoder float32 (--key-fp32 all), verify on a clip with ground truth "
             "(--verify-frames DIR --verify-masks DIR), or export --precision fp32; --max-jf-drop D accepts a larger drop"),
}


def _pipeline_gate(config: ExportConfig, verification: dict) -> None:
    """fp16/int8: with ground truth, the J&F drop against the fp32 PyTorch pipeline must be
    within the tolerance (the mean IoU between the two is reported beside it); without,
    the mean IoU between them must reach the threshold. Raises ExportGateError."""
    if config.precision == "fp32":
        return
    precision = config.precision
    agreement = verification["pipeline"]
    thresholds = verification["thresholds"]
    jf_ref, jf_cand = agreement["jf_reference"], agreement["jf_candidate"]
    agree = f"mean IoU {agreement['mean_iou']:.4f} between the pipelines, pixel agreement {agreement['pixel_agreement']:.4f}"
    if jf_ref is not None and jf_cand is not None:
        limit = config.thresholds.max_jf_drop(precision)
        drop = jf_ref - jf_cand
        agreement["jf_drop"] = drop
        thresholds[f"{precision}_max_jf_drop"] = limit
        thresholds["criterion"] = ("accuracy drop: J&F of the PyTorch fp32 pipeline minus J&F of the ONNX Runtime "
                                   "pipeline against the clip's ground truth (mutual mean IoU reported beside it)")
        passed = drop <= limit
        measured = (f"{precision} J&F {jf_cand:.4f} vs fp32 {jf_ref:.4f} against ground truth: drop {drop:+.4f} "
                    f"{'<=' if passed else '>'} {limit} ({agree})")
    else:
        limit = config.thresholds.min_iou(precision)
        thresholds[f"{precision}_min_iou"] = limit
        thresholds["criterion"] = "agreement (no ground truth): mean IoU of the ONNX Runtime vs PyTorch pipeline masks"
        passed = agreement["mean_iou"] >= limit
        measured = (f"{precision} pipeline masks agree with PyTorch at mean IoU {agreement['mean_iou']:.4f} "
                    f"{'>=' if passed else '<'} {limit} (no ground truth; pixel agreement {agreement['pixel_agreement']:.4f})")
    verification["gate"] = {"passed": passed, "measured": measured}
    if not passed:
        raise ExportGateError(
            f"parity gate failed: {measured} on {agreement['clip']}; {_GATE_HINTS[precision]}"
        )
