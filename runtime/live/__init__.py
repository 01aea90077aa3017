"""Live video: network streams (FFmpeg through PyAV) and cameras segmented as frames
arrive, with a real-time mode that drops frames instead of queueing them.

- :mod:`runtime.live.source`: stream / camera sources.
- :mod:`runtime.live.realtime`: the capture thread, the latest-frame slot, the loop and
  its statistics (drops, latency p50/p99).
- :mod:`runtime.live.cli`: the ``stmae-segment`` options for live sources.
"""
