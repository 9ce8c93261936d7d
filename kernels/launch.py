"""Launch geometry, the one place it is decided: CUDA grids for the grid-stride loops,
and CPU chunks for the thread pool that runs the CPU loops (they release the GIL)."""

from __future__ import annotations

import os

THREADS_PER_BLOCK = 256
# Enough resident blocks to fill every SM a few times over; a grid-stride loop covers
# the rest, so large arrays do not need one thread per element.
BLOCKS_PER_SM = 8
# The simulator runs each thread as a Python thread (0.1-0.8 ms each): keep it tiny.
SIMULATOR_GEOMETRY = (4, 32)


def grid_for(n: int, sm_count: int, simulator: bool = False) -> tuple[int, int]:
    """(blocks, threads_per_block) for a grid-stride loop over ``n`` elements."""
    if simulator:
        return SIMULATOR_GEOMETRY
    blocks = (max(int(n), 1) + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    return min(blocks, max(int(sm_count), 1) * BLOCKS_PER_SM), THREADS_PER_BLOCK


# Below this many elements per thread, handing work to another thread costs more than it
# saves (a few microseconds per task against about 0.7 ns per element).
MIN_CPU_CHUNK = 1 << 16


def cpu_workers() -> int:
    """Threads for the CPU loops: ``VARSTORE_NUM_THREADS``, else the usable cores."""
    value = os.environ.get("VARSTORE_NUM_THREADS")
    if value:
        return max(1, int(value))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_chunks(n: int, workers: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)``: one chunk per worker (multiples of
    64 elements), or a single chunk when the work is too small to share."""
    count = min(workers, n // MIN_CPU_CHUNK)
    if count <= 1:
        return [(0, n)]
    step = -(-n // count)
    step = -(-step // 64) * 64
    return [(start, min(start + step, n)) for start in range(0, n, step)]

