"""Errors the runtime raises for bad user input or unusable backends.

Both derive from ``ValueError``; the command-line tools print their message as one line
and exit non-zero.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (frames, masks, folders, options); the message says what is wrong
    and how to fix it."""


class BackendUnavailable(RuntimeError):
    """A backend that cannot be used here (module, library, device or export missing);
    the message names what to install or pass."""
