"""Inference backends behind one small protocol (:class:`runtime.backends.base.Backend`)."""

from .base import Backend, KeyFeatures

__all__ = ["Backend", "KeyFeatures"]
