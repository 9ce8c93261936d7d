"""Prepared slice-assigns: ``v[key] = b`` repeated with arrays ``b`` of one layout.

A training loop writes the same region of a variable again and again with a new array of
the same dtype and shape. The general path (``Variable._setitem_here``) parses the key,
checks the value's dtype, shape and memory, works out the region's axes and binds the
launch on every call. After two such writes, a variable keeps the bound write per (key,
value dtype, value shape); a later write with the same key and an array of that dtype
and shape (C-contiguous, of the variable's backend, not sharing its memory) goes
straight to the bound launch (a write made once costs what it did). Anything else takes
the general path, which raises every error as before: an entry is made only from a write
whose checks passed with the value as it was given (no conversion, copy or view made of
it).

The last prepared write a variable ran is also kept with the key object it ran for: a
loop that writes with one key object (a constant) and arrays of one dtype and shape finds
it by identity, without working out the key's signature and hashing the layout. A full
table drops the layouts written only once, or else its oldest prepared one not used
since the table was last full (a second chance: about the least recently used one). A
loop over more layouts than it holds writes the ones it cannot keep through the general
path (no layout is prepared again and again), and the prepared ones stay.
"""

from __future__ import annotations

from types import MappingProxyType

from .indexing import key_signature
from .regions import region_writer, write_region

#: Layouts kept per variable (noted or prepared).
MAX_PREPARED_WRITES = 16


class PreparedWrites:
    """The prepared ``v[key] = b`` writes of one variable (see the module docstring)."""

    # (key signature, b.dtype, b.shape) -> [storage, write, used since prepared or since
    # the last make_room], or None for a layout written once; made at the first note (a
    # variable makes its table when it is created).
    _entries = MappingProxyType({})
    _last = None  # (key, b.dtype, b.shape, entry) of the last prepared write made or run

    def write(self, record, key, value) -> bool:
        """Write ``value`` into ``record.storage[key]`` if a prepared write fits it;
        False (nothing written) otherwise."""
        if not self._entries:
            return False
        try:
            dtype, shape = value.dtype, value.shape
            last = self._last
            # (a key of a signature is immutable: the same object, the same signature)
            if last is not None and key is last[0] and dtype is last[1] and shape == last[2]:
                entry = last[3]
            else:
                entry = self._entries.get((key_signature(key), dtype, shape))
                if entry is None:  # (not seen, or seen once)
                    return False
                self._last = (key, dtype, shape, entry)
            entry[2] = True  # (used since prepared or since the last make_room)
            storage, write = entry[0], entry[1]
        except Exception:  # (not an array, or one whose dtype cannot be read yet; an unhashable key item)
            return False
        if storage is not record.storage or not record.backend.apart_contiguous(storage, value):
            return False
        write(value)
        return True

    def write_new(self, record, key, region, value, value_dtype: str) -> None:
        """The general path's write of ``value`` (as given, of the record's backend) into
        ``region`` of ``record.storage``, which ``key`` selects. The first write of a
        layout goes as it is and is noted; the second prepares the write (the region's
        axes, words and launch bound once, about 6 µs more than a plain write) and goes
        through it, as every later one then does."""
        signature = key_signature(key)
        layout = (signature, value.dtype, value.shape)
        entries = self._entries
        entry = entries.get(layout, _UNSEEN) if signature is not None else _UNSEEN
        if entry is _UNSEEN:
            if signature is not None:
                if len(entries) >= MAX_PREPARED_WRITES:
                    entries = self._entries = make_room(entries, _written_once)
                elif type(entries) is not dict:
                    entries = self._entries = {}
                entries[layout] = None  # (seen once)
            write_region(record.backend, record.storage, record.dtype, region, value, value_dtype)
            return
        if entry is None or entry[0] is not record.storage:
            entry = entries[layout] = [record.storage, region_writer(record.backend, record.storage, record.dtype,
                                                                     region, value, value_dtype), False]
        else:
            entry[2] = True
        self._last = (key, value.dtype, value.shape, entry)
        entry[1](value)  # (prepared before: a write that came here, e.g. inside a name scope, reuses it)


def make_room(entries, seen_once) -> dict:
    """A new table holding the full table ``entries`` but the entries ``seen_once(entry)``
    says were seen once (noted, not prepared), or else but the oldest one not used since
    the last call. A second chance, close to least recently used: a prepared entry is a
    list whose last item is False when prepared and set True by each later use; the used
    entries passed over are cleared and moved to the end, as if prepared again. (Keeping
    the table in the order of use would hash the layout twice more per use: 0.25 µs.)
    The caller puts the new table in place of the old one, which is left as it was: a
    thread that still reads the old one finds what it found before, with no KeyError
    between a check and a read."""
    items = list(entries.items())
    kept = [(key, entry) for key, entry in items if not seen_once(entry)]
    if len(kept) < len(items):
        return dict(kept)
    unused = next((i for i, (_, entry) in enumerate(items) if not entry[-1]), None)
    passed = items if unused is None else items[:unused]
    for _, entry in passed:
        entry[-1] = False
    if unused is None:  # (every one used: all passed over, then the oldest dropped)
        return dict(items[1:])
    return dict(items[unused + 1:] + passed)


_UNSEEN = object()  # (a layout not in the table)


def _written_once(entry) -> bool:
    return entry is None
