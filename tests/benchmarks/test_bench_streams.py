"""stmae-bench --streams: the batched engine against the eager baseline and S sequential
sessions in one run; every row's fields; bad options refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

from runtime.bench.cli import main as bench_main

ROW_FIELDS = {
    "name", "kind", "precision", "streams", "objects", "height", "width", "cuda_graphs", "compiled",
    "aggregate_fps", "per_stream_fps", "latency_ms", "peak_cuda_mb", "peak_rss_mb", "gflop_per_stream_frame",
    "achieved_tflops", "peak_matmul_tflops", "graph_reports", "vs_baseline",
}


def test_streams_report(seeded_small_checkpoint, tmp_path, capsys):
    out = tmp_path / "report"
    code = bench_main(["--checkpoint", str(seeded_small_checkpoint), "--sizes", "48", "--objects", "2",
                       "--frames", "5", "--warmup", "2", "--streams", "1", "2", "--threads", "1", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    rows = report["rows"]
    assert [(r["kind"], r["streams"]) for r in rows] == [
        ("baseline", 1), ("sessions", 1), ("engine", 1), ("baseline", 2), ("sessions", 2), ("engine", 2)]
    assert report["peak_matmul_tflops"]["fp32"] > 0
    for row in rows:
        assert set(row) >= ROW_FIELDS
        assert row["aggregate_fps"] > 0 and row["latency_ms"]["p99"] >= row["latency_ms"]["p50"] > 0
        assert row["achieved_tflops"] > 0 and not row["cuda_graphs"]  # CPU: eager only
    engine2 = rows[5]
    assert engine2["vs_sequential_sessions"] > 0 and 0 <= engine2["mask_miou_vs_sessions"] <= 1
    # Two streams, 3 measured frames each: the aggregate counts both streams.
    assert engine2["per_stream_fps"] == pytest.approx(engine2["aggregate_fps"] / 2)
    table = capsys.readouterr().out
    assert "engine fp32 eager" in table and "vs sequential sessions" in table


@pytest.mark.parametrize("args, message", [
    (["--streams", "0"], "positive stream counts"),
    (["--streams", "2", "--run", "onnxruntime:x"], "measures the torch engine"),
])
def test_streams_bad_options(seeded_small_checkpoint, tmp_path, capsys, args, message):
    code = bench_main(["--checkpoint", str(seeded_small_checkpoint), "--sizes", "48", "--frames", "5",
                       "--warmup", "2", "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and GPU decode need a CUDA GPU (none here)")
def test_streams_report_cuda_graphs(seeded_small_checkpoint, tmp_path):
    out = tmp_path / "report"
    code = bench_main(["--checkpoint", str(seeded_small_checkpoint), "--sizes", "64", "--frames", "8",
                       "--warmup", "3", "--streams", "2", "--device", "cuda", "--run", "torch:bf16",
                       "--sequential", "off", "--out", str(out)])
    assert code == 0
    rows = json.loads((out / "report.json").read_text())["rows"]
    graphs = [r for r in rows if r["cuda_graphs"]]
    assert graphs and graphs[0]["graph_reports"] and graphs[0]["graph_reports"][0]["fallback"] is None
    assert graphs[0]["peak_cuda_mb"] > 0
