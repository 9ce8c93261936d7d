"""Prepared region reads: ``v[key]`` repeated with one basic key.

``v[key]`` with a basic key gathers the region into a new array through the strided
kernel (``regions.read_region``), which works out the region's axes and binds the launch
on every call. A variable notes the first read of a region of its storage and prepares
the second (``regions.region_reader``: the axes, words and launch bound once); from then
on a read of that region allocates the result and runs the bound launch. Regions are
the objects ``cached_basic_region`` gives (the same object for the same key and shape),
told apart by identity; the last prepared read is also kept apart, so a loop that reads
one key finds it at once. A full table drops the regions read only once, or else its
oldest prepared one unused since the last time it was full (a second chance, as for the
prepared writes): a loop over more distinct regions than it holds reads the ones it
cannot keep through the general path, and the prepared ones stay. Reads of anything but
the storage (a scope's value) take the general path.
"""

from __future__ import annotations

from types import MappingProxyType

from .prepared_writes import make_room
from .regions import read_region, region_reader

#: Regions kept per variable (noted or prepared).
MAX_PREPARED_READS = 16


class PreparedReads:
    """The prepared ``v[key]`` reads of one variable's storage (see the module docstring)."""

    # id(region) -> [region, storage, read, used since prepared or since the last
    # make_room]; storage and read None for a region read once.
    # (An entry holds its region: no other object can take its id meanwhile.) A variable
    # makes its table when it is created, so the table makes its dict at its first note.
    _entries = MappingProxyType({})
    _last = None  # the entry of the last prepared read

    def read(self, record, region):
        """A new C-contiguous array holding ``record.storage[region]``."""
        storage = record.storage
        last = self._last
        if last is not None and region is last[0] and storage is last[1]:
            last[3] = True  # (used since prepared or since the last make_room)
            return last[2]()
        entries = self._entries
        entry = entries.get(id(region))
        if entry is None:
            self._note(region)
            return read_region(record.backend, storage, region)
        if entry[2] is None or entry[1] is not storage:
            entry = entries[id(region)] = [region, storage, region_reader(record.backend, storage, region), False]
        else:
            entry[3] = True
        self._last = entry
        return entry[2]()

    def _note(self, region) -> None:
        entries = self._entries
        if len(entries) >= MAX_PREPARED_READS:
            entries = self._entries = make_room(entries, _read_once)
        elif type(entries) is not dict:
            entries = self._entries = {}
        entries[id(region)] = [region, None, None, False]


def _read_once(entry) -> bool:
    return entry[2] is None
