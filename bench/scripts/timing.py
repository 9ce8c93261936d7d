"""Timing helpers shared by the benchmark scripts (run as ``python bench/<script>.py``)."""

from __future__ import annotations

import statistics
import time


def times_of(fn, repeats: int, warmup: int = 0) -> list:
    """Wall seconds of ``repeats`` calls of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def median_time(fn, repeats: int, warmup: int = 2) -> float:
    return statistics.median(times_of(fn, repeats, warmup))
