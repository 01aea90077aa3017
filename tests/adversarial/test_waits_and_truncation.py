"""Class 2 (waits without end), the truncation part of class 3, and the cheap items of
class 8 not about outputs: every wait is bounded and ends with one line; a truncated video
is reported the same way by the single-video path, the corpus and its workers; live runs
say why they ended and keep what they did; edited manifests and ``--size 0`` are refused
with one line."""

from __future__ import annotations

import json
import socket

import pytest

from runtime.cli import segment_main
from runtime.io.mask_io import write_mask
from stmae import generate_clip

from .conftest import one_line_error, run_main, write_video


# ---- a truncated video: one check, one report, whatever the path --------------------------
@pytest.fixture()
def truncated(tmp_path):
    """(videos folder with cut.avi, the masks folder, frames announced): a 12-frame MJPG AVI
    cut in half (its header still announces 12 frames)."""
    clip = generate_clip(frames=12, height=48, width=64, objects=2, seed=3)
    videos, masks = tmp_path / "videos", tmp_path / "masks"
    videos.mkdir()
    masks.mkdir()
    full = write_video(tmp_path / "full.avi", clip.frames)
    (videos / "cut.avi").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    write_mask(masks / "cut.png", clip.masks[0])
    return videos, masks, 12


def _single_warning(capsys, seg_args, videos, masks, out) -> str:
    code, _, err = run_main(segment_main, capsys, *seg_args, "--input", videos / "cut.avi", "--mask",
                            masks / "cut.png", "--out", out)
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("stmae-segment: warning: ")]
    assert len(lines) == 1, err
    return lines[0].removeprefix("stmae-segment: warning: ")


@pytest.mark.parametrize("extra", [[], ["--streams", "2"]], ids=["one-at-a-time", "batched-lanes"])
def test_a_truncated_video_in_a_corpus_is_reported_as_alone(truncated, seg_args, tmp_path, capsys, extra):
    """Alone: a warning and exit 1. In a corpus (the worker's sequential path or its batched
    lanes): the same warning line for that video, exit 1, and run_summary.json lists it with
    the frames read and announced; a rerun that skips it (done before) reports it again."""
    videos, masks, announced = truncated
    warning = _single_warning(capsys, seg_args, videos, masks, tmp_path / "alone")
    read = len(list((tmp_path / "alone").glob("*.png")))
    assert 0 < read < announced
    out = tmp_path / "corpus"
    for attempt in ("first run", "rerun"):
        code, stdout, err = run_main(segment_main, capsys, *seg_args, "--videos", videos, "--masks-dir", masks,
                                     "--out", out, *extra)
        assert code == 1, (attempt, err)
        assert f"warning: cut: {warning}" in err.splitlines(), (attempt, err)
        assert "1 truncated" in stdout
        summary = json.loads((out / "run_summary.json").read_text())
        assert summary["truncated"] == [{"name": "cut", "reason": warning, "frames_read": read,
                                         "frames_declared": announced}], attempt
        assert len(list((out / "cut").glob("*.png"))) == read  # the decoded frames' masks are kept, as alone


# ---- waits: a Ray address nothing answers at ---------------------------------------------
def _closed_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed on leaving: nothing listens there


@pytest.mark.timeout(120)  # today's code waits without end (Ray retries the address)
def test_ray_at_an_address_nothing_answers_at_is_one_line(truncated, seg_args, tmp_path, capsys):
    pytest.importorskip("ray", reason="ray is not installed (pip install ray)")
    videos, masks, _ = truncated
    port = _closed_loopback_port()
    code, _, err = run_main(segment_main, capsys, *seg_args, "--videos", videos, "--masks-dir", masks,
                            "--out", tmp_path / "o", "--ray", f"127.0.0.1:{port}")
    assert code == 2
    one_line_error(err, "stmae-segment", f"--ray 127.0.0.1:{port}: cannot connect to a Ray cluster",
                   f"nothing answers at 127.0.0.1:{port}", "'ray status' on the head node")


