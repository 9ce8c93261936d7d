"""The CPU loop of ``v[::2, 1::3] = b`` (float32) against NumPy's ``a[::2, 1::3] = b``,
in cache and out of cache.

This times the compiled region loop alone (``copy_region``, one thread, no host code),
called with the arguments the variable's write binds, against NumPy's setitem on an
array of the same shape. "In cache": the same call again and again. "Out of cache":
64 MiB copied between calls (not timed), so both start from memory. Before timing, the
variable's region is checked against NumPy's. Median of 1000 calls in cache, 100 out of
cache, the better of two tries each.

Usage: ``python bench/scripts/cpu_region_loop.py [LABEL]``; prints one line of NumPy's
time over the loop's (above 1: the loop is faster), out of cache then in cache, per shape.
"""

from __future__ import annotations

import functools
import statistics
import sys
import time

import numpy as np

import varstore as vs
from varstore.backends import numpy as numpy_backend

SHAPES = ((512, 512), (1000, 1000), (1024, 1024), (2048, 2048), (4096, 4096), (32, 65536), (8, 262144))
KEY = (slice(None, None, 2), slice(1, None, 3))
_FLUSH = (np.ones(16 << 20, np.float32), np.empty(16 << 20, np.float32))


def _median_us(call, calls: int, out_of_cache: bool) -> float:
    times = []
    for _ in range(calls):
        if out_of_cache:
            np.copyto(_FLUSH[1], _FLUSH[0])
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def _bound_loop(variable, value):
    """``variable[KEY] = value`` once, recording the compiled loop and its arguments."""
    seen = []
    original = numpy_backend.NumpyBackend.launch

    def launch(self, kernel, n, **args):
        original(self, kernel, n, **args)
        key, values = kernel.bind(args, n)
        seen.append((self._loops[(kernel, key)], n, values))

    numpy_backend.NumpyBackend.launch = launch
    try:
        variable[KEY] = value
    finally:
        numpy_backend.NumpyBackend.launch = original
    loop, n, values = seen[-1]
    return lambda: loop(0, n, *values)


def main() -> None:
    parts = []
    for shape in SHAPES:
        variable, array = vs.Variable(np.zeros(shape, np.float32)), np.zeros(shape, np.float32)
        value = np.random.default_rng(0).standard_normal(array[KEY].shape).astype(np.float32)
        loop = _bound_loop(variable, value)
        array[KEY] = value
        if not np.array_equal(variable.numpy(), array):
            raise SystemExit(f"v[::2, 1::3] = b on {shape}: the variable differs from NumPy's result")
        ratios = []
        for out_of_cache in (True, False):
            calls = 100 if out_of_cache else 1000
            ours = min(_median_us(loop, calls, out_of_cache) for _ in range(2))
            setitem = functools.partial(array.__setitem__, KEY, value)
            numpy = min(_median_us(setitem, calls, out_of_cache) for _ in range(2))
            ratios.append(f"{numpy / ours:.2f}")
        parts.append(f"{shape}: {' / '.join(ratios)}")
    print(" ".join(sys.argv[1:]) or "", "; ".join(parts))


if __name__ == "__main__":
    main()
