"""Export: STMAE checkpoints -> ONNX graphs (key encoder, mask autoencoder) + manifest.

Imports ``stmae`` and ``runtime`` (its parity gate runs the runtime's pipelines).
"""
