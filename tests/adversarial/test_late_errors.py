"""Class 4, errors that arrived late or as tracebacks: now up front, in one line."""

from __future__ import annotations

import errno
import json
import os

import onnx
import pytest
import torch
from onnx import TensorProto, helper

import runtime.engine.stream_engine as stream_engine_module
import stmae.outputs as outputs_module
from export.cli import main as export_main
from runtime.cli import eval_main, segment_main
from runtime.io.mask_io import write_mask
from runtime.export_manifest import (
    CONTRACT_VERSION, GRAPH_FILES, KEY_ENCODER, MANIFEST_NAME, MASK_AUTOENCODER,
    ExportManifest, ExportManifestError, GraphSpec, TensorSpec, load_manifest, sha256_file,
)
from stmae import STMAE, preset, save_checkpoint
from train.cli import main as train_main
from train.config import DataConfig, OptimConfig, ScheduleConfig, TrainConfig
from train.loop import checkpoint_path, train

from .conftest import one_line_error, run_main, run_script, snapshot, write_frames, write_video


def _failing_probe(monkeypatch, code: int) -> None:
    """Make the write probe fail as a read-only (EROFS) or full (ENOSPC) disk would."""
    real_open = os.open

    def fake_open(path, flags, mode=0o777, *args, **kwargs):
        if "write-probe" in os.fspath(path):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(outputs_module.os, "open", fake_open)


@pytest.mark.parametrize("code, needle", [(errno.EROFS, "read-only"), (errno.ENOSPC, "disk is full")])
def test_unwritable_output_is_refused_before_the_network_runs(tmp_path, video, seg_args, capsys, monkeypatch,
                                                              code, needle, seeded_small_checkpoint):
    frames, mask = video
    out = tmp_path / "out"
    out.mkdir()
    _failing_probe(monkeypatch, code)

    def no_session(*a, **k):
        raise AssertionError("the network ran before the output was checked")

    monkeypatch.setattr(stream_engine_module, "StreamEngine", no_session)  # segment_video imports it when it runs
    before = snapshot(tmp_path)
    rc, _, err = run_main(segment_main, capsys, *seg_args, "--input", frames, "--mask", mask, "--out", out)
    assert rc == 2
    one_line_error(err, "stmae-segment", "cannot be written", needle)
    rc, _, err = run_main(export_main, capsys, seeded_small_checkpoint, "--out", tmp_path / "exp")
    assert rc == 2
    one_line_error(err, "stmae-export", "cannot be written", needle)
    rc, _, err = run_main(train_main, capsys, "--synthetic-clips", 2, "--model", "small", "--output", out,
                          "--device", "cpu")
    assert rc == 2
    one_line_error(err, "stmae-train", "cannot be written", needle)
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; covered by the probe test above")
def test_read_only_folder_for_real(tmp_path, video, seg_args, capsys):
    frames, mask = video
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        rc, _, err = run_main(segment_main, capsys, *seg_args, "--input", frames, "--mask", mask, "--out", out)
    finally:
        out.chmod(0o755)
    assert rc == 2
    one_line_error(err, "stmae-segment", "cannot be written")


def test_train_config_and_output_mistakes_are_one_line(tmp_path, capsys):
    (tmp_path / "cfgdir").mkdir()
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "afile").write_text("not a folder")
    cases = [
        (["--config", tmp_path / "cfgdir"], "is a folder"),
        (["--config", tmp_path / "list.json"], "holds a JSON list"),
        (["--config", tmp_path / "bad.json"], "not readable JSON"),
        (["--synthetic-clips", 2, "--output", tmp_path / "afile"], "is a file"),
        (["--synthetic-clips", 2, "--output", tmp_path / "afile" / "sub"], "is a file"),
    ]
    before = snapshot(tmp_path)
    for args, needle in cases:
        rc, _, err = run_main(train_main, capsys, *args, "--device", "cpu", "--no-progress")
        assert rc == 2, args
        one_line_error(err, "stmae-train", needle)
    assert snapshot(tmp_path) == before


def test_resume_with_another_model_is_refused_before_building_it(tmp_path, capsys):
    cfg = TrainConfig(
        data=DataConfig(synthetic_clips=2, num_frames=3, max_objects=2, crop_size=(32, 48), gap_start=1, gap_end=2),
        optim=OptimConfig(base_lr=1e-3, base_batch=2), schedule=ScheduleConfig(steps=1, warmup_steps=0, decay_at=(1,)),
        model="small", batch_size=2, num_refs=2, output_dir=str(tmp_path / "run"), device="cpu", precision="fp32",
        checkpoint_every=0, log_every=1,
    )
    train(cfg, progress_bar=False)
    ckpt = checkpoint_path(cfg)
    before = snapshot(tmp_path / "run")
    rc, _, err = run_main(train_main, capsys, "--synthetic-clips", 2, "--model", "published", "--resume", ckpt,
                          "--output", tmp_path / "run", "--device", "cpu", "--no-progress")
    assert rc == 2
    one_line_error(err, "stmae-train", "holds the 'small' preset", "builds the 'published' preset")
    assert snapshot(tmp_path / "run") == before


