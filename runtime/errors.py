"""Errors the runtime raises for bad user input or unusable backends.

Both derive from ``ValueError``; the command-line tools print their message as one line
and exit non-zero.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class InputError(ValueError):
    """Bad user input (frames, masks, folders, options); the message says what is wrong
    and how to fix it."""


class BackendUnavailable(RuntimeError):
    """A backend that cannot be used here (module, library, device or export missing);
    the message names what to install or pass."""


@contextlib.contextmanager
def output_refusals_as_input_errors() -> Iterator[None]:
    """Re-raise :class:`stmae.outputs.OutputError` (an output that aliases an input, or
    cannot be written) as :class:`InputError` with the same one-line message, so the
    runtime's checks raise one error type for every bad option."""
    from stmae.outputs import OutputError  # inside: stmae's package import loads torch

    try:
        yield
    except OutputError as exc:
        raise InputError(str(exc)) from None
