"""The one error type callers catch for registry trouble (as opposed to bad input: ValueError)."""

from __future__ import annotations


class RegistryError(RuntimeError):
    """The registry cannot do what was asked: unreachable, refused, missing, or corrupt.

    Messages are one line and say what to do, because they end up on a terminal.
    """
