"""A CPU launch split over two threads against the same launch in one thread.

The numpy backend splits launches of at least 2 x 65,536 elements over its worker
threads; what a split gains is the loop's time saved less the hand-off between the
threads. This times ``backend.launch`` of the float32 -> bfloat16 encode kernel (warm:
input and output stay in the cache) at 2**17 to 2**20 elements, split as the backend
splits it and kept in one thread (the split threshold raised out of reach), after the
bits of the split run are checked against the one-thread run. Median of 400 calls after
20 warm-ups.

Usage: ``python bench/scripts/cpu_split_launch.py [LABEL]``; prints one line.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from varstore import backends
from varstore.backends import numpy as numpy_backend
from varstore.kernels import cast as K


def _median_us(call, calls: int = 400, warmup: int = 20) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    backend = backends.get("numpy")
    threshold = numpy_backend.MIN_CPU_CHUNK
    parts = []
    for n in (1 << 17, 1 << 18, 1 << 19, 1 << 20):
        words = np.random.default_rng(0).standard_normal(n).astype(np.float32).view(np.uint32)
        split, single = np.empty(n, np.uint16), np.empty(n, np.uint16)

        def launch(out, n=n, src=words):
            return lambda: backend.launch(K.encode_f32, n, src=src, dst=out, fmt=K.BFLOAT16)

        numpy_backend.MIN_CPU_CHUNK = threshold
        two = _median_us(launch(split))
        numpy_backend.MIN_CPU_CHUNK = 1 << 62
        one = _median_us(launch(single))
        numpy_backend.MIN_CPU_CHUNK = threshold
        if not np.array_equal(split, single):
            raise SystemExit(f"the split launch of {n} elements wrote other bits than the one-thread launch")
        parts.append(f"2**{n.bit_length() - 1}: split {two:.1f} µs, one thread {one:.1f} µs ({one / two:.2f}x)")
    print(" ".join(sys.argv[1:]) or "", "; ".join(parts))


if __name__ == "__main__":
    main()
