"""The contract between ``stmae-export`` and the runtime: ``manifest.json`` of an export folder.

An export folder holds two ONNX graphs and a manifest::

    key_encoder.onnx        image (B,3,H,W) -> f16 (B,C16,H/16,W/16), f8, f4
    mask_autoencoder.onnx   image, f16, f8, f4, coarse (B,N,H/16,W/16) -> prob (B,N+1,H,W)
    manifest.json           contract version, graph I/O, precision, hashes, parity numbers

The runtime reads the manifest as JSON (it never imports the export package) and refuses
an export whose contract version it does not know, or whose files do not match their
sha256, with an :class:`ExportManifestError` that says what is wrong and what to do.
The export package imports the constants and :class:`ExportManifest` from here, so the
writer and the reader share one schema.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from stmae.checkpoint_peek import RECORDED, valid_recorded  # torch-free

# Bump when the graphs' I/O or the manifest's schema change incompatibly.
CONTRACT_VERSION = 1
SUPPORTED_CONTRACT_VERSIONS = frozenset({CONTRACT_VERSION})
MANIFEST_FORMAT = "stmae-onnx-export"
MANIFEST_NAME = "manifest.json"

KEY_ENCODER = "key_encoder"
MASK_AUTOENCODER = "mask_autoencoder"
GRAPH_FILES = {KEY_ENCODER: "key_encoder.onnx", MASK_AUTOENCODER: "mask_autoencoder.onnx"}
# Graph I/O names, in order.
GRAPH_INPUTS = {KEY_ENCODER: ("image",), MASK_AUTOENCODER: ("image", "f16", "f8", "f4", "coarse")}
GRAPH_OUTPUTS = {KEY_ENCODER: ("f16", "f8", "f4"), MASK_AUTOENCODER: ("prob",)}
PRECISIONS = ("fp32", "fp16", "int8")
# What an export's int8 layout was made for: 'cpu' (ONNX Runtime's CPU provider: its QDQ
# quantizer, a Q/DQ pair per reader, CSE off) or 'tensorrt' (ModelOpt's Q/DQ layout).
TARGETS = ("cpu", "tensorrt")
_CHUNK = 1 << 20


class ExportManifestError(ValueError):
    """An export folder the runtime cannot use; the message says why and how to fix it."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type ('float32', ...), shape with
    ints for static axes and names (e.g. 'batch', '16*h16') for dynamic axes."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "dynamic_axes": {str(i): d for i, d in self.dynamic_axes.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> "TensorSpec":
        try:
            shape = tuple(d if isinstance(d, str) else int(d) for d in data["shape"])
            return cls(name=str(data["name"]), dtype=str(data["dtype"]), shape=shape)
        except (KeyError, TypeError, ValueError) as exc:
            raise ExportManifestError(f"{where}: malformed tensor entry {data!r} ({exc})") from None


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX file of the export: its file name, sha256, size and I/O."""

    file: str
    sha256: str
    size_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def output(self, name: str) -> TensorSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


@dataclass(frozen=True)
class ExportManifest:
    """The parsed manifest.

    precision: 'fp32', 'fp16' or 'int8' (decided in the graphs); opset: ONNX opset;
    model_config: the STMAE ModelConfig as a dict (top_k is the readout's default);
    graphs: {'key_encoder': GraphSpec, 'mask_autoencoder': GraphSpec};
    source_checkpoint: {'file': name, 'sha256': hex}; tools: package versions used;
    precision_details: how the precision was applied (kept-float32 nodes, calibration);
    verification: {'verified': bool, parity numbers, thresholds, TensorRT op check};
    onnxruntime_disabled_optimizers: ONNX Runtime graph transformers a session must switch
        off to run these graphs as intended (int8: 'CommonSubexpressionElimination', which
        would merge the per-reader Q/DQ pairs back and stop the QLinearConv fusion).
    target: what the graphs' layout was made for ('cpu' or 'tensorrt'; '' for exports
        written before the field existed);
    processing_size: the shorter side (pixels) the source network runs at (its
        checkpoint's ``processing_size``, else 480); ``--size auto`` uses it; None for
        exports written before the field existed.
    mem_every: the memory interval (frames) the source checkpoint records for running it,
        or None when it records none (``--mem-every auto`` then uses the published 5).
    tf32: whether the parity numbers in ``verification`` were measured with TF32 allowed
        in float32 products and convolutions (False: IEEE float32 references, as the gate
        runs on the CPU; exports written before the field existed read as False).
    """

    contract_version: int
    precision: str
    opset: int
    model_config: dict[str, Any]
    graphs: dict[str, GraphSpec]
    source_checkpoint: dict[str, Any]
    tools: dict[str, str]
    precision_details: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    created_utc: str = ""
    onnxruntime_disabled_optimizers: tuple[str, ...] = ()
    target: str = ""
    processing_size: int | None = None
    tf32: bool = False
    mem_every: int | None = None

    @property
    def verified(self) -> bool:
        return bool(self.verification.get("verified", False))

    @property
    def top_k(self) -> int:
        return int(self.model_config.get("top_k", 30))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "contract_version": self.contract_version,
            "created_utc": self.created_utc,
            "precision": self.precision,
            "opset": self.opset,
            "model_config": dict(self.model_config),
            "graphs": {k: g.to_dict() for k, g in self.graphs.items()},
            "source_checkpoint": dict(self.source_checkpoint),
            "tools": dict(self.tools),
            "precision_details": self.precision_details,
            "verification": self.verification,
            "onnxruntime_disabled_optimizers": list(self.onnxruntime_disabled_optimizers),
            "target": self.target,
            "processing_size": self.processing_size,
            "tf32": self.tf32,
            "mem_every": self.mem_every,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


def int8_layout(manifest: ExportManifest) -> str:
    """What an int8 export's Q/DQ layout was made for: 'cpu', 'tensorrt', or '' (not int8,
    or unknown). Exports from before the manifest had ``target`` are judged by their tool."""
    if manifest.precision != "int8":
        return ""
    if manifest.target:
        return manifest.target
    tools = " ".join(str(d.get("tool", "")) for d in manifest.precision_details.values() if isinstance(d, dict))
    if "modelopt" in tools:
        return "tensorrt"
    if "onnxruntime" in tools:
        return "cpu"
    return ""


def layout_warning(manifest: ExportManifest, provider: str) -> str | None:
    """One line when an export's int8 layout does not fit the provider that runs it
    ('CPUExecutionProvider', 'TensorrtExecutionProvider', or 'tensorrt' for the TensorRT
    backend), else None."""
    layout = int8_layout(manifest)
    if layout == "tensorrt" and provider == "CPUExecutionProvider":
        return ("this int8 export has the TensorRT Q/DQ layout (stmae-export --target tensorrt); ONNX Runtime's CPU "
                "provider runs its convolutions in float32, about as slow as fp32: re-export with --target cpu")
    if layout == "cpu" and provider in ("TensorrtExecutionProvider", "tensorrt"):
        return ("this int8 export has ONNX Runtime's CPU Q/DQ layout (stmae-export --target cpu); for TensorRT "
                "re-export with --target tensorrt")
    return None


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _string_tuple(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ExportManifestError(f"{where} must be a list of transformer names, got {value!r}")
    return tuple(value)


def parse_manifest(data: Any, source: str = MANIFEST_NAME) -> ExportManifest:
    """Validate a manifest dict (as read from JSON) and return an :class:`ExportManifest`."""
    if not isinstance(data, dict):
        raise ExportManifestError(f"{source}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != MANIFEST_FORMAT:
        raise ExportManifestError(
            f"{source}: not an STMAE export manifest (format={data.get('format')!r}, "
            f"expected {MANIFEST_FORMAT!r}); export the checkpoint with stmae-export"
        )
    version = data.get("contract_version")
    # true == 1 in Python: a JSON boolean is not a version number.
    if isinstance(version, bool) or not isinstance(version, int) or version not in SUPPORTED_CONTRACT_VERSIONS:
        raise ExportManifestError(
            f"{source}: export contract version {version!r} is not supported by this runtime "
            f"(it knows {sorted(SUPPORTED_CONTRACT_VERSIONS)}); re-export the checkpoint with "
            f"this toolkit's stmae-export, or install the toolkit version that wrote it"
        )
    precision = data.get("precision")
    if precision not in PRECISIONS:
        raise ExportManifestError(
            f"{source}: unknown precision {precision!r}; expected one of {list(PRECISIONS)}"
        )
    graphs_raw = data.get("graphs")
    if not isinstance(graphs_raw, dict) or set(graphs_raw) != set(GRAPH_FILES):
        raise ExportManifestError(
            f"{source}: 'graphs' must describe exactly {sorted(GRAPH_FILES)}, "
            f"got {sorted(graphs_raw) if isinstance(graphs_raw, dict) else graphs_raw!r}"
        )
    graphs: dict[str, GraphSpec] = {}
    for name, raw in graphs_raw.items():
        where = f"{source}: graphs.{name}"
        try:
            spec = GraphSpec(
                file=str(raw["file"]),
                sha256=str(raw["sha256"]).lower(),
                size_bytes=int(raw["size_bytes"]),
                inputs=tuple(TensorSpec.from_dict(t, where) for t in raw["inputs"]),
                outputs=tuple(TensorSpec.from_dict(t, where) for t in raw["outputs"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ExportManifestError):
                raise
            raise ExportManifestError(f"{where}: missing or malformed field ({exc})") from None
        if Path(spec.file).name != spec.file:
            raise ExportManifestError(f"{where}: file {spec.file!r} must be a plain file name")
        got_in = tuple(t.name for t in spec.inputs)
        got_out = tuple(t.name for t in spec.outputs)
        if got_in != GRAPH_INPUTS[name] or got_out != GRAPH_OUTPUTS[name]:
            raise ExportManifestError(
                f"{where}: I/O {got_in} -> {got_out} does not match contract version {version} "
                f"({GRAPH_INPUTS[name]} -> {GRAPH_OUTPUTS[name]})"
            )
        graphs[name] = spec
    target = data.get("target", "")
    if target not in ("",) + TARGETS:
        raise ExportManifestError(f"{source}: unknown target {target!r}; expected one of {list(TARGETS)}")
    for key, (minimum, unit) in RECORDED.items():  # processing_size, mem_every
        value = data.get(key)
        if value is not None and not valid_recorded(key, value):
            raise ExportManifestError(f"{source}: {key} must be {unit} >= {minimum} or null, got {value!r}")
    tf32 = data.get("tf32", False)
    if not isinstance(tf32, bool):
        raise ExportManifestError(f"{source}: tf32 must be true or false, got {tf32!r}")
    try:
        return ExportManifest(
            contract_version=int(version),
            precision=str(precision),
            opset=int(data["opset"]),
            model_config=dict(data["model_config"]),
            graphs=graphs,
            source_checkpoint=dict(data.get("source_checkpoint", {})),
            tools={str(k): str(v) for k, v in dict(data.get("tools", {})).items()},
            precision_details=dict(data.get("precision_details", {})),
            verification=dict(data.get("verification", {})),
            created_utc=str(data.get("created_utc", "")),
            onnxruntime_disabled_optimizers=_string_tuple(
                data.get("onnxruntime_disabled_optimizers", []), f"{source}: onnxruntime_disabled_optimizers"
            ),
            target=target,
            processing_size=data.get("processing_size"),
            tf32=tf32,
            mem_every=data.get("mem_every"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportManifestError(f"{source}: missing or malformed field ({exc})") from None


def verify_files(manifest: ExportManifest, export_dir: str | Path) -> None:
    """Check that every graph file exists and matches its size and sha256."""
    export_dir = Path(export_dir)
    for name, spec in manifest.graphs.items():
        path = export_dir / spec.file
        if not path.is_file():
            raise ExportManifestError(
                f"{path} is missing; the export folder is incomplete (re-run stmae-export)"
            )
        size = path.stat().st_size
        digest = sha256_file(path) if size == spec.size_bytes else None
        if digest != spec.sha256:
            raise ExportManifestError(
                f"{path} does not match the manifest ({name}: expected sha256 "
                f"{spec.sha256[:16]}..., size {spec.size_bytes}; found "
                f"{(digest or 'n/a')[:16]}..., size {size}): the file was modified or "
                f"corrupted after export; re-run stmae-export"
            )
        check_graph_io(name, spec, path)
    check_precision(manifest, export_dir)


def check_precision(manifest: ExportManifest, export_dir: str | Path) -> None:
    """Refuse a manifest whose precision is not the one its graphs compute in: int8 graphs
    have QuantizeLinear/DequantizeLinear nodes, fp16 graphs float16 weights or casts and
    no Q/DQ, fp32 graphs neither (the backends choose buffers and settings by it)."""
    from .onnx_io import OnnxReadError, precision_marks

    marks = {"qdq": False, "float16": False}
    for spec in manifest.graphs.values():
        path = Path(export_dir) / spec.file
        try:
            found = precision_marks(path)
        except (OnnxReadError, UnicodeDecodeError, OSError) as exc:
            raise ExportManifestError(f"{path} cannot be read as an ONNX model ({exc}); re-run stmae-export") from None
        marks = {key: marks[key] or found[key] for key in marks}
    graphs = "int8" if marks["qdq"] else "fp16" if marks["float16"] else "fp32"
    if graphs != manifest.precision:
        what = {"int8": "Q/DQ (int8) nodes", "fp16": "float16 weights and no Q/DQ nodes",
                "fp32": "neither Q/DQ nodes nor float16 weights"}[graphs]
        raise ExportManifestError(
            f"{Path(export_dir) / MANIFEST_NAME} says precision {manifest.precision!r} but its graphs have "
            f"{what} ({graphs}): the manifest was edited or belongs to other graphs; re-run stmae-export"
        )


def check_graph_io(name: str, spec: GraphSpec, path: Path) -> None:
    """Refuse a manifest whose declared inputs/outputs (names, dtypes, shapes) are not the
    graph's own: the runtime sizes its buffers from the manifest."""
    from .onnx_io import OnnxReadError, graph_io

    try:
        inputs, outputs = graph_io(path)
    except (OnnxReadError, UnicodeDecodeError, OSError) as exc:
        raise ExportManifestError(f"{path} cannot be read as an ONNX model ({exc}); re-run stmae-export") from None

    def text(entry) -> str:
        return f"{entry[0]} {entry[1]} {list(entry[2])}"

    for kind, declared, actual in (("input", spec.inputs, inputs), ("output", spec.outputs, outputs)):
        want = [(t.name, t.dtype, tuple(t.shape)) for t in declared]
        if want == actual:
            continue
        pair = next(((d, a) for d, a in zip(want, actual) if d != a), None)
        found = (f"declared {text(pair[0])}, the graph has {text(pair[1])}" if pair else
                 f"declared {len(want)} {kind}s, the graph has {len(actual)}")
        raise ExportManifestError(
            f"{path.name} does not match the manifest's {name} {kind}s ({found}): the manifest was edited "
            f"or belongs to other graphs; re-run stmae-export"
        )


def load_manifest(export_dir: str | Path, verify_hashes: bool = True) -> ExportManifest:
    """Read and validate ``export_dir/manifest.json``; by default also check the graphs'
    hashes and that their inputs/outputs are the ones the manifest declares."""
    export_dir = Path(export_dir)
    path = export_dir / MANIFEST_NAME
    if not export_dir.is_dir():
        raise ExportManifestError(
            f"export folder {export_dir} does not exist; create one with "
            f"'stmae-export CHECKPOINT --out {export_dir}'"
        )
    if not path.is_file():
        raise ExportManifestError(
            f"{export_dir} has no {MANIFEST_NAME}; it is not an stmae-export folder "
            f"(or the export did not finish)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportManifestError(f"{path} is not readable JSON ({exc})") from None
    manifest = parse_manifest(data, source=str(path))
    if verify_hashes:
        verify_files(manifest, export_dir)
    return manifest