def test_checkpoint_with_extra_or_missing_tensors_is_one_line(tmp_path, video, seg_args, capsys):
    torch.manual_seed(0)
    state = STMAE(preset("small")).state_dict()
    state["stowaway.weight"] = torch.zeros(3)
    del state["decoder.pred.bias"]
    bad = tmp_path / "bad.pth"
    torch.save({"network": state, "config": preset("small").to_dict()}, bad)
    frames, mask = video
    args = [*seg_args, "--input", frames, "--mask", mask, "--out", tmp_path / "o"]
    args[args.index("--checkpoint") + 1] = bad
    rc, _, err = run_main(segment_main, capsys, *args)
    assert rc == 2
    one_line_error(err, "stmae-segment", "1 missing tensor(s) (e.g. decoder.pred.bias)",
                   "1 unexpected tensor(s) (e.g. stowaway.weight)")
    assert not (tmp_path / "o").exists()


def _graph(inputs, outputs) -> onnx.ModelProto:
    """A graph with the contract's I/O (each output an Identity of the first input; the
    runtime's manifest check reads only the declared I/O)."""
    def info(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    nodes = [helper.make_node("Identity", [inputs[0][0]], [name]) for name, _ in outputs]
    graph = helper.make_graph(nodes, "g", [info(*i) for i in inputs], [info(*o) for o in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.fixture()
def fake_export(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    image = ("image", ["batch", 3, "16*h16", "16*w16"])
    feats = [("f16", ["batch", 256, "h16", "w16"]), ("f8", ["batch", 128, "2*h16", "2*w16"]),
             ("f4", ["batch", 64, "4*h16", "4*w16"])]
    models = {KEY_ENCODER: _graph([image], feats),
              MASK_AUTOENCODER: _graph([image, *feats, ("coarse", ["batch", "objects", "h16", "w16"])],
                                       [("prob", ["batch", "objects + 1", "16*h16", "16*w16"])])}
    graphs = {}
    for name, model in models.items():
        path = folder / GRAPH_FILES[name]
        onnx.save_model(model, str(path))
        spec = lambda values: tuple(TensorSpec(v.name, "float32", tuple(  # noqa: E731
            d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim)) for v in values)
        graphs[name] = GraphSpec(path.name, sha256_file(path), path.stat().st_size,
                                 spec(model.graph.input), spec(model.graph.output))
    manifest = ExportManifest(CONTRACT_VERSION, "fp32", 18, preset("small").to_dict(), graphs,
                              {"file": "x.pth", "sha256": "0"}, {})
    (folder / MANIFEST_NAME).write_text(manifest.to_json())
    load_manifest(folder)  # the untouched export is accepted
    return folder


def test_manifest_whose_shapes_do_not_match_its_graph(fake_export, tmp_path, video, capsys):
    manifest = json.loads((fake_export / MANIFEST_NAME).read_text())
    manifest["graphs"][KEY_ENCODER]["outputs"][0]["shape"][1] = 512  # f16 channels 256 -> 512
    (fake_export / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ExportManifestError, match=r"key_encoder.onnx does not match the manifest's key_encoder "
                                                  r"outputs \(declared f16 float32 \['batch', 512"):
        load_manifest(fake_export)
    pytest.importorskip("onnxruntime", reason="the onnxruntime backend's CLI path needs onnxruntime")
    frames, mask = video
    before = snapshot(tmp_path)
    rc, _, err = run_main(segment_main, capsys, "--backend", "onnxruntime", "--export-dir", fake_export,
                          "--input", frames, "--mask", mask, "--out", tmp_path / "o", "--device", "cpu", "--quiet")
    assert rc == 2
    one_line_error(err, "stmae-segment", "does not match the manifest's key_encoder outputs", "re-run stmae-export")
    assert snapshot(tmp_path) == before


def test_eval_unwritable_output_before_any_sequence_runs(tmp_path, clip, seeded_small_checkpoint, capsys, monkeypatch):
    root = tmp_path / "davis"
    write_frames(root / "JPEGImages" / "240p" / "seq", clip.frames)
    (root / "Annotations" / "240p" / "seq").mkdir(parents=True)
    write_mask(root / "Annotations" / "240p" / "seq" / "00000.png", clip.masks[0])
    _failing_probe(monkeypatch, errno.EROFS)
    rc, stdout, err = run_main(eval_main, capsys, "--dataset", root, "--sequences", "seq", "--resolution", "240p",
                               "--checkpoint", seeded_small_checkpoint, "--device", "cpu", "--quiet",
                               "--out", tmp_path / "res")
    assert rc == 2 and "J&F" not in stdout
    one_line_error(err, "stmae-eval", "read-only")
    assert not list(tmp_path.rglob("*.csv"))


@pytest.mark.parametrize("script, args, needle", [
    ("stmae-train", ["--config", "."], "is a folder"),
    ("stmae-segment", ["--input", "v.avi", "--mask", "m.png", "--out", "o", "--overlay", "v.avi", "--overwrite",
                       "--checkpoint", "c.pth"], "same path as --input"),
    ("stmae-export", ["c.pth", "--out", ".", "--overwrite"], "holds the checkpoint"),
])
def test_console_scripts_refuse_in_one_line(tmp_path, clip, seeded_small_checkpoint, script, args, needle):
    """Through the installed entry points, as a user runs them (a new process each)."""
    write_video(tmp_path / "v.avi", clip.frames)
    write_mask(tmp_path / "m.png", clip.masks[0])
    (tmp_path / "c.pth").write_bytes(seeded_small_checkpoint.read_bytes())
    before = snapshot(tmp_path)
    proc = run_script(script, *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    one_line_error(proc.stderr, script, needle)
    assert snapshot(tmp_path) == before
