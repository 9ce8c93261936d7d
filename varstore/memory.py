"""A store's memory: its own pool, its limit, and honest accounting.

Every variable of a store is allocated here. On cuda the store owns a
``cupy.cuda.MemoryPool`` (never CuPy's global one, nor the pool our temporaries come
from), so ``pool_used_bytes`` is exactly what the store's variables hold; on numpy the
"pool" is the host heap and its used bytes are the variables' bytes.

The limit is checked and the bytes reserved under one lock, before anything is
allocated: an allocation that would pass the limit, or that the device cannot satisfy,
raises :class:`~varstore.errors.OutOfMemoryError` and leaves nothing behind.
"""

from __future__ import annotations

import math
import re
import threading
from fractions import Fraction

import numpy as np

from .errors import ArgumentTypeError, OutOfMemoryError

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
_LIMIT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE | re.ASCII)


def parse_memory_limit(value) -> int | None:
    """``memory_limit`` as bytes: None, an int, or a string such as ``"512MiB"``,
    ``"8GiB"``, ``"1.5GB"`` (KiB/MiB/GiB/TiB binary, KB/MB/GB/TB decimal, any case)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        pass  # a bool is not a size
    elif isinstance(value, (int, np.integer)):
        if value > 0:
            return int(value)
    elif isinstance(value, str):
        match = _LIMIT.match(value)
        if match and match.group(2).lower() in _UNITS:
            number = Fraction(match.group(1)) * _UNITS[match.group(2).lower()]  # exact: no float overflow
            if number >= 1:
                return int(number)
    error = ValueError if isinstance(value, (int, np.integer, str)) and not isinstance(value, bool) else \
        ArgumentTypeError
    raise error(
        f"Invalid value for argument `memory_limit`: {value!r}. Expected None, a positive int "
        f"(bytes) or a string such as '512MiB', '8GiB' or '1.5GB' (KiB/MiB/GiB/TiB or KB/MB/GB/TB)."
    )


def format_bytes(n: int | None) -> str:
    if n is None:
        return "no limit"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n} bytes ({n / size:.2f} {unit})"
    return f"{n} bytes"


class StoreMemory:
    """The pool, limit and byte counts of one store."""

    def __init__(self, backend, limit_bytes: int | None):
        self.backend = backend
        self.limit_bytes = limit_bytes
        self.pool = backend.new_pool()
        # Re-entrant: the default store releases a collected variable's bytes from a
        # weakref finalizer, which the garbage collector may run inside allocate().
        self._lock = threading.RLock()
        self._variable_bytes = 0  # bytes of the live variables (reserved before allocation)
        self._foreign_bytes = 0  # of those, bytes on another backend's device (not in the pool)
        self._devices: dict = {}  # the devices the pool allocated on, in order (a set)

    @property
    def variable_bytes(self) -> int:
        return self._variable_bytes

    def allocate(self, backend, shape: tuple, dtype: np.dtype, device: str, path: str):
        """An uninitialized array for the variable ``path``; its bytes count as the
        store's until :meth:`release`. Raises OutOfMemoryError past the limit or past
        what the device can give, with nothing allocated and nothing counted.

        ``backend`` is the store's, except for a variable placed on another backend's
        device (``device="cpu"`` in a cuda store): its bytes count, from no pool."""
        nbytes = math.prod(shape) * dtype.itemsize
        pool = self.pool if backend is self.backend else None
        with self._lock:
            if self.limit_bytes is not None:
                in_use = self._in_use()
                if in_use + backend.charged_bytes(nbytes) > self.limit_bytes:
                    raise self._error(path, nbytes, in_use, "it would pass the store's memory_limit")
            try:
                array = backend.empty(shape, dtype, device, pool=pool)
            except backend.out_of_memory_errors:
                # Cached blocks of this store (and of our temporaries) on that device go back first.
                backend.free_cached(pool, (device,))
                try:
                    array = backend.empty(shape, dtype, device, pool=pool)
                except backend.out_of_memory_errors as exc:
                    in_use = self._in_use()
                    raise self._error(path, nbytes, in_use, f"the device has not enough free memory ({exc})") from None
            self._variable_bytes += nbytes
            if backend is not self.backend:
                self._foreign_bytes += nbytes
            elif device not in self._devices:
                self._devices = {**self._devices, device: None}  # (a new dict: readers iterate the old one)
        return array

    def release(self, nbytes: int, backend) -> None:
        """The variable holding ``nbytes`` (on ``backend``) is gone; its array goes back
        to the pool when the last reference to it does."""
        with self._lock:
            self._variable_bytes -= nbytes
            if backend is not self.backend:
                self._foreign_bytes -= nbytes

    def free_cached(self, device: str) -> None:
        """Hand back the cached blocks on the store's ``device`` and on every device the
        pool allocated on."""
        self.backend.free_cached(self.pool, self._pool_devices_and(device))

    def _pool_devices_and(self, device: str) -> tuple:
        """The devices the pool allocated on, and the store's ``device``."""
        return tuple({device: None, **self._devices})

    def _in_use(self) -> int:
        if self.pool is None:
            return self._variable_bytes
        used, _ = self.backend.pool_bytes(self.pool, tuple(self._devices))  # (it holds nothing elsewhere)
        return used + self._foreign_bytes

    def _error(self, path: str, nbytes: int, in_use: int, why: str) -> OutOfMemoryError:
        return OutOfMemoryError(
            f"Cannot allocate variable {path!r}: {nbytes} bytes asked, {in_use} bytes in use by the store, "
            f"limit {format_bytes(self.limit_bytes)}; {why}. The store is unchanged: delete or release "
            f"variables, call store.free_cached(), or raise memory_limit.",
            requested_bytes=nbytes,
            in_use_bytes=in_use,
            limit_bytes=self.limit_bytes,
        )

    def info(self, device: str, variable_count: int) -> dict:
        used, total = self.backend.pool_bytes(self.pool, self._pool_devices_and(device))
        variable_bytes = self._variable_bytes
        device_total, device_free = self.backend.device_memory(device)
        return {
            "backend": self.backend.name,
            "device": device,
            "variables": variable_count,
            "variable_bytes": variable_bytes,
            "pool_used_bytes": variable_bytes if used is None else used,
            "pool_total_bytes": variable_bytes if total is None else total,
            "limit_bytes": self.limit_bytes,
            "device_total_bytes": device_total,
            "device_free_bytes": device_free,
        }
