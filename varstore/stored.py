"""What a variable stores: the record a Variable holds, and the tuple
``Variable.stored`` gives of it."""

from __future__ import annotations

from typing import NamedTuple


class StorageRecord:
    """The one record a Variable holds of its storage: the storage array (None once
    released), the variable's own dtype, its backend and device. Replaced whole, never
    changed in place (on release, by :meth:`released`). Slotted, not a tuple: the
    per-call paths read its fields by name, which a slot serves fastest."""

    __slots__ = ("storage", "dtype", "backend", "device")

    def __init__(self, storage, dtype: str, backend, device: str):
        self.storage, self.dtype, self.backend, self.device = storage, dtype, backend, device

    def released(self) -> StorageRecord:
        """This record without its storage."""
        return StorageRecord(None, self.dtype, self.backend, self.device)

    def as_tuple(self) -> Stored:
        return Stored(self.storage, self.dtype, self.backend, self.device)


class Stored(NamedTuple):
    """:attr:`varstore.Variable.stored`: ``(storage, dtype, backend, device)``."""

    storage: object
    dtype: str
    backend: object
    device: str
