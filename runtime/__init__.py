"""Runtime: video sessions with a bounded, device-resident memory bank, and backends.

Imports ``stmae``; reads export manifests, never imports ``export`` or ``train``.
"""
