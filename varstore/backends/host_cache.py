"""Host memory for large arrays returned again and again (``v.astype`` on the CPU).

A fresh NumPy array of tens of MiB comes from the OS (``mmap``) on every call, and the OS
zeroes each page on first touch: a float32 result of 1e7 elements cost about 3 ms to
allocate on a 2-core VM (glibc), more than the cast that fills it. :class:`HostCache`
keeps the memory of such arrays once nothing uses it any more and hands it out again
for an array of the same byte size. It is a plain exact-size cache, not a pool: blocks
are neither split nor merged.

Each array handed out is built over a ctypes char array made for it over the raw block
(its *lease*), not over the block itself (nor a ``memoryview`` of it, which NumPy
unwraps to the block). The array's base is then the lease, not an ndarray, so NumPy
makes the array itself the base of every view taken from it; whatever keeps the array,
a view of it or the lease (``array.base``, a buffer export) keeps the lease. A weak
reference to the lease gives the block back when the lease dies. Raw addresses taken
from an array (``array.ctypes.data``) keep nothing, as with any NumPy array: past the
array's life they may see a later result.

Idle blocks are kept up to ``limit`` bytes, the most recently freed reused first (its
pages are the likeliest still cached) and the oldest dropped first. A failed allocation
drops every idle block and tries once more.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import math
import os
import re
import threading
import weakref

import numpy as np

from ..memory import parse_memory_limit

#: Arrays smaller than this come from ``np.empty``. Below it glibc's malloc reuses freed
#: memory itself (its mmap threshold rises with the sizes freed, up to 32 MiB): results
#: of 8 and 16 MiB took 0.92-1.06x the time from the cache, and 40 MB ones half.
MIN_BYTES = 32 << 20
#: Idle bytes kept by default (``VARSTORE_HOST_CACHE`` sets it; 0 turns the cache off).
DEFAULT_LIMIT = 256 << 20
_ZERO = re.compile(r"^\s*0+(?:\.0*)?\s*(?:b|[kmgt]i?b)?\s*$", re.IGNORECASE)  # "0", "00", "0MiB"...


def host_cache_limit() -> int:
    """Idle bytes the cache may keep: ``VARSTORE_HOST_CACHE`` (a size such as ``"1GiB"``,
    or 0 for no cache), else :data:`DEFAULT_LIMIT`. Arrays larger than the limit, or
    smaller than :data:`MIN_BYTES`, never use the cache."""
    value = os.environ.get("VARSTORE_HOST_CACHE")
    if value is None or not value.strip():
        return DEFAULT_LIMIT
    if _ZERO.match(value):
        return 0
    try:
        return parse_memory_limit(value)
    except ValueError:
        raise ValueError(f"Invalid value for environment variable VARSTORE_HOST_CACHE. Expected 0 (no cache) or a "
                         f"size such as '256MiB' or '1GiB' (idle host memory kept for reuse). Received: "
                         f"VARSTORE_HOST_CACHE={value!r}") from None


class HostCache:
    """Raw host blocks of freed arrays, reused for arrays of the same byte size."""

    def __init__(self, limit: int, allocate=None):
        self._allocate = allocate or (lambda nbytes: np.empty(nbytes, np.uint8))
        self._idle: collections.OrderedDict = collections.OrderedDict()  # id(block) -> raw block, oldest first
        self._idle_bytes = 0
        self._leases: dict = {}  # id(weak reference) -> (weak reference, raw block) of the leases out
        # Re-entrant: a weak reference's callback (the collector may run it inside any
        # allocation, ours included) gives a block back under the same lock.
        self._lock = threading.RLock()
        self._limit = int(limit)
        if hasattr(os, "register_at_fork"):  # (a child must not inherit a lock held by another thread)
            os.register_at_fork(after_in_child=functools.partial(_new_lock_after_fork, weakref.ref(self)))

    @property
    def limit(self) -> int:
        """Idle bytes kept at most; lowering it drops the oldest idle blocks at once."""
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        with self._lock:
            self._limit = int(value)
            self._trim()

    @property
    def idle_bytes(self) -> int:
        """Bytes of the blocks kept for reuse (no array uses them)."""
        return self._idle_bytes

    def caches(self, nbytes: int) -> bool:
        """Whether arrays of ``nbytes`` come from (and go back to) the cache."""
        return MIN_BYTES <= nbytes <= self._limit

    def empty(self, shape: tuple, dtype: np.dtype) -> np.ndarray:
        """A new uninitialized C-ordered array; for sizes the cache :meth:`caches`, over
        an idle block of its size where there is one, else over a new block."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if not self.caches(nbytes):
            return np.empty(shape, dtype)
        block = self._take(nbytes)
        if block is None:
            try:
                block = self._allocate(nbytes)
            except MemoryError:
                self.clear()
                block = self._allocate(nbytes)
        lease = (ctypes.c_char * nbytes).from_buffer(block)  # (keeps the block: a buffer export)
        array = np.ndarray(shape, dtype, buffer=lease)
        ref = weakref.ref(lease, self._give_back)
        with self._lock:
            self._leases[id(ref)] = (ref, block)
        return array

    def clear(self) -> None:
        """Drop every idle block (the arrays out keep theirs)."""
        with self._lock:
            self._idle.clear()
            self._idle_bytes = 0

    def _take(self, nbytes: int):
        with self._lock:
            for key in reversed(list(self._idle)):  # (a copy: a callback may add while this looks)
                block = self._idle[key]
                if block.nbytes == nbytes:
                    del self._idle[key]
                    self._idle_bytes -= nbytes
                    return block
        return None

    def _give_back(self, ref) -> None:
        with self._lock:
            _, block = self._leases.pop(id(ref))
            if block.nbytes <= self._limit:
                self._idle[id(block)] = block
                self._idle_bytes += block.nbytes
                self._trim()

    def _trim(self) -> None:
        while self._idle_bytes > self._limit:
            _, old = self._idle.popitem(last=False)
            self._idle_bytes -= old.nbytes



def _new_lock_after_fork(cache_ref) -> None:
    cache = cache_ref()
    if cache is not None:
        cache._lock = threading.RLock()
