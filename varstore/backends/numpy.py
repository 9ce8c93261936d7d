"""The numpy backend: NumPy storage; kernels compiled for the CPU with numba."""

from __future__ import annotations

import ctypes
import functools
import math
import operator
import os
import threading

import numpy as np

from ..dtypes import WORD_DTYPES, host_dtype
from ..kernels.launch import MIN_CPU_CHUNK, cpu_chunks, cpu_workers, usable_cores
from .base import EXACT_OVERLAP_WORK, Backend, given_names, is_device_array, taking_flat
from .cpu_threads import SPIN_US_DEFAULT, CpuThreads, spin_microseconds
from .host_cache import HostCache, host_cache_limit

#: How a template's CPU loop splits over threads: by element ranges, by whole rows of a
#: region (a basic key's region never holds an element twice, so threads write apart),
#: by whole chunks of a multi-tensor table, or not at all (scatter loops run in order:
#: where an index repeats, the last write wins).
SPLIT = {"elementwise": "elements", "gather": "elements", "region": "rows", "chunks": "chunks"}

_addressof = ctypes.addressof
_c_char = ctypes.c_char
_CACHE_LINE = 64  # bytes
_CHECKED_BYTES = 64 << 20  # allocations this large are checked against available memory
_add, _subtract = np.add, np.subtract  # (module globals: one lookup each)


