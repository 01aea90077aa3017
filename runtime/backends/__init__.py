"""Inference backends behind one small protocol (:class:`runtime.backends.base.Backend`).

``create_backend(name, ...)`` builds one; the torch backend is always available, the
ONNX Runtime and TensorRT backends are imported only when asked for.
"""

from .base import Backend, KeyFeatures
from .factory import BACKENDS, create_backend
from .torch_backend import TorchBackend

__all__ = ["Backend", "KeyFeatures", "BACKENDS", "create_backend", "TorchBackend"]
