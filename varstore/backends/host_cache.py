"""Host memory for large arrays returned again and again (``v.astype`` on the CPU).

A fresh NumPy array of tens of MiB comes from the OS (``mmap``) on every call, and the OS
zeroes each page on first touch: a float32 result of 1e7 elements cost about 3 ms to
allocate on a 2-core VM (glibc), more than the cast that fills it. :class:`HostCache` keeps the
memory of such arrays once their last user drops them and hands it out again for an
array of the same byte size, as CuPy's pool does for device memory.

Each array handed out is built over a ctypes view of a raw block, not over the block
itself (nor a ``memoryview`` of it, which NumPy unwraps): the array's base is then not an
ndarray, so NumPy makes the array itself the base of every view taken from it. The array
dies only when its views have, and a weak reference to it tells the cache when the block
is free. Idle blocks are kept up to ``limit`` bytes, the oldest dropped first.
"""

from __future__ import annotations

import collections
import ctypes
import math
import os
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


def host_cache_limit() -> int:
    """Idle bytes the cache may keep: ``VARSTORE_HOST_CACHE`` (a size such as ``"1GiB"``,
    or 0 for no cache), else :data:`DEFAULT_LIMIT`."""
    value = os.environ.get("VARSTORE_HOST_CACHE")
    if value is None or not value.strip():
        return DEFAULT_LIMIT
    if value.strip() == "0":
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
        self.limit = int(limit)
        self._allocate = allocate or (lambda nbytes: np.empty(nbytes, np.uint8))
        # Blocks are ctypes char arrays over raw memory (their length: bytes).
        self._idle: collections.OrderedDict = collections.OrderedDict()  # id(block) -> block, oldest first
        self._idle_bytes = 0
        self._leases: dict = {}  # id(weak reference) -> (weak reference, block) of the arrays out
        # Re-entrant: a weak reference's callback (the garbage collector may run it inside
        # any allocation, ours included) gives a block back under the same lock.
        self._lock = threading.RLock()

    @property
    def idle_bytes(self) -> int:
        """Bytes of the blocks kept for reuse (no array uses them)."""
        return self._idle_bytes

    def caches(self, nbytes: int) -> bool:
        """Whether arrays of ``nbytes`` come from (and go back to) the cache."""
        return MIN_BYTES <= nbytes <= self.limit

    def empty(self, shape: tuple, dtype: np.dtype) -> np.ndarray:
        """A new uninitialized C-ordered array; for sizes the cache :meth:`caches`, over
        an idle block of its size where there is one, else over a new block."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if not self.caches(nbytes):
            return np.empty(shape, dtype)
        block = self._take(nbytes)
        if block is None:  # (a ctypes view of the raw memory, which keeps it)
            block = (ctypes.c_char * nbytes).from_buffer(self._allocate(nbytes))
        array = np.ndarray(shape, dtype, buffer=block)
        lease = weakref.ref(array, self._give_back)
        with self._lock:
            self._leases[id(lease)] = (lease, block)
        return array

    def clear(self) -> None:
        """Drop every idle block (the arrays out keep theirs)."""
        with self._lock:
            self._idle.clear()
            self._idle_bytes = 0

    def _take(self, nbytes: int):
        with self._lock:
            for key, block in self._idle.items():
                if len(block) == nbytes:
                    del self._idle[key]
                    self._idle_bytes -= nbytes
                    return block
        return None

    def _give_back(self, lease) -> None:
        with self._lock:
            _, block = self._leases.pop(id(lease))
            if len(block) > self.limit:
                return
            self._idle[id(block)] = block
            self._idle_bytes += len(block)
            while self._idle_bytes > self.limit:
                _, old = self._idle.popitem(last=False)
                self._idle_bytes -= len(old)
