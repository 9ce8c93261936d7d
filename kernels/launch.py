"""Grid geometry for the CUDA grid-stride loops: the one place it is decided."""

from __future__ import annotations

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
