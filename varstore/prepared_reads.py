"""Prepared region reads: ``v[key]`` repeated with one basic key.

``v[key]`` with a basic key gathers the region into a new array through the strided
kernel (``regions.read_region``), which works out the region's axes and binds the launch
on every call. A variable notes the first read of a region of its storage and prepares
the second (``regions.region_reader``: the axes, words and launch bound once); from then
on a read of that region allocates the result and runs the bound launch. The last
prepared read is also kept with its region object, which ``cached_basic_region`` gives
again for the same key: a loop that reads one key finds it by identity. Reads of
anything but the storage (a scope's value) take the general path.
"""

from __future__ import annotations

from .regions import read_region, region_reader

#: Prepared reads kept per variable; the table is emptied when full.
MAX_PREPARED_READS = 16


class PreparedReads:
    """The prepared ``v[key]`` reads of one variable's storage (see the module docstring)."""

    __slots__ = ("_entries", "_last")

    def __init__(self):
        self._entries: dict = {}  # Region -> (storage, read), or None (read once)
        self._last = None  # (region, storage, read) of the last prepared read

    def read(self, record, region):
        """A new C-contiguous array holding ``record.storage[region]``."""
        storage = record.storage
        last = self._last
        if last is not None and region is last[0] and storage is last[1]:
            return last[2]()
        entries = self._entries
        entry = entries.get(region, False)
        if entry is False:  # (not seen: noted)
            if len(entries) >= MAX_PREPARED_READS:
                entries.clear()
            entries[region] = None
            return read_region(record.backend, storage, region)
        if entry is None or entry[0] is not storage:
            entry = entries[region] = (storage, region_reader(record.backend, storage, region))
        self._last = (region, storage, entry[1])
        return entry[1]()
