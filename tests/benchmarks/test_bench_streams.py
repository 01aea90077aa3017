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
    "achieved_tflops", "peak_matmul_tflops", "graph_reports", "vs_baseline", "measure", "loop", "decoder",
    "decode_timed", "ms_per_stream_frame",
}


def test_streams_report(seeded_small_checkpoint, tmp_path, capsys):
    out = tmp_path / "report"
    code = bench_main(["--checkpoint", str(seeded_small_checkpoint), "--sizes", "48", "--objects", "2",
                       "--frames", "5", "--warmup", "2", "--streams", "1", "2", "--threads", "1", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    rows = report["rows"]
    engine_rows = [("engine", "network", "pipelined"), ("engine", "end_to_end", "serial"),
                   ("engine", "end_to_end", "pipelined")]
    expected = []
    for streams in (1, 2):
        expected += [("baseline", "end_to_end", "one clip after another", streams),
                     ("sessions", "end_to_end", "one clip after another", streams)]
        expected += [(*kind, streams) for kind in engine_rows]
    assert [(r["kind"], r["measure"], r["loop"], r["streams"]) for r in rows] == expected
    assert report["peak_matmul_tflops"]["fp32"] > 0
    assert report["config"]["decoder"] == "cpu" and report["config"]["pipeline"] == ["serial", "pipelined"]
    assert report["config"]["tf32"] is False
    for row in rows:
        assert set(row) >= ROW_FIELDS
        assert row["aggregate_fps"] > 0 and row["latency_ms"]["p99"] >= row["latency_ms"]["p50"] > 0
        assert row["achieved_tflops"] > 0 and not row["cuda_graphs"]  # CPU: eager only
        assert row["decoder"] == "cpu" and row["decode_timed"] == (row["measure"] == "end_to_end")
        assert row["ms_per_stream_frame"] == pytest.approx(1e3 / row["aggregate_fps"])
    for point in (rows[:5], rows[5:]):
        network, serial, pipelined = point[2:]
        for e2e in (serial, pipelined):
            # host overhead = end-to-end ms per stream-frame - network ms per stream-frame
            assert e2e["host_overhead_ms_per_stream_frame"] == pytest.approx(
                e2e["ms_per_stream_frame"] - network["ms_per_stream_frame"])
            assert e2e["masks_equal_network_row"] is True
            assert e2e["mask_miou_vs_sessions"] == network["mask_miou_vs_sessions"]
        assert "host_overhead_ms_per_stream_frame" not in network
    engine2 = rows[9]
    assert engine2["vs_sequential_sessions"] > 0 and 0 <= engine2["mask_miou_vs_sessions"] <= 1
    # Two streams, 3 measured frames each: the aggregate counts both streams.
    assert engine2["per_stream_fps"] == pytest.approx(engine2["aggregate_fps"] / 2)
    table = capsys.readouterr().out
    assert "engine fp32 eager, network" in table and "host overhead ms per stream-frame" in table
    assert "end to end (pipelined)" in table and "cpu, not timed" in table
    markdown = (out / "report.md").read_text()
    assert "TF32: off" in markdown and "decoder: cpu" in markdown


@pytest.mark.parametrize("pipeline, loops, repeats", [("on", ["pipelined"], 2), ("off", ["serial"], 1)])
def test_streams_pipeline_switch(seeded_small_checkpoint, tmp_path, pipeline, loops, repeats):
    out = tmp_path / "report"
    assert bench_main(["--checkpoint", str(seeded_small_checkpoint), "--sizes", "32", "--frames", "4",
                       "--warmup", "1", "--streams", "2", "--threads", "1", "--sequential", "off",
                       "--pipeline", pipeline, "--repeats", str(repeats), "--out", str(out)]) == 0
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert [(r["measure"], r["loop"]) for r in rows] == [("network", "pipelined")] + [("end_to_end", x) for x in loops]
    for row in rows:  # the median of the interleaved repeats is the row
        runs = row["ms_per_stream_frame_runs"]
        assert len(runs) == repeats and row["ms_per_stream_frame"] == pytest.approx(sorted(runs)[(repeats - 1) // 2], 1e-3)
        assert row["spread"] == pytest.approx((max(runs) - min(runs)) / row["ms_per_stream_frame"], 1e-3)


@pytest.mark.parametrize("args, message", [
    (["--streams", "0"], "positive stream counts"),
    (["--streams", "2", "--run", "onnxruntime:x"], "measures the torch engine"),
    (["--streams", "2", "--decoder", "nvjpeg"], "--decoder nvjpeg needs a CUDA device"),
    (["--decoder", "nvjpeg"], "applies to the engine rows of --streams"),
    (["--streams", "2", "--decode-workers", "0"], "--decode-workers must be at least 1"),
])
def test_streams_bad_options(seeded_small_checkpoint, tmp_path, capsys, args, message):
    code = bench_main(["--checkpoint", str(seeded_small_checkpoint), "--sizes", "48", "--frames", "5",
                       "--warmup", "2", "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and GPU decode need a CUDA GPU (none here)")
@pytest.mark.parametrize("decoder", ["cpu", "nvjpeg"])
def test_streams_report_cuda_graphs(seeded_small_checkpoint, tmp_path, decoder):
    out = tmp_path / "report"
    code = bench_main(["--checkpoint", str(seeded_small_checkpoint), "--sizes", "64", "--frames", "8",
                       "--warmup", "3", "--streams", "2", "--device", "cuda", "--run", "torch:bf16",
                       "--sequential", "off", "--decoder", decoder, "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    graphs = [r for r in report["rows"] if r["cuda_graphs"]]
    assert [(r["measure"], r["loop"]) for r in graphs] == [
        ("network", "pipelined"), ("end_to_end", "serial"), ("end_to_end", "pipelined")]
    assert graphs[0]["graph_reports"] and graphs[0]["graph_reports"][0]["fallback"] is None
    assert graphs[0]["peak_cuda_mb"] > 0 and all(r["decoder"] == decoder for r in graphs)
    assert all(r["masks_equal_network_row"] for r in graphs[1:])
    assert report["config"]["cuda_tf32_state"] == {"matmul": False, "cudnn": False}
