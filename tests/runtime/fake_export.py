"""A minimal export manifest (and placeholder graph files) for backend tests that fake the
inference library: channels C16, C8, C4 = 16, 8, 4."""

from __future__ import annotations

from pathlib import Path

from runtime.export_manifest import GRAPH_FILES, ExportManifest, GraphSpec, TensorSpec


def fake_export_manifest(tmp_path: Path) -> ExportManifest:
    def spec(graph, ins, outs):
        (tmp_path / GRAPH_FILES[graph]).write_bytes(b"onnx")
        return GraphSpec(GRAPH_FILES[graph], "cd" * 32, 4, tuple(TensorSpec(n, "float32", s) for n, s in ins),
                         tuple(TensorSpec(n, "float32", s) for n, s in outs))

    f = ("batch", 16, "h16", "w16")
    graphs = {
        "key_encoder": spec("key_encoder", [("image", ("batch", 3, "h", "w"))],
                            [("f16", f), ("f8", ("batch", 8, "h8", "w8")), ("f4", ("batch", 4, "h4", "w4"))]),
        "mask_autoencoder": spec("mask_autoencoder", [("image", ("batch", 3, "h", "w")), ("f16", f),
                                                      ("f8", ("batch", 8, "h8", "w8")), ("f4", ("batch", 4, "h4", "w4")),
                                                      ("coarse", ("batch", "objects", "h16", "w16"))],
                                 [("prob", ("batch", "objects+1", "h", "w"))]),
    }
    return ExportManifest(1, "fp32", 17, {"top_k": 30}, graphs, {}, {})
