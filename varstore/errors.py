"""varstore's exceptions. Each subclasses a builtin and carries its numbers."""

from __future__ import annotations


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a name that is not a string, a seed that is not an
    int, a device that is not a device name...). A TypeError, as varstore raises for every
    wrong type; also a ValueError, which Keras raises for some of these arguments, so code
    written against Keras catches it too."""


class BackendUnavailableError(RuntimeError):
    """The backend asked for (``VARSTORE_BACKEND=cuda``, ``device="cuda:0"``) cannot run here."""


class OutOfMemoryError(MemoryError):
    """An allocation past a store's ``memory_limit`` or past the device's free memory.

    Attributes:
        requested_bytes: bytes the allocation asked for.
        in_use_bytes: bytes the store held when it was asked.
        limit_bytes: the store's limit, or None.
    """

    def __init__(self, message: str, requested_bytes: int, in_use_bytes: int, limit_bytes: int | None):
        super().__init__(message)
        self.requested_bytes = requested_bytes
        self.in_use_bytes = in_use_bytes
        self.limit_bytes = limit_bytes