class NumpyBackend(Backend):
    name = "numpy"
    xp = np

    def __init__(self):
        # The CPU loops release the GIL: large launches use threads. Read now, so that a
        # bad VARSTORE_NUM_THREADS or VARSTORE_SPIN_US is refused before any work, not
        # in the middle of it.
        self._workers = self._spin_us = None
        self._cpu_workers()
        # Large arrays returned call after call (prepared casts) reuse freed memory.
        self.host_cache = HostCache(host_cache_limit(),
                                    allocate=lambda nbytes: self.empty((nbytes,), np.dtype(np.uint8), "cpu"))
        self._loops: dict = {}  # (kernel, bind key) -> compiled CPU loop
        self._pool = None
        self._pool_lock = threading.Lock()

    def devices(self) -> list[str]:
        return ["cpu"]

    # np.empty of more than the address space allows raises ValueError, not MemoryError.
    out_of_memory_errors = (MemoryError, ValueError)

    def empty(self, shape, dtype, device, pool=None):
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes >= _CHECKED_BYTES:
            # Linux overcommits: np.empty would succeed and filling it get the process
            # killed. Large requests are checked against what the OS has available.
            _, available = _host_memory()
            if available is not None and nbytes > available:
                raise MemoryError(f"{nbytes} bytes asked, {available} bytes of host memory available")
        return np.empty(shape, dtype)

    def device_memory(self, device):
        return _host_memory()

    def owns(self, array) -> bool:
        return isinstance(array, np.ndarray)

    def asarray(self, obj, device):
        if is_device_array(obj):
            return _device_to_host(obj)
        if hasattr(obj, "__dlpack__") and not hasattr(obj, "__array__"):
            return np.from_dlpack(obj)  # (np.asarray would make an object array of it)
        return np.asarray(obj)

    def to_host(self, array):
        return np.array(array, copy=True)

    def host_view(self, array):
        return array

    def from_host(self, host, device):
        return host

    def copy_from_host(self, dst, host):
        np.copyto(dst, host)

    def launch(self, kernel, n, **args):
        if not n:
            return
        key, values = kernel.bind(args, n)
        loop = self._loops.get((kernel, key))
        if loop is None:
            loop = self._loops[(kernel, key)] = kernel.loop_for("cpu", key, args)[0]
        split = SPLIT.get(kernel.template)
        work = 0 if split is None else _work(split, n, args)
        if work < 2 * MIN_CPU_CHUNK:
            loop(0, n, *values)  # in this thread: handing small work to the pool costs more
            return
        if split == "elements":
            ranges = cpu_chunks(n, self._cpu_workers())
        elif split == "rows":  # (the region loop takes whole rows of the last axis)
            inner = int(args["shape"][-1])
            rows = n // inner
            minimum = -(-MIN_CPU_CHUNK * rows // work)  # (rows holding a chunk's worth of work)
            ranges = [(start * inner, stop * inner) for start, stop in cpu_chunks(rows, self._cpu_workers(), minimum)]
        else:  # whole chunks of a multi-tensor table, split where the elements split
            first = args["chunk_first"]
            total = int(first[-1] + args["chunk_count"][-1])
            starts = [start for start, _ in cpu_chunks(total, self._cpu_workers())]
            bounds = np.searchsorted(first, starts + [total])
            ranges = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]
        if len(ranges) == 1:
            loop(0, n, *values)
            return
        self._thread_pool().run(loop, ranges, values)

    def allocator(self, shape, dtype, device):
        nbytes = math.prod(shape) * dtype.itemsize
        if self.host_cache.caches(nbytes):
            return functools.partial(self.host_cache.empty, shape, dtype)
        if nbytes >= _CHECKED_BYTES:
            return super().allocator(shape, dtype, device)  # (checked against available memory)
        return functools.partial(np.empty, shape, dtype)

    def presenter(self, dtype):
        if dtype in WORD_DTYPES:
            return operator.methodcaller("view", host_dtype(dtype))
        return _same

    def bound_launch(self, kernel, n, args, given, flat=False):
        given = given_names(kernel, given)
        split = SPLIT.get(kernel.template)
        if not n or (split is not None and _work(split, n, args, missing=0) >= 2 * MIN_CPU_CHUNK):
            return super().bound_launch(kernel, n, args, given, flat)  # (no work, or split over threads)
        key, values = kernel.bind(args, n)
        loop = self._loops.get((kernel, key))
        if loop is None:
            loop = self._loops[(kernel, key)] = kernel.loop_for("cpu", key, args)[0]
        run = _bound_call(loop, n, kernel.loop_names, values, given)
        return taking_flat(run, args, given) if flat else run

    def _cpu_workers(self) -> int:
        if self._workers is None:
            self._workers = cpu_workers()
            # More threads than cores: a thread that waits awake keeps another from
            # running (libgomp spins less then too): they sleep at once unless told to.
            self._spin_us = spin_microseconds(default=0 if self._workers > usable_cores() else SPIN_US_DEFAULT)
        return self._workers

    def _thread_pool(self):
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = CpuThreads(self._cpu_workers() - 1, self._spin_us)
        return self._pool

    def present(self, storage, dtype):
        if dtype in WORD_DTYPES:
            return storage.view(host_dtype(dtype))
        return storage


    def device_of(self, array) -> str:
        return "cpu"

    copyto = staticmethod(np.copyto)  # (NumPy buffers an overlapping source itself)

    def fill(self, storage, word):
        storage.fill(word)  # (one host: no device to make current)

    def setitem(self, storage, key, value):
        storage[key] = value

    def add_into(self, dst, operand, sign):
        (_add if sign > 0 else _subtract)(dst, operand, out=dst)

    def add_same(self, storage, value, dtype, shape, sign):
        # (no overlap check: NumPy's ufuncs buffer an operand that overlaps out=)
        if not isinstance(value, np.ndarray) or value.dtype is not dtype or value.shape != shape or storage is None:
            return False
        (_add if sign > 0 else _subtract)(storage, value, out=storage)
        return True

    def apart_contiguous(self, storage, value):
        if type(value) is not np.ndarray:
            return False
        flags = value.flags
        if not flags.c_contiguous:
            return False
        if flags.owndata:  # (one host; an allocation of its own, the common fresh value: apart)
            return value is not storage
        return not self.shares_memory(storage, value)

    def shares_memory(self, array, other) -> bool:
        if not isinstance(other, np.ndarray):
            return False
        if other.flags.owndata and other is not array:
            return False  # an allocation of its own (the common fresh value): apart
        if not np.may_share_memory(array, other):  # bounds only
            return False
        try:
            return np.shares_memory(array, other, max_work=EXACT_OVERLAP_WORK)
        except np.exceptions.TooHardError:
            return True

    def address(self, array) -> int:
        try:  # (a third of the time of __array_interface__, which builds a dict)
            return _addressof(_c_char.from_buffer(array))
        except (TypeError, ValueError, BufferError):  # read-only, not contiguous, or empty
            return array.__array_interface__["data"][0]

    def addresses(self, arrays) -> list:
        try:  # (without a method call per array: 0.21 µs each, against 0.31)
            return [_addressof(_c_char.from_buffer(array)) for array in arrays]
        except (TypeError, ValueError, BufferError):  # one of them read-only, not contiguous or empty
            return [self.address(array) for array in arrays]

    def write_bytes(self, storage, write):
        write(memoryview(storage.reshape(-1).view(np.uint8)))  # the array's own memory

    def read_bytes(self, storage, readinto):
        readinto(memoryview(storage.reshape(-1).view(np.uint8)))


