"""Benchmark harness: per-stage latency, end-to-end frames/s, memory, FLOPs, and the eager
baseline measured in the same run (``stmae-bench``)."""