# ---- manifest edits: a precision the graphs do not compute in, a version of `true` ---------
def _write_export(folder, graphs_kind: str, precision: str, version=None):
    """An export folder whose tiny graphs have the contract's I/O and compute in
    ``graphs_kind`` (fp32: Identity; fp16: a float16 round trip; int8: a Q/DQ pair), with a
    manifest that says ``precision`` (and ``version`` as its contract version, if given)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, save_model

    from runtime.export_manifest import (
        CONTRACT_VERSION, GRAPH_FILES, GRAPH_INPUTS, GRAPH_OUTPUTS, KEY_ENCODER, MANIFEST_NAME, MASK_AUTOENCODER,
        ExportManifest, GraphSpec, TensorSpec, sha256_file,
    )
    from stmae import preset

    shapes = {"image": ["batch", 3, "16*h16", "16*w16"], "f16": ["batch", 256, "h16", "w16"],
              "f8": ["batch", 128, "2*h16", "2*w16"], "f4": ["batch", 64, "4*h16", "4*w16"],
              "coarse": ["batch", "objects", "h16", "w16"], "prob": ["batch", "objects + 1", "16*h16", "16*w16"]}
    folder.mkdir()
    graphs = {}
    for name in (KEY_ENCODER, MASK_AUTOENCODER):
        first = GRAPH_INPUTS[name][0]
        nodes, inits = [], []
        if graphs_kind == "fp16":
            nodes = [helper.make_node("Cast", [first], ["half"], to=TensorProto.FLOAT16),
                     helper.make_node("Cast", ["half"], ["x"], to=TensorProto.FLOAT)]
        elif graphs_kind == "int8":
            inits = [numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
                     numpy_helper.from_array(np.array(0, np.int8), "zero")]
            nodes = [helper.make_node("QuantizeLinear", [first, "scale", "zero"], ["q"]),
                     helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["x"])]
        else:
            nodes = [helper.make_node("Identity", [first], ["x"])]
        nodes += [helper.make_node("Identity", ["x"], [out]) for out in GRAPH_OUTPUTS[name]]
        info = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[n])  # noqa: E731
        model = helper.make_model(helper.make_graph(nodes, name, [info(n) for n in GRAPH_INPUTS[name]],
                                                    [info(n) for n in GRAPH_OUTPUTS[name]], inits),
                                  opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 10  # what ONNX Runtime reads
        path = folder / GRAPH_FILES[name]
        save_model(model, str(path))
        spec = lambda names: tuple(TensorSpec(n, "float32", tuple(shapes[n])) for n in names)  # noqa: E731
        graphs[name] = GraphSpec(path.name, sha256_file(path), path.stat().st_size, spec(GRAPH_INPUTS[name]),
                                 spec(GRAPH_OUTPUTS[name]))
    manifest = ExportManifest(CONTRACT_VERSION, precision, 18, preset("small").to_dict(), graphs,
                              {"file": "x.pth", "sha256": "0"}, {}).to_dict()
    if version is not None:
        manifest["contract_version"] = version
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return folder


def test_a_manifest_whose_precision_is_not_its_graphs_is_refused(tmp_path):
    from runtime.export_manifest import ExportManifestError, load_manifest

    for kind in ("fp32", "fp16", "int8"):
        assert load_manifest(_write_export(tmp_path / kind, kind, kind)).precision == kind  # as exported
    for kind, said, found in [("fp32", "int8", "neither Q/DQ nodes nor float16 weights (fp32)"),
                              ("fp32", "fp16", "neither Q/DQ nodes nor float16 weights (fp32)"),
                              ("int8", "fp32", "Q/DQ (int8) nodes (int8)"),
                              ("fp16", "fp32", "float16 weights and no Q/DQ nodes (fp16)"),
                              ("fp16", "int8", "float16 weights and no Q/DQ nodes (fp16)")]:
        folder = _write_export(tmp_path / f"{kind}-said-{said}", kind, said)
        with pytest.raises(ExportManifestError, match=rf"says precision '{said}' but its graphs have "
                                                      rf"{found.replace('(', r'[(]').replace(')', r'[)]')}: "
                                                      rf"the manifest was edited"):
            load_manifest(folder)


def test_a_manifest_edited_through_the_command_line_is_one_line(tmp_path, video, capsys):
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend's CLI path needs onnxruntime")
    frames, mask = video
    cases = [(_write_export(tmp_path / "precision", "fp32", "int8"), "says precision 'int8' but its graphs have"),
             (_write_export(tmp_path / "version", "fp32", "fp32", version=True),
              "export contract version True is not supported")]
    for export, message in cases:
        code, _, err = run_main(segment_main, capsys, "--backend", "onnxruntime", "--export-dir", export, "--input",
                                frames, "--mask", mask, "--out", tmp_path / "o", "--device", "cpu", "--quiet")
        assert code == 2
        one_line_error(err, "stmae-segment", message)
        assert not (tmp_path / "o").exists()


def test_a_contract_version_of_true_is_refused(tmp_path):
    """JSON true is 1 to Python (bool is an int): it is not a version number."""
    from runtime.export_manifest import ExportManifestError, parse_manifest

    data = json.loads((_write_export(tmp_path / "e", "fp32", "fp32") / "manifest.json").read_text())
    parse_manifest(data)
    for bad in (True, 1.0, "1"):
        with pytest.raises(ExportManifestError, match=f"contract version {bad!r} is not supported"):
            parse_manifest({**data, "contract_version": bad})


# ---- --size 0: one line, as every other bad option ---------------------------------------
@pytest.mark.parametrize("size", ["0", "8", "x"])
def test_a_bad_size_is_one_line(video, seg_args, tmp_path, capsys, size):
    frames, mask = video
    args = [a for a in seg_args if a not in ("--size", -1)]
    code, _, err = run_main(segment_main, capsys, *args, "--size", size, "--input", frames, "--mask", mask,
                            "--out", tmp_path / "o")
    assert code == 2
    one_line_error(err, "stmae-segment", f"--size {size}: expected 'auto', -1 (frames as they are) or pixels >= 16")
    assert not (tmp_path / "o").exists()