def _work(split: str, n: int, args: dict, missing: int | None = None) -> int:
    """The work of a launch over ``n`` indices, in elements of a contiguous loop: ``n``;
    for a multi-tensor launch (``n`` chunks) the elements of its chunks; for a region, its
    elements times the inner step of its more strided side, up to a cache line: a row
    with a step of 3 brings 3 elements' worth of lines into the cache per element it
    writes, and its stores do not vectorize (one thread writes ``v[::2, 1::3] = b`` on a
    (512, 512) float32 variable 1.3x slower than the split loop, out of cache). Where an
    argument it reads is missing, ``missing`` if given (the caller's bind then names
    what is missing), else KeyError."""
    if not n:
        return 0
    if split == "rows" and n * _CACHE_LINE < 2 * MIN_CPU_CHUNK:
        return n  # (under the threshold whatever the steps: no need to weigh them)
    try:
        if split == "chunks":
            return int(args["chunk_first"][n - 1] + args["chunk_count"][n - 1])
        if split == "rows":  # (a fill has no source)
            step = _line_step(args["dst_strides"][-1], args["dst"])
            return n * (max(step, _line_step(args["src_strides"][-1], args["src"])) if "src" in args else step)
    except KeyError:
        if missing is None:
            raise
        return missing
    return n


def _line_step(step: int, array) -> int:
    """``|step|`` elements of ``array``, at least 1 and at most a cache line's worth."""
    return max(1, min(abs(int(step)), _CACHE_LINE // array.itemsize))


def _bound_call(loop, n: int, names: tuple, values: tuple, given: tuple):
    """``run(*given values)``: ``loop(0, n, ...)`` with ``values`` in place except the
    arguments named in ``given``, as one generated call (no per-call list building)."""
    keep, make = _call_layout(names, given)
    return make(loop, n, *[v for v, kept in zip(values, keep, strict=True) if kept])  # (not the given samples)


@functools.lru_cache(maxsize=256)
def _call_layout(names: tuple, given: tuple):
    """``(keep, make)`` for a loop of arguments ``names`` called with ``given`` ones:
    whether each argument is fixed, and :func:`_call_maker`'s function (worked out once
    per layout: a prepared write binds one per variable and key)."""
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise TypeError(f"bound_launch: {unknown} are not arguments of the loop (it takes {list(names)}).")
    positions = tuple(given.index(name) if name in given else -1 for name in names)
    return tuple(p < 0 for p in positions), _call_maker(positions, len(given))


@functools.lru_cache(maxsize=256)
def _call_maker(positions: tuple, given: int):
    """``make(loop, n, *fixed) -> run(*given)``, generated once per layout: argument ``i``
    of the loop is the call's given argument ``positions[i]``, or (-1) the next fixed one
    (generating the source per bind took most of a prepared cast's first call)."""
    fixed = [f"c{i}" for i, p in enumerate(positions) if p < 0]
    parameters = [f"g{p}" if p >= 0 else f"c{i}" for i, p in enumerate(positions)]
    signature = ", ".join(f"g{i}" for i in range(given))
    source = (f"def make(loop, n{''.join(', ' + c for c in fixed)}):\n"
              f"    def run({signature}):\n        return loop(0, n, {', '.join(parameters)})\n    return run\n")
    namespace: dict = {}
    exec(source, namespace)  # noqa: S102
    return namespace["make"]


def _same(array):
    return array


def _host_memory() -> tuple:
    """``(total, available)`` bytes of host memory, from the OS (None where unknown)."""
    total = available = None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            pass
    return total, available


def _device_to_host(obj) -> np.ndarray:
    """Copy a GPU array (CuPy, torch.cuda, numba...) to the host."""
    try:
        import cupy
    except ImportError as exc:
        raise TypeError(
            f"Cannot read a device array ({type(obj).__name__}) on the numpy backend without "
            f"CuPy installed: copy it to the host first."
        ) from exc
    device_array = cupy.asarray(obj) if hasattr(obj, "__cuda_array_interface__") else cupy.from_dlpack(obj)
    return cupy.asnumpy(device_array)
